"""scripts/convert_ncsn_original_to_diffusers.py against outputs of the authors' own networks (tests/fixtures)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ncsn_diffusers import NCSNPipeline, NCSNRefineNet, NCSNv2Model

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCRIPT = ROOT / "scripts" / "convert_ncsn_original_to_diffusers.py"
sys.path.insert(0, str(SCRIPT.parent))

import convert_ncsn_original_to_diffusers as convert_script  # noqa: E402

# fixture -> (our class, its layout as the authors' runner picks it)
CASES = {
    "ncsn_v1_cifar10": (NCSNRefineNet, (1, 2, 2, 2)),
    "ncsnv2_cifar10": (NCSNv2Model, (1, 2, 2, 2)),
    "ncsnv2_celeba": (NCSNv2Model, (1, 2, 2, 2)),
    "ncsnv2_church": (NCSNv2Model, (1, 2, 2, 4, 4)),
    "ncsnv2_ffhq": (NCSNv2Model, (1, 2, 2, 2, 4, 4)),
}


def assert_close_to_scale(output: torch.Tensor, reference: torch.Tensor, rtol: float = 1e-5):
    """Elementwise agreement to `rtol` of the output's scale.

    Bug caught: a fixed absolute tolerance of 1e-5 failed on CPUs other than the one that made the fixtures, where the
    64 px NCSNv2's outputs reach 215 and float32 rounding alone moves them by 5e-4 (measured against float64).
    """
    torch.testing.assert_close(output, reference, rtol=rtol, atol=rtol * reference.abs().max().item())


def _convert(name: str, dump_path: Path, *extra: str) -> NCSNPipeline:
    folder = FIXTURES / name
    args = ["--checkpoint_path", str(folder / "checkpoint.pth"), "--config_path", str(folder / "config.yml")]
    convert_script.main([*args, "--dump_path", str(dump_path), *extra])
    return NCSNPipeline.from_pretrained(dump_path)


def _official_forward(pipe: NCSNPipeline, forward: dict) -> torch.Tensor:
    # Their label y indexes their ladder; ours is the scheduler's, sigma_i = sigmas[y].
    sigma = pipe.scheduler.sigmas[forward["levels"]]
    with torch.no_grad():
        return pipe.unet(forward["inputs"], sigma).sample


@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_checkpoint_reproduces_the_official_forward_pass(name, tmp_path):
    pipe = _convert(name, tmp_path / name)
    cls, multipliers = CASES[name]
    assert type(pipe.unet) is cls and tuple(pipe.unet.config.channel_multipliers) == multipliers
    forward = load_file(FIXTURES / name / "forward.safetensors")
    if name.startswith("ncsn_v1"):
        assert forward["levels"].tolist() == list(range(pipe.scheduler.config.num_noise_levels))  # every level
    assert_close_to_scale(_official_forward(pipe, forward), forward["outputs"])


def test_no_ema_keeps_the_raw_weights(tmp_path):
    pipe = _convert("ncsnv2_cifar10", tmp_path / "raw", "--no_ema")
    forward = load_file(FIXTURES / "ncsnv2_cifar10" / "forward.safetensors")
    raw = load_file(FIXTURES / "ncsnv2_cifar10" / "forward_raw.safetensors")["outputs"]
    output = _official_forward(pipe, forward)
    assert_close_to_scale(output, raw)
    assert not torch.allclose(output, forward["outputs"], rtol=1e-3, atol=1e-3)


def test_scheduler_carries_the_official_sampling_settings(tmp_path):
    v2 = _convert("ncsnv2_celeba", tmp_path / "v2").scheduler.config
    config = yaml.safe_load((FIXTURES / "ncsnv2_celeba" / "config.yml").read_text())
    model, sampling = config["model"], config["sampling"]
    assert (v2.sigma_max, v2.sigma_min, v2.num_noise_levels) == (
        model["sigma_begin"],
        model["sigma_end"],
        model["num_classes"],
    )
    assert (v2.steps_per_level, v2.epsilon, v2.final_denoise) == (
        sampling["n_steps_each"],
        sampling["step_lr"],
        sampling["denoise"],
    )
    assert v2.langevin_convention == "official" and tuple(v2.data_range) == (0.0, 1.0)
    # v1's sampler settings live in its runner: 100 steps of 2e-5 per level, no denoising.
    v1 = _convert("ncsn_v1_cifar10", tmp_path / "v1").scheduler.config
    assert (v1.sigma_max, v1.sigma_min, v1.num_noise_levels) == (1.0, 0.01, 10)
    assert (v1.steps_per_level, v1.epsilon, v1.final_denoise) == (100, 2e-5, False)


def test_model_card_names_the_source(tmp_path):
    _convert("ncsnv2_cifar10", tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "ermongroup/ncsnv2" in card and "checkpoint.pth" in card and "EMA" in card
    assert "trust_remote_code" not in card  # only NCSNUNet2DModel folders carry their source


def test_converted_pipeline_samples(tmp_path):
    for name in ("ncsn_v1_cifar10", "ncsnv2_cifar10"):
        pipe = _convert(name, tmp_path / name)
        pipe.set_progress_bar_config(disable=True)
        # v1 only knows its own rungs: one step per level of the full ladder.
        images = pipe(batch_size=2, steps_per_level=1, output_type="pt", generator=torch.Generator().manual_seed(0))
        images = images.images
        assert images.shape == (2, 3, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def _edited_checkpoint(tmp_path: Path, edit) -> Path:
    states = torch.load(FIXTURES / "ncsnv2_celeba" / "checkpoint.pth", weights_only=True)
    edit(states[0])
    path = tmp_path / "edited.pth"
    torch.save(states, path)
    return path


def test_unknown_and_missing_keys_are_listed(tmp_path):
    def edit(weights):
        weights["module.extra.weight"] = torch.zeros(1)
        del weights["module.refine2.crp.convs.1.weight"]

    path = _edited_checkpoint(tmp_path, edit)
    with pytest.raises(ValueError) as error:
        convert_script.convert(path, FIXTURES / "ncsnv2_celeba" / "config.yml", tmp_path / "out")
    assert "extra.weight" in str(error.value) and "backbone.up_blocks.1.crp.convs.1.weight" in str(error.value)


def test_wrong_config_fails_with_the_shape_mismatch(tmp_path):
    config = yaml.safe_load((FIXTURES / "ncsnv2_celeba" / "config.yml").read_text())
    config["model"]["ngf"] = 8
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="ngf"):
        convert_script.convert(FIXTURES / "ncsnv2_celeba" / "checkpoint.pth", path, tmp_path / "out")


@pytest.mark.slow
def test_command_line_end_to_end(tmp_path):
    folder = FIXTURES / "ncsn_v1_cifar10"
    command = [sys.executable, str(SCRIPT), "--checkpoint_path", str(folder / "checkpoint.pth")]
    command += ["--config_path", str(folder / "config.yml"), "--dump_path", str(tmp_path / "out"), "--version", "v1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    pipe = NCSNPipeline.from_pretrained(tmp_path / "out")
    forward = load_file(folder / "forward.safetensors")
    assert_close_to_scale(_official_forward(pipe, forward), forward["outputs"])
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dump_path_is_never_mixed_or_deleted_from_without_overwrite(tmp_path):
    """Catches: a --dump_path holding the user's README.md and model_index.json (or a trained pipeline) silently
    replaced or mixed with the converted model; and --overwrite deleting a file the converter did not write."""
    mine = tmp_path / "mine"
    (mine / "unet").mkdir(parents=True)
    (mine / "README.md").write_text("my notes")
    (mine / "model_index.json").write_text('{"_class_name": "MyPipeline"}')
    (mine / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"my half-precision weights")
    before = _tree(mine)
    with pytest.raises(SystemExit, match="--dump_path .*mine is not empty .*README.md.*--overwrite"):
        _convert("ncsn_v1_cifar10", mine)
    assert _tree(mine) == before
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit, match="a-file is a file"):
        _convert("ncsn_v1_cifar10", tmp_path / "a-file")

    pipe = _convert("ncsn_v1_cifar10", mine, "--overwrite")  # replaces its namesakes, keeps the rest
    forward = load_file(FIXTURES / "ncsn_v1_cifar10" / "forward.safetensors")
    assert_close_to_scale(_official_forward(pipe, forward), forward["outputs"])
    assert (mine / "unet" / "diffusion_pytorch_model.fp16.safetensors").read_bytes() == b"my half-precision weights"
    assert "ermongroup/ncsn" in (mine / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if ".converting-" in p.name]  # the staging folder is gone


def test_overwrite_never_writes_through_a_symlink_nor_into_a_live_runs_folder(tmp_path):
    """Catches: --overwrite writing the converted U-Net through a `unet` symlink into the user's folder elsewhere, and
    writing into a folder a live training run holds (its lock was listed among the files "kept")."""
    from ncsn_diffusers.training.run_dir import OutputDirLock

    elsewhere, dump = tmp_path / "elsewhere", tmp_path / "dump"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("my config")
    dump.mkdir()
    (dump / "unet").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SystemExit, match=r"symbolic links where this run writes \(unet -> .*elsewhere\)"):
        _convert("ncsn_v1_cifar10", dump, "--overwrite")
    assert _tree(elsewhere) == {"config.json": b"my config"} and sorted(p.name for p in dump.iterdir()) == ["unet"]

    run = tmp_path / "run"
    run.mkdir()
    (run / "training_args.json").write_text("{}")
    with OutputDirLock(run):
        with pytest.raises(SystemExit, match="--dump_path: .*run is in use by another training run"):
            _convert("ncsn_v1_cifar10", run, "--overwrite")
        assert sorted(p.name for p in run.iterdir()) == [".train_ncsn.lock", "training_args.json"]


def test_unreadable_checkpoints_name_the_file_and_never_fall_back_to_unpickling(tmp_path):
    """Catches: raw torch errors, and torch's advice to pass weights_only=False repeated without the reason not to."""
    import argparse

    config = FIXTURES / "ncsn_v1_cifar10" / "config.yml"
    states = torch.load(FIXTURES / "ncsn_v1_cifar10" / "checkpoint.pth", weights_only=True)
    pickled = tmp_path / "with-objects.pth"
    torch.save([*states, argparse.Namespace(lr=1e-3)], pickled)  # an object weights_only refuses
    with pytest.raises(ValueError) as error:
        convert_script.convert(pickled, config, tmp_path / "out")
    message = str(error.value)
    assert "with-objects.pth" in message and "argparse.Namespace" in message
    assert "does not retry with weights_only=False" in message and "run" in message and "clean.pth" in message
    assert not (tmp_path / "out").exists()

    for name, data in (("truncated.pth", pickled.read_bytes()[:200]), ("noise.pth", os.urandom(64))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"--checkpoint_path .*{name} could not be read by torch.load"):
            convert_script.convert(tmp_path / name, config, tmp_path / "out")
    with pytest.raises(ValueError, match="missing.pth does not exist"):
        convert_script.convert(tmp_path / "missing.pth", config, tmp_path / "out")
    (tmp_path / "bad.yml").write_text("data: [unclosed")
    with pytest.raises(ValueError, match="--config_path .*bad.yml could not be read as YAML"):
        convert_script.convert(pickled, tmp_path / "bad.yml", tmp_path / "out")
