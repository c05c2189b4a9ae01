"""End to end: examples/distill_ncsn.py on the digits with a tiny teacher and a tiny budget, then the output loaded and
sampled by diffusers alone (ncsn_diffusers made unimportable)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel, PredictorCorrectorScheduler

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "distill_ncsn.py"

LOAD_WITH_DIFFUSERS_ALONE = """
import sys
sys.modules["ncsn_diffusers"] = None  # any import of the package now fails
import torch
from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline, DiffusionPipeline, UNet2DModel
pipe = DiffusionPipeline.from_pretrained(sys.argv[1])
assert type(pipe) is ConsistencyModelPipeline and type(pipe.unet) is UNet2DModel
assert type(pipe.scheduler) is CMStochasticIterativeScheduler
for steps in (1, 2):
    images = pipe(batch_size=2, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 16, 16, 1) and bool((images.images >= 0).all())
print(pipe.scheduler.config.num_train_timesteps, pipe.scheduler.config.sigma_max)
"""


def load_script():
    spec = importlib.util.spec_from_file_location("distill_ncsn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny_teacher(tmp_path):
    pipe = NCSNPipeline(
        unet=NCSNUNet2DModel.from_preset("tiny"),
        scheduler=PredictorCorrectorScheduler(sigma_max=6.0, sigma_min=0.02, data_range=(-1.0, 1.0)),
    )
    pipe.save_pretrained(tmp_path / "teacher")
    return str(tmp_path / "teacher")


def test_distilled_folder_loads_and_samples_with_diffusers_alone(tiny_teacher, tmp_path):
    # Catches an export that needs ncsn_diffusers (a custom class in model_index.json), a grid not taken from the
    # teacher, or a folder that is left half-written.
    output = tmp_path / "student"
    load_script().main(
        ["--teacher_model", tiny_teacher, "--output_dir", str(output), "--max_train_steps", "2",
         "--train_batch_size", "4", "--num_levels", "6"]
    )  # fmt: skip
    assert not (tmp_path / "student.partial").exists()
    args = json.loads((output / "distillation_args.json").read_text())
    assert args["num_levels"] == 6 and args["cpu_minutes"] >= 0
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_DIFFUSERS_ALONE, str(output)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["6", "6.0"]


def test_refuses_a_non_empty_output_dir(tiny_teacher, tmp_path):
    # Catches a run that would overwrite work not its own.
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        load_script().parse_args(["--teacher_model", tiny_teacher, "--output_dir", str(tmp_path / "taken")])
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
