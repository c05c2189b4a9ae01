"""examples/train_noise_classifier.py end to end with a tiny budget: checkpoints, a resumed run equal to an
uninterrupted one, and the saved pipeline loading with its classifier and sampling guided digits."""

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel, NoiseConditionalClassifier, PredictorCorrectorScheduler

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "train_noise_classifier", REPO / "examples" / "train_noise_classifier.py"
)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

ARGV = ["--resolution", "8", "--train_batch_size", "8", "--checkpointing_steps", "2"]


def score_pipeline(path: Path) -> Path:
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    scheduler = PredictorCorrectorScheduler(sigma_max=8.0, sigma_min=0.02, num_noise_levels=3, data_range=(-1.0, 1.0))
    NCSNPipeline(unet, scheduler).save_pretrained(path)
    return path


def weights(output_dir: Path) -> dict:
    return load_file(output_dir / "classifier" / "diffusion_pytorch_model.safetensors")


def test_trains_checkpoints_and_saves_the_pipeline_with_its_classifier(tmp_path):
    score = score_pipeline(tmp_path / "score")
    out = tmp_path / "run"
    example.main([*ARGV, "--output_dir", str(out), "--pipeline", str(score), "--max_train_steps", "4"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not list(out.glob("*.tmp"))  # every write was renamed into place
    state = json.loads((out / "checkpoint-4" / "training_state.json").read_text())
    assert state["step"] == 4 and not list(out.rglob("*.pkl")) and not list(out.rglob("*.bin"))
    assert NoiseConditionalClassifier.from_pretrained(out / "classifier").config.num_classes == 10

    pipe = NCSNPipeline.from_pretrained(out / "pipeline")
    assert isinstance(pipe.classifier, NoiseConditionalClassifier)
    for name, value in pipe.classifier.state_dict().items():
        assert torch.equal(value, weights(out)[name])
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, class_labels=[1, 7], guidance_scale=2.0, output_type="pt").images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_resumed_run_equals_the_uninterrupted_run(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    example.main([*ARGV, "--output_dir", str(whole), "--max_train_steps", "4"])
    example.main([*ARGV, "--output_dir", str(resumed), "--max_train_steps", "2"])
    example.main([*ARGV, "--output_dir", str(resumed), "--max_train_steps", "4", "--resume_from_checkpoint", "latest"])
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
