"""`train_ncsn.py --objective consistency_distillation`: the real command end to end (the student loaded by diffusers
alone), kill -9 and resume bit-exactly (student, its EMA, the target network, optimizer, lr schedule), the teachers and
flags refused before anything is built, and a [0, 1] NCSNv2 teacher distilled into a fresh student."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_ncsn import (
    launch,
    log_records,
    max_difference,
    run_main,
    sigkill_after_checkpoint,
    subprocess_env,
    unet_weights,
)
from tiny_models import tiny_ddpm_unet

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel, PredictorCorrectorScheduler
from ncsn_diffusers.hub import render_distillation_card
from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training.distillation_record import two_call_timesteps
from ncsn_diffusers.training.recipes import build_paper_network

# A few seconds per run: a tiny 8x8 teacher, N = 6, batch 8, no quality measurement.
DISTIL = [
    "--objective", "consistency_distillation", "--num_scales", "6", "--train_batch_size", "8", "--report_to", "none",
    "--logging_steps", "2", "--num_sample_images", "4", "--quality_samples", "0",
]  # fmt: skip

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
    assert images.images.shape == (2, 8, 8, 1) and bool((images.images >= 0).all())
c = pipe.scheduler.config
print(c.num_train_timesteps, c.sigma_min, c.sigma_max, c.sigma_data)
"""


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A saved 8x8 score pipeline in [-1, 1], its saved sampler from sigma_max = 6 to sigma_min = 0.02."""
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    torch.manual_seed(0)
    NCSNPipeline(
        unet=NCSNUNet2DModel.from_preset("tiny", sample_size=8),
        scheduler=PredictorCorrectorScheduler(sigma_max=6.0, sigma_min=0.02, data_range=(-1.0, 1.0)),
    ).save_pretrained(folder)
    return folder


def test_the_command_end_to_end_gives_a_pipeline_diffusers_alone_loads(tiny_teacher, tmp_path):
    # Catches an export that needs ncsn_diffusers, a grid not taken from the teacher, a student not initialised from
    # it, and a card or record that does not name the teacher and N.
    out = tmp_path / "student"
    launch(*DISTIL, "--teacher_model", tiny_teacher, "--output_dir", out, "--max_train_steps", "3")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_DIFFUSERS_ALONE, str(out)], capture_output=True, text=True, cwd=tmp_path,
        env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-4:] == ["6", "0.02", "6.0", "0.5"]
    record = json.loads((out / "distillation.json").read_text())
    assert record["teacher_model"] == tiny_teacher.name and record["num_scales"] == 6
    assert record["student_init"] == "teacher" and record["max_train_steps"] == 3 and record["cpu_minutes"] > 0
    card = (out / "README.md").read_text()
    assert f"`{tiny_teacher.name}`" in card and str(tiny_teacher) not in card  # a local teacher by name only
    assert "| 6 |" in card and "ConsistencyModelPipeline" in card
    assert (out / "samples" / "step_000003.png").is_file()
    assert [r["step"] for r in log_records(out)] == [2, 3] and "loss_l2" in log_records(out)[0]
    # Initialised from the teacher, then 3 small steps: a copied weight is still close to the teacher's.
    teacher = load_file(tiny_teacher / "unet" / "diffusion_pytorch_model.safetensors")
    student = unet_weights(out)
    name = "conv_in.weight"
    assert (student[name] - teacher[name]).abs().max() < 0.05 * teacher[name].abs().max()


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_teacher, tmp_path):
    """A real process is killed with SIGKILL mid-run; `--resume_from_checkpoint latest` ends bit-identical to an
    uninterrupted run: the saved student (its EMA), the last checkpoint's raw student and target network theta^-."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    common = [*DISTIL, "--teacher_model", tiny_teacher, "--max_train_steps", "12", "--checkpointing_steps", "1",
              "--checkpoints_total_limit", "2"]  # fmt: skip
    stopped_at = sigkill_after_checkpoint([*common, "--output_dir", killed], killed, tmp_path / "killed.log", 3)
    assert 3 <= stopped_at < 12

    run_main(*common, "--output_dir", killed, "--resume_from_checkpoint", "latest")
    run_main(*common, "--output_dir", reference)

    assert max_difference(unet_weights(killed), unet_weights(reference)) == 0  # the saved EMA weights
    for name in ("model.safetensors", "objective.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = (load_file(folder / "checkpoint-12" / name) for folder in (killed, reference))
        assert max_difference(a, b) == 0, name
    target = load_file(reference / "checkpoint-12" / "objective.safetensors")
    raw = load_file(reference / "checkpoint-12" / "model.safetensors")
    assert any(k.startswith("state.target.") for k in target)
    # theta^- moved towards theta but is not theta (mu = 0.95): the target is really an EMA, not a copy.
    key = "state.target.conv_in.weight"
    assert 0 < (target[key] - raw["conv_in.weight"]).abs().max() < (raw["conv_in.weight"]).abs().max()
    assert [r["loss_consistency_distillation"] for r in log_records(killed)] == [
        r["loss_consistency_distillation"] for r in log_records(reference)
    ]


def save_refinenet_teacher(folder: Path):
    unet = build_paper_network("ncsn_v1", 8, 1, 8, (0.0, 1.0), (1.0, 0.01, 4))
    scheduler = AnnealedLangevinScheduler(sigma_max=1.0, sigma_min=0.01, num_noise_levels=4)
    NCSNPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)


def save_epsilon_teacher(folder: Path):
    scheduler = AnnealedLangevinScheduler(noise_space="vp", prediction_type="epsilon", data_range=(-1.0, 1.0))
    NCSNPipeline(unet=tiny_ddpm_unet(), scheduler=scheduler).save_pretrained(folder)


@pytest.mark.parametrize(
    ("teacher", "settings", "message"),
    [
        (save_refinenet_teacher, {}, "RefineNet, which is conditioned on the index"),
        (save_epsilon_teacher, {}, "is a DDPM epsilon model"),
        (None, {}, "needs --teacher_model DIR"),
        ("missing", {}, "--teacher_model .*neither a pipeline folder nor a Hub repo id"),
        # Bug caught: a mistyped Hub id gave huggingface_hub's raw traceback; a teacher folder without its U-Net
        # config or weights a raw FileNotFoundError (or a failure after the student was built)
        ("me/ncsn-digitz", {}, "--teacher_model me/ncsn-digitz: no such folder, and the Hub has no such repo"),
        ("unet/config.json", {}, "--teacher_model .* lacks unet/config.json"),
        ("unet/diffusion_pytorch_model.safetensors", {}, "--teacher_model .* has no weights in unet/"),
        ("tiny", {"num_scales": 1}, "--num_scales .* at least 2"),
        # Bug caught: --model_preset was silently ignored when the student copies the teacher
        ("tiny", {"model_preset": "tiny"}, "--model_preset tiny would be ignored: --student_init teacher copies"),
        ("tiny", {"target_ema_rate": 1.0}, r"--target_ema_rate .* \[0, 1\)"),
        ("tiny", {"distance": "lpips"}, "--distance must be one of l2, pseudo_huber"),
        ("tiny", {"resolution": 32}, "--resolution 32 differs from the teacher's 8"),
        ("tiny", {"save_images_steps": 5}, "--save_images_steps does not apply"),
        ("tiny", {"objective": "dsm"}, "--teacher_model only apply to --objective consistency_distillation"),
    ],
)
def test_refused_teachers_and_flags_name_the_fix_before_anything_is_built(
    teacher, settings, message, tiny_teacher, tmp_path
):
    # Catches a teacher whose ODE the student cannot learn (discrete levels, VP epsilon) that would train to the end.
    folder = tmp_path / "teacher"
    if callable(teacher):
        teacher(folder)
    elif teacher == "tiny":
        folder = tiny_teacher
    elif teacher == "missing":
        folder = tmp_path / "no" / "such" / "teacher"
    elif teacher is not None and teacher.startswith("unet/"):  # a copy of the tiny teacher without that file
        shutil.copytree(tiny_teacher, folder)
        (folder / teacher).unlink()
    elif teacher == "me/ncsn-digitz":
        folder = teacher
    config = {"objective": "consistency_distillation", "output_dir": str(tmp_path / "out"), **settings}
    config["teacher_model"] = None if teacher is None else str(folder)
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**config).resolve()
    assert not (tmp_path / "out").exists()


def test_a_unit_range_ncsnv2_teacher_is_converted_and_distilled_into_a_fresh_student(tmp_path):
    # Catches a [0, 1] teacher used at the student's [-1, 1] scale (its sigmas must double), and a student that
    # claims to copy an architecture it does not share.
    teacher = tmp_path / "ncsnv2"
    unet = build_paper_network("ncsnv2", 8, 1, 8, (0.0, 1.0), (3.0, 0.01, 4))
    scheduler = AnnealedLangevinScheduler(sigma_max=3.0, sigma_min=0.01, num_noise_levels=4, data_range=(0.0, 1.0))
    NCSNPipeline(unet=unet, scheduler=scheduler).save_pretrained(teacher)
    base = {"objective": "consistency_distillation", "teacher_model": str(teacher), "output_dir": str(tmp_path / "o")}
    with pytest.raises(ValueError, match="--student_init teacher: the teacher's NCSNv2Model has no UNet2DModel"):
        TrainingConfig(**base, student_init="teacher").resolve()
    out = tmp_path / "student"
    run_main(*DISTIL, "--teacher_model", teacher, "--output_dir", out, "--max_train_steps", "2", "--model_preset",
             "tiny")  # fmt: skip
    record = json.loads((out / "distillation.json").read_text())
    assert record["student_init"] == "random"
    assert (record["sigma_min"], record["sigma_max"]) == pytest.approx((0.02, 6.0))  # doubled into [-1, 1]


def test_the_card_names_the_teacher_n_the_calls_and_the_measured_quality(tmp_path):
    # Catches a card that loses a setting or a measured row, or prints 2-call timesteps other than those measured.
    row = {"frechet_distance": 11.6, "rough_fraction": 0.019, "class_share_min": 0.058, "class_share_max": 0.128,
           "num_samples": 500}  # fmt: skip
    record = {
        "teacher_model": "me/ncsn-digits", "num_scales": 18, "rho": 7.0, "sigma_min": 0.02, "sigma_max": 8.543,
        "sigma_data": 0.5, "distance": "l2", "target_ema_rate": 0.95, "student_init": "teacher",
        "max_train_steps": 2000, "train_batch_size": 32, "learning_rate": 1e-3, "use_ema": True, "cpu_minutes": 7.9,
        "device": "cpu", "two_call_timesteps": two_call_timesteps(18), "quality": {"1 call": row},
    }  # fmt: skip
    card = render_distillation_card(record, "me/ncsn-digits-cd", tmp_path / "samples" / "step_002000.png")
    assert "`me/ncsn-digits`" in card and "| N (Karras levels, rho = 7.0) | 18 |" in card
    assert 'from_pretrained("me/ncsn-digits-cd")' in card and "timesteps=[2, 0]" in card
    assert "| 1 call | 11.60 | 1.9% | 5.8-12.8% |" in card and "500 samples each" in card
    assert "| CPU-minutes (whole run) | 7.9 on cpu |" in card
    assert two_call_timesteps(40) == [5, 0] and two_call_timesteps(2) == [1, 0]


def test_resuming_with_another_grid_or_target_rate_is_refused(tiny_teacher, tmp_path):
    # Catches a resume that would silently continue theta^- under another mu or grid than it was trained with.
    out = tmp_path / "run"
    common = [*DISTIL, "--teacher_model", tiny_teacher, "--output_dir", out, "--checkpointing_steps", "1"]
    run_main(*common, "--max_train_steps", "1")
    resume = [*common, "--max_train_steps", "2", "--resume_from_checkpoint", "latest"]
    for flags, saved in (
        (["--target_ema_rate", "0.9"], "--target_ema_rate 0.95"),
        (["--num_scales", "7"], "--num_scales 6"),
    ):
        with pytest.raises(ValueError, match=f"was trained with {saved}, this run has {' '.join(flags)}"):
            run_main(*resume, *flags)  # the later flag wins
    run_main(*resume)  # the same settings resume
    assert json.loads((out / "distillation.json").read_text())["max_train_steps"] == 2


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_an_output_dir_at_or_around_the_teacher_is_refused_and_the_teacher_kept(where, tmp_path):
    """Bug caught: --output_dir equal to --teacher_model (with --overwrite_output_dir) saved the student over the
    teacher; nested folders mixed them."""
    teacher = tmp_path / "outer" / "teacher"
    NCSNPipeline(
        unet=NCSNUNet2DModel.from_preset("tiny", sample_size=8),
        scheduler=PredictorCorrectorScheduler(sigma_max=6.0, sigma_min=0.02, data_range=(-1.0, 1.0)),
    ).save_pretrained(teacher)
    before = {p: p.read_bytes() for p in teacher.rglob("*") if p.is_file()}
    output_dir = {"same": teacher / ".." / "teacher", "inside": teacher / "student", "around": tmp_path / "outer"}
    with pytest.raises(ValueError, match="the teacher's folder"):
        TrainingConfig(
            objective="consistency_distillation",
            teacher_model=str(teacher),
            output_dir=str(output_dir[where]),
            overwrite_output_dir=True,
        ).resolve()
    assert {p: p.read_bytes() for p in teacher.rglob("*") if p.is_file()} == before


def test_the_card_and_record_never_name_a_local_path(tiny_teacher, tmp_path):
    """Bug caught: the distilled model's card named the teacher's absolute path (and the output folder's) though it
    is uploaded; a local folder is named by its name only."""
    out = tmp_path / "student"
    run_main(*DISTIL, "--teacher_model", tiny_teacher, "--output_dir", out, "--max_train_steps", "1")
    card = (out / "README.md").read_text()
    for text in (card, (out / "distillation.json").read_text()):
        assert str(tiny_teacher.parent) not in text and str(tmp_path) not in text
    assert f"distilled from `{tiny_teacher.name}`" in card and 'from_pretrained("student")' in card


def test_resuming_after_the_teacher_was_retrained_in_place_is_refused(tiny_teacher, tmp_path):
    """Bug caught: a teacher folder overwritten by another training run was accepted on resume, and the student went
    on learning another ODE than its checkpoint had."""
    teacher, out = tmp_path / "teacher", tmp_path / "run"
    shutil.copytree(tiny_teacher, teacher)
    common = [*DISTIL, "--teacher_model", teacher, "--output_dir", out, "--checkpointing_steps", "1"]
    run_main(*common, "--max_train_steps", "1")
    retrained = NCSNPipeline.from_pretrained(teacher)
    with torch.no_grad():
        next(retrained.unet.parameters()).add_(0.01)
    retrained.save_pretrained(teacher)
    with pytest.raises(ValueError, match="--teacher_model .* changed since this checkpoint was saved"):
        run_main(*common, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
