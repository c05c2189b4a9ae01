"""Every ```python block of README.md and docs/*.md runs as printed, in order per page, against tiny stand-in models.

The blocks load the folders the documented commands write (`ncsn-digits`, `ncsn-eps`, `clf`, `ncsn-digits-cd`); a
temporary working directory holds tiny untrained models of the same kinds under those names, so the snippets run in
seconds. A block that cannot run offline says so in its own text ("not run by the docs test: <why>"), and there are
few of them. The commands' output folders are git-ignored, and no page names a folder of the machine it was written
on.

Bug caught: snippets used names no block defines (`corrupted` and `mask` in controllable_generation.md,
`digit_images` in likelihood.md, `scheduler`, `x_k` and `model` in sampling.md's partial chain); the README's guidance
block needed a classifier whose training command was only a comment; docs commands named absolute local folders
(`/work/models/ncsn-digits`); the commands' output folders were not git-ignored.
"""

import re
from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel

from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel, NoiseConditionalClassifier, PredictorCorrectorScheduler
from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training.consistency_distillation import consistency_pipeline, student_config

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = "not run by the docs test:"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
COMMAND_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def tiny_score_unet() -> NCSNUNet2DModel:
    torch.manual_seed(0)
    return NCSNUNet2DModel(  # 1x16x16, as the default run's, with the fewest channels the blocks take
        sample_size=16, in_channels=1, block_out_channels=(4, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4, add_attention=False,
    )  # fmt: skip


def quiet(unet):
    """Scales the output layer down 10^4x: a smooth field of small outputs, which the snippets' RK45 solves (rtol
    1e-5) cross in 50 evaluations, where the untrained network's own takes 330."""
    with torch.no_grad():
        unet.conv_out.weight.mul_(1e-4)
        unet.conv_out.bias.mul_(1e-4)
    return unet


def save_stand_ins(folder: Path):
    """Untrained models of the kinds the documented commands save, under the names the snippets load."""
    unet = quiet(tiny_score_unet())
    # the default run's saved sampler: predictor-corrector, 100 calls from sigma_1 / 2 to sigma_L, data in [-1, 1]
    scheduler = PredictorCorrectorScheduler(
        sigma_max=8.54, sigma_min=0.02, num_noise_levels=50, corrector_steps=1, snr=0.25, data_range=(-1.0, 1.0)
    )
    NCSNPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder / "ncsn-digits")
    epsilon_unet = UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    quiet(epsilon_unet)
    sampler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    NCSNPipeline(unet=epsilon_unet, scheduler=sampler, default_num_inference_steps=20).save_pretrained(
        folder / "ncsn-eps"
    )
    NoiseConditionalClassifier(sample_size=16, block_out_channels=(4, 8), down_block_types=("DownBlock2D",) * 2,
                               norm_num_groups=4).save_pretrained(folder / "clf")  # fmt: skip
    student = UNet2DModel(**student_config(unet))
    consistency_pipeline(student, 0.02, 8.54, 0.5, 18).save_pretrained(folder / "ncsn-digits-cd")


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stand_ins")
    save_stand_ins(folder)
    return folder


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_of_the_page_runs_as_printed(page, stand_ins, tmp_path, monkeypatch):
    for name in ("ncsn-digits", "ncsn-eps", "clf", "ncsn-digits-cd"):
        (tmp_path / name).symlink_to(stand_ins / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), start=1):
        if NOT_RUN in block:
            continue
        try:
            exec(compile(block, f"{page.name} python block {number}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{page.name}, python block {number}, fails as printed:\n{block}") from err


def test_the_blocks_left_unrun_are_few_and_say_why():
    unrun = [(page.name, block) for page in PAGES for block in python_blocks(page) if NOT_RUN in block]
    assert len(unrun) <= 3, [name for name, _ in unrun]
    for name, block in unrun:
        reason = block.split(NOT_RUN, 1)[1].split("\n", 1)[0].strip()
        assert reason, f"a block of {name} is not run and gives no reason"


def output_dirs(text: str) -> set[str]:
    """What the page's commands and snippets write into the working directory: --output_dir values and saved paths."""
    commands = "\n".join(COMMAND_BLOCK.findall(text))
    found = set(re.findall(r"--output_dir[ =](\S+)", commands))
    snippets = "\n".join(PYTHON_BLOCK.findall(text))
    found |= set(re.findall(r"""(?:save_pretrained|\.save|output_dir=)\(?["']([^"']+)["']""", snippets))
    return {name.strip("./").split("/")[0] for name in found if name.isascii() and name.upper() != name}


def test_what_the_commands_write_is_git_ignored():
    ignored = {line.strip().strip("/") for line in (REPO / ".gitignore").read_text().splitlines()}
    written = set().union(*(output_dirs(page.read_text(encoding="utf-8")) for page in PAGES)) - {"docs"}
    written.add(TrainingConfig.output_dir)  # `accelerate launch train_ncsn.py` without --output_dir
    assert {"clf", "ncsn-eps", "ncsn-digits-cd", "ncsn-tiny", "digit.png"} <= written
    assert written <= ignored, sorted(written - ignored)


def test_no_page_names_a_folder_of_the_machine_it_was_written_on():
    local = re.compile(r"(?<![\w.:/~-])/(?:work|tmp|home|root|Users|mnt|scratch)/")
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            assert not local.search(line), f"{page.name}:{number}: {line}"
