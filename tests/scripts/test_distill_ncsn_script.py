"""examples/distill_ncsn.py is `train_ncsn.py --objective consistency_distillation` under its older flag names; the
command itself is tested end to end in tests/training/test_distillation_objective.py."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel, PredictorCorrectorScheduler

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "distill_ncsn.py"


def load_script():
    spec = importlib.util.spec_from_file_location("distill_ncsn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny_teacher(tmp_path):
    torch.manual_seed(0)
    pipe = NCSNPipeline(
        unet=NCSNUNet2DModel.from_preset("tiny", sample_size=8),
        scheduler=PredictorCorrectorScheduler(sigma_max=6.0, sigma_min=0.02, data_range=(-1.0, 1.0)),
    )
    pipe.save_pretrained(tmp_path / "teacher")
    return str(tmp_path / "teacher")


def test_old_flag_names_reach_the_training_command(tiny_teacher, tmp_path):
    # Catches a wrapper that drops or misnames a flag (the run would silently distil with the defaults).
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    output = tmp_path / "student"
    load_script().main(
        ["--teacher_model", tiny_teacher, "--output_dir", str(output), "--max_train_steps", "2",
         "--train_batch_size", "4", "--num_levels", "5", "--ema_rate=0.9", "--init", "random", "--report_to", "none",
         "--num_sample_images", "2", "--quality_samples", "0"]
    )  # fmt: skip
    record = json.loads((output / "distillation.json").read_text())
    assert (record["num_scales"], record["target_ema_rate"], record["student_init"]) == (5, 0.9, "random")
    assert json.loads((output / "model_index.json").read_text())["_class_name"] == "ConsistencyModelPipeline"


def test_refuses_an_output_dir_holding_files_not_its_own(tiny_teacher, tmp_path):
    # Catches a run that would overwrite work not its own.
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files this script did not write"):
        load_script().main(["--teacher_model", tiny_teacher, "--output_dir", str(tmp_path / "taken"),
                            "--report_to", "none"])  # fmt: skip
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
