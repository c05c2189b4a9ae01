"""`train_ncsn.py --objective noise_classifier` end to end: the saved classifier guides a score pipeline that saves
and loads with it, a resumed run is bit-identical, labels come from the digits, a label column or class folders,
and flags it would ignore are refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import train_ncsn
from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel, NoiseConditionalClassifier, PredictorCorrectorScheduler
from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.training.config import public_args
from ncsn_diffusers.training.data import load_training_images
from ncsn_diffusers.training.labels import load_training_labels

TINY = ["--objective", "noise_classifier", "--resolution", "8", "--train_batch_size", "8", "--report_to", "none"]
TINY += ["--logging_steps", "1", "--lr_warmup_steps", "0"]
WEIGHTS = "diffusion_pytorch_model.safetensors"


def run_main(*argv):
    """train_ncsn.main in this process, with accelerate's process-wide state reset as a fresh process has it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train_ncsn.main([str(a) for a in argv])


def parse(*argv):
    return train_ncsn.parse_args([str(a) for a in argv])


def score_pipeline(path: Path) -> Path:
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    scheduler = PredictorCorrectorScheduler(sigma_max=8.0, sigma_min=0.02, num_noise_levels=3, data_range=(-1.0, 1.0))
    NCSNPipeline(unet, scheduler).save_pretrained(path)
    return path


def log_records(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "logs" / "train_log.jsonl").read_text().splitlines()]


def test_the_command_saves_a_classifier_that_guides_and_saves_with_a_pipeline(tmp_path):
    out, score = tmp_path / "classifier", score_pipeline(tmp_path / "score")
    record = {"objective": "dsm", "noise_ladder": "explicit", "sigma_max": 8.0, "sigma_min": 0.02, "resolution": 8}
    (score / "training_args.json").write_text(json.dumps(record))  # as train_ncsn.py leaves it
    run_main(
        *TINY, "--max_train_steps", "3", "--checkpointing_steps", "2", "--score_model", score, "--output_dir", out
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "checkpoint-2", WEIGHTS, "config.json", "logs", "training_args.json"]
    )  # no pipeline, no sample grid
    records = log_records(out)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["loss_noise_classifier"] > 0 and 0 <= r["error_rate"] <= 1 for r in records)
    card = (out / "README.md").read_text()
    assert "noise_classifier" in card and "score model `score`" in card and str(tmp_path) not in card
    assert json.loads((out / "training_args.json").read_text())["sigma_max"] == 8.0  # the score model's ladder

    classifier = NoiseConditionalClassifier.from_pretrained(out)
    assert (classifier.config.num_classes, classifier.config.class_names) == (10, [str(k) for k in range(10)])
    pipe = NCSNPipeline.from_pretrained(score, classifier=classifier)
    pipe.save_pretrained(tmp_path / "guided")
    loaded = NCSNPipeline.from_pretrained(tmp_path / "guided")
    assert isinstance(loaded.classifier, NoiseConditionalClassifier)
    saved = load_file(out / WEIGHTS)
    assert saved.keys() == loaded.classifier.state_dict().keys()
    assert all(torch.equal(value, saved[name]) for name, value in loaded.classifier.state_dict().items())

    loaded.set_progress_bar_config(disable=True)

    def run(w):
        generator = torch.manual_seed(0)
        return loaded(
            batch_size=2, class_labels=[1, 7], guidance_scale=w, generator=generator, output_type="pt"
        ).images

    unguided = loaded(batch_size=2, generator=torch.manual_seed(0), output_type="pt").images
    guided = run(2.0)
    assert guided.shape == (2, 1, 8, 8) and torch.isfinite(guided).all()
    assert torch.equal(run(0.0), unguided) and not torch.equal(guided, unguided)  # the classifier's gradient acts


def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """The run is resumed from its own checkpoint-2, as after a kill at step 3, and retakes steps 3 and 4 bit for bit:
    weights, Adam's moments, the cosine schedule, the EMA and the (seed, step) draws of images, labels and noise."""
    out = tmp_path / "run"
    common = [*TINY, "--max_train_steps", "4", "--checkpointing_steps", "2", "--output_dir", out]
    run_main(*common)
    names = (WEIGHTS, "checkpoint-4/model.safetensors", "checkpoint-4/ema.safetensors")
    uninterrupted, records = {name: load_file(out / name) for name in names}, log_records(out)
    run_main(*common, "--resume_from_checkpoint", "checkpoint-2")
    for name, a in uninterrupted.items():
        b = load_file(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    def same(rs):
        return [(r["step"], r["loss_noise_classifier"], r["error_rate"], r["lr"]) for r in rs]

    assert same(log_records(out)) == same(records) and len(records) == 4


def test_a_saved_classifier_in_output_dir_is_not_overwritten(tmp_path):
    out = tmp_path / "classifier"
    run_main(*TINY, "--max_train_steps", "1", "--output_dir", out)
    before = (out / WEIGHTS).read_bytes()
    with pytest.raises(ValueError, match=r"holds a saved pipeline \(.*config.json.*--overwrite_output_dir"):
        run_main(*TINY, "--max_train_steps", "1", "--output_dir", out)
    assert (out / WEIGHTS).read_bytes() == before


def test_digit_labels_align_with_the_training_images():
    args = train_ncsn.parse_args(TINY)
    labels, names = load_training_labels(args)
    images, digits = load_digits_images(resolution=8, split="train")
    assert torch.equal(load_training_images(args), images) and torch.equal(labels, digits) and len(names) == 10


def write_class_folders(root: Path, classes=("circle", "blank"), per_class=4) -> Path:
    """Class k's images are the constant grey 200 k (k = 0, 1, ...), so an image's value gives its class back."""
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((10, 10), 200 * k, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_labels_are_the_class_folder_names(tmp_path):
    data = write_class_folders(tmp_path / "data")
    args = parse(*TINY, "--train_data_dir", data, "--channels", "1", "--output_dir", tmp_path / "o")
    labels, names = load_training_labels(args)
    assert names == ["blank", "circle"]  # sorted by name: blank = 0
    images = load_training_images(args)
    assert torch.equal(labels, (images.float().mean(dim=(1, 2, 3)) < 100).long())  # circle (grey 0) is class 1

    run_main(
        *TINY, "--train_data_dir", data, "--channels", "1", "--max_train_steps", "1", "--output_dir", tmp_path / "o"
    )
    assert NoiseConditionalClassifier.from_pretrained(tmp_path / "o").config.class_names == ["blank", "circle"]

    (data / "circle" / "torn.png").write_bytes(b"not a png")  # skipped by the decoder: the labels would shift
    with pytest.raises(ValueError, match="9 labels: --objective noise_classifier needs every image readable"):
        run_main(
            *TINY,
            "--train_data_dir",
            data,
            "--channels",
            "1",
            "--max_train_steps",
            "1",
            "--output_dir",
            tmp_path / "p",
        )
    (data / "circle" / "torn.png").unlink()
    (data / "loose.png").write_bytes((data / "blank" / "0.png").read_bytes())
    with pytest.raises(ValueError, match=r"images outside a class folder \(loose.png\).*DIR/<class>/<image>"):
        load_training_labels(args)


def test_dataset_labels_come_from_the_label_column_or_name_the_columns(tmp_path):
    import datasets

    pixels = [Image.fromarray(np.full((6, 6), 60 * k, np.uint8)) for k in range(4)]
    table = datasets.Dataset.from_dict({"img": pixels, "digit": [2, 0, 1, 2]}).cast_column("img", datasets.Image())
    table.to_parquet(str(tmp_path / "train.parquet"))
    common = [*TINY, "--dataset_name", tmp_path, "--channels", "1", "--output_dir", tmp_path / "o"]
    labels, names = load_training_labels(parse(*common, "--label_column", "digit"))
    assert labels.tolist() == [2, 0, 1, 2] and names == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"has no column 'label' \(columns: \['img', 'digit'\]\).*--label_column"):
        load_training_labels(parse(*common))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sampler", "stochastic_heun"], "--sampler would be ignored: --objective noise_classifier"),
        (["--model_preset", "tiny", "--num_sample_images", "4"], "--model_preset, --num_sample_images would be"),
        (["--label_column", "digit"], "--label_column names a column of --dataset_name"),
        (["--objective", "dsm", "--label_column", "digit"], "--label_column is only used by --objective noise_cl"),
        (["--objective", "dsm", "--score_model", "x"], "--score_model is only used by --objective noise_classifier"),
        (["--score_model", "/nonexistent"], "--score_model /nonexistent has no training_args.json"),
    ],
)
def test_flags_a_classifier_run_would_ignore_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args([*TINY, *argv])
    assert message in capsys.readouterr().err


def test_score_model_gives_its_ladder_and_sigma_draws_unless_given(tmp_path):
    record = {"objective": "dsm", "noise_ladder": "explicit", "sigma_max": 5.0, "sigma_min": 0.05}
    record |= {"num_noise_levels": 7, "sigma_sampling": "discrete", "resolution": 12, "channels": 1}
    (tmp_path / "training_args.json").write_text(json.dumps(record))
    args = parse(*TINY[:2], "--score_model", tmp_path, "--sigma_min", "0.1")
    got = {k: getattr(args, k) for k in ("noise_ladder", "sigma_max", "sigma_min", "num_noise_levels")}
    assert got == {"noise_ladder": "explicit", "sigma_max": 5.0, "sigma_min": 0.1, "num_noise_levels": 7}
    assert (args.sigma_sampling, args.resolution) == ("discrete", 12)

    default = parse(*TINY[:2])  # without one: the default run's ladder and draws
    assert (default.noise_ladder, default.sigma_sampling) == ("ncsnv2", "log_uniform")
    (tmp_path / "training_args.json").write_text(json.dumps(public_args(parse())))  # the default run's record
    assert parse(*TINY[:2], "--score_model", tmp_path).noise_ladder == "ncsnv2"  # its ladder, computed again
    assert {k: v for k, v in vars(parse(*TINY[:2], "--score_model", tmp_path)).items() if k != "score_model"} == {
        k: v for k, v in vars(default).items() if k != "score_model"
    }

    (tmp_path / "training_args.json").write_text(json.dumps({"objective": "epsilon"}))
    with pytest.raises(ValueError, match="was trained with --objective epsilon: classifier guidance needs a VE"):
        train_ncsn.TrainingConfig(objective="noise_classifier", score_model=str(tmp_path)).resolve()


def test_push_to_hub_uploads_the_classifier_and_its_card_only(tmp_path):
    """A real run (its own process: the client reads HF_ENDPOINT at import) pushes to the loopback Hub."""
    import os
    import subprocess
    import sys

    from hub_stand_in import LocalHub

    out, repo = tmp_path / "out", Path(__file__).resolve().parents[2]
    with LocalHub(tmp_path / "hub") as hub:
        env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token)
        env.update(HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home"))
        argv = [*TINY, "--max_train_steps", "2", "--checkpointing_steps", "1", "--output_dir", out, "--push_to_hub"]
        argv += ["--hub_model_id", "test-user/clf"]
        result = subprocess.run([sys.executable, str(repo / "train_ncsn.py"), *map(str, argv)], env=env, cwd=repo,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-5000:]
        record = hub.store.record("model", "test-user/clf")
    pushed = set(record["commits"][record["head"]]["files"])
    assert pushed == {".gitattributes", "README.md", "config.json", WEIGHTS}  # no checkpoints, logs or arguments
