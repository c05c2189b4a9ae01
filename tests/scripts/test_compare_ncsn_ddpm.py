"""examples/compare_ncsn_ddpm.py end to end at toy size: every row and key of results.json, the call counts, the
"without final denoise" rows being exactly the chain stopped before its denoising call, and resuming without redoing
any training or sampling, but not on models trained with other settings."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("compare_ncsn_ddpm", REPO / "examples" / "compare_ncsn_ddpm.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

N, FEW, SEEDS = 12, 4, (0, 1)
ARGV = [
    "--model_preset", "tiny", "--resolution", "8", "--max_train_steps", "1", "--train_batch_size", "8",
    "--num_samples", "6", "--seeds", *map(str, SEEDS), "--num_inference_steps", str(N), "--few_steps", str(FEW),
]  # fmt: skip
ROW_KEYS = {
    "id", "model", "sampler", "description", "calls", "final_denoise", "annealing", "epsilon", "chain", "per_seed",
    "frechet_distance_pooled", "class_entropy_pooled", "class_counts_pooled",
    *(f"{k}_{s}" for k in (*compare.METRIC_KEYS, "wall_time_s") for s in ("mean", "std")),
}  # fmt: skip


def expected_row_ids():
    ids = ["real_train_digits"]
    for n in (N, FEW):
        ids += [f"ncsn_v1@{n}", f"ncsn_v1+denoise@{n + 1}", f"ncsn_v2@{n}", f"ncsn_v2-denoise@{n - 1}"]
        ids += [f"ncsn_v2_no_anneal@{n}", f"ncsn_v2_no_anneal-denoise@{n - 1}", f"ddpm_als@{n}"]
        ids += [f"ddpm_als+denoise@{n + 1}", f"ddpm@{n}", f"ncsn_v2_no_ema@{n}"]
    ids += [f"ncsn_v2_drop{k}@{FEW}" for k in (3, 5, 8)] + [f"ncsn_v2_drop5@{N}", f"ncsn_v2_eps0.25x@{FEW}"]
    ids += [
        f"ncsn_v2_every3rd@{FEW}",
        f"ncsn_v2_v1ladder@{FEW}",
        f"ncsn_v2_drop5_every2nd@{FEW}",
    ]  # 4x epsilon passes the stability bound at T = 1
    return ids


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("compare")
    results = compare.main(["--output_dir", str(output_dir), *ARGV])
    return output_dir, results


def test_results_have_every_row_and_key(run):
    output_dir, results = run
    on_disk = json.loads((output_dir / "results.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(results["rows"]))
    rows = {row["id"]: row for row in on_disk["rows"]}
    assert sorted(rows) == sorted(expected_row_ids())
    for row_id, row in rows.items():
        assert ROW_KEYS <= set(row), f"{row_id} lacks {ROW_KEYS - set(row)}"
        assert [entry["seed"] for entry in row["per_seed"]] == list(SEEDS)
        fd = [entry["frechet_distance"] for entry in row["per_seed"]]
        assert row["frechet_distance_mean"] == pytest.approx(np.mean(fd))
        assert row["frechet_distance_std"] == pytest.approx(np.std(fd, ddof=1))
        if row_id != "real_train_digits":
            assert row["calls"] == int(re.search(r"@(\d+)$", row_id).group(1))
    assert rows["real_train_digits"]["memorisation_fraction_mean"] == 1.0  # training images copy themselves
    assert rows[f"ddpm@{N}"]["sampler"] == "ddpm_ancestral"
    assert not rows[f"ncsn_v2_no_anneal@{N}"]["annealing"] and rows[f"ncsn_v2@{N}"]["annealing"]
    assert {"ncsn_v1", "ncsn_v2", "ddpm"} == set(on_disk["models"])
    markdown = (output_dir / "results.md").read_text()
    assert all(f"`{row_id}`" in markdown for row_id in rows)
    assert (output_dir / "grids.png").is_file() and (output_dir / "grids" / f"ncsn_v2@{N}.png").is_file()


def test_row_without_denoise_is_the_chain_stopped_before_it(run):
    output_dir, results = run
    from ncsn_diffusers import NCSNPipeline

    with np.load(output_dir / "samples" / f"ncsn_v2@{N}_seed1_n6.npz") as saved:
        langevin, denoised = saved["langevin"], saved["denoised"]
    (row,) = [row for row in results["rows"] if row["id"] == f"ncsn_v2@{N}"]
    pipe = NCSNPipeline.from_pretrained(output_dir / "ncsn_v2")
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=6, epsilon=row["epsilon"], output_type="np")
    alone = pipe(generator=torch.Generator().manual_seed(1), num_inference_steps=N - 1, final_denoise=False, **kwargs)
    np.testing.assert_array_equal(langevin, alone.images)
    again = pipe(generator=torch.Generator().manual_seed(1), num_inference_steps=N, final_denoise=True, **kwargs)
    np.testing.assert_array_equal(denoised, again.images)
    assert not np.array_equal(langevin, denoised)


def test_rerun_resumes_without_training_or_sampling(run, monkeypatch):
    output_dir, results = run
    stamps = {p: p.stat().st_mtime_ns for p in (output_dir / "samples").iterdir()}
    monkeypatch.setattr(compare, "run_chain", lambda *a, **k: pytest.fail("sampled again"))
    monkeypatch.setattr(compare, "train", lambda *a, **k: pytest.fail("trained again"))
    again = compare.main(["--output_dir", str(output_dir), *ARGV])
    assert {p: p.stat().st_mtime_ns for p in (output_dir / "samples").iterdir()} == stamps
    # The same images, scored again (float32 features: equal to rounding).
    fd = [r["frechet_distance_mean"] for r in results["rows"]]
    assert [r["frechet_distance_mean"] for r in again["rows"]] == pytest.approx(fd, rel=1e-6)
    with pytest.raises(ValueError, match="max_train_steps: 1 there, 2 now"):
        compare.main(["--output_dir", str(output_dir), *ARGV, "--max_train_steps", "2"])


def test_overwrite_deletes_only_what_an_earlier_run_wrote(tmp_path, monkeypatch):
    """Bug caught: --overwrite ran `shutil.rmtree(--output_dir)`, deleting a user's files kept there; it must delete
    only the script's own results, grids and samples, and hand the model folders to train_ncsn's own overwrite."""
    own = ["results.json", "results.md", "grids.png", "train_times.json", f"samples/ncsn_v2@{N}_seed0_n6.npz"]
    own += [f"grids/ncsn_v2@{N}.png"]
    theirs = ["important/thesis.txt", "samples/mine.txt", "notes.md"]
    for name in own + theirs:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)

    class Stop(Exception):
        pass

    def stop(args, root):
        raise Stop

    monkeypatch.setattr(compare, "train_models", stop)
    with pytest.raises(Stop):
        compare.main(["--output_dir", str(tmp_path), *ARGV, "--overwrite"])
    assert [name for name in own if (tmp_path / name).exists()] == []
    assert all((tmp_path / name).read_text() == name for name in theirs)
    args = compare.parse_args(["--output_dir", str(tmp_path), *ARGV, "--overwrite"])
    config = compare.training_config("ncsn_v1", args, tmp_path / "ncsn_v1")
    assert config.overwrite_output_dir and config.resume_from_checkpoint is None
