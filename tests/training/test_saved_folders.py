"""Every kind of folder a run saves (score pipeline, epsilon pipeline, NCSN++ ScoreSdeVePipeline, distilled student,
noise classifier), written by the finisher from fixed inputs, holds the same files with the same bytes as the record
in `tests/fixtures/saved_folders.json`.

Bug caught: a change to where cards are rendered or how folders are saved (the card's words or tables, a
`model_index.json` entry, a config key, a file more or less) that no test of a single card phrase would notice.
What a machine or a library version changes is normalised away: `_diffusers_version`, the measured sampling time and
CPU-minutes; weights and sample grids (bit-exact only on one machine and torch build) are recorded by name only.
After an intended change of a card or folder, rewrite the record with
`NCSN_WRITE_SAVED_FOLDERS=1 python -m pytest tests/training/test_saved_folders.py` and review its diff.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel, PredictorCorrectorScheduler
from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training.data import training_set
from ncsn_diffusers.training.finish import finish
from ncsn_diffusers.training.objectives import build_objective

RECORD = Path(__file__).resolve().parents[1] / "fixtures" / "saved_folders.json"
TINY = dict(resolution=8, report_to="none", seed=3)
PIPELINE = dict(model_preset="tiny", num_sample_images=4)
KINDS = {
    "score": dict(**PIPELINE, sample_grid_steps=6),
    "epsilon": dict(**PIPELINE, objective="epsilon", sample_grid_steps=3),
    "score_sde_ve": dict(**PIPELINE, model_type="ncsnpp", sampling_calls=6, sample_grid_steps=6),
    "classifier": dict(objective="noise_classifier"),
    "distilled": dict(num_sample_images=4, objective="consistency_distillation", num_scales=4, quality_samples=0),
}
LAST = {"images_per_s": 123.4, "error_rate": 0.25}
# Measured, so different at every run: the sampling time in a pipeline's card, a distilled run's CPU-minutes.
VOLATILE = [
    (re.compile(rb"(\| sampling time for \d+ images \(s\) \| )[0-9.]+( \|)"), rb"\1<s>\2"),
    (re.compile(rb'("cpu_minutes": )[0-9.]+'), rb"\1<min>"),
    (re.compile(rb"(\| CPU-minutes \(whole run\) \| )[0-9.]+"), rb"\1<min>"),
    (re.compile(rb'\s*"_diffusers_version": "[^"]*",?'), b""),
]
BINARY = (".safetensors", ".png")


def teacher(folder: Path) -> Path:
    torch.manual_seed(0)
    scheduler = PredictorCorrectorScheduler(sigma_max=6.0, sigma_min=0.02, data_range=(-1.0, 1.0))
    NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler).save_pretrained(folder)
    for leftover in ("README.md",):  # a teacher saved by any release: only its components are read
        (folder / leftover).unlink(missing_ok=True)
    return folder


def save_folder(kind: str, tmp_path: Path) -> Path:
    """The folder `finish` writes for a run of `kind` that trained 7 steps in 12.3 s."""
    settings = dict(KINDS[kind])
    if kind == "distilled":
        settings["teacher_model"] = str(teacher(tmp_path / "teacher"))
    args = TrainingConfig(**TINY, **settings, output_dir=str(tmp_path / kind)).resolve()
    torch.manual_seed(args.seed)
    images = training_set(args)
    objective = build_objective(args, images)
    network = objective.build_network(args, images)
    last = {**LAST, f"loss_{args.objective}": 0.5}
    finish(objective, args, Accelerator(cpu=True), network, None, images, 7, 12.3, last)
    return Path(args.output_dir)


def digest(path: Path) -> str:
    if path.name.endswith(BINARY):
        return "binary"
    data = path.read_bytes()
    for pattern, replacement in VOLATILE:
        data = pattern.sub(replacement, data)
    return hashlib.sha256(data).hexdigest()


def folder_record(folder: Path) -> dict:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_folder_keeps_its_files_and_bytes(kind, tmp_path):
    record = folder_record(save_folder(kind, tmp_path))
    if os.environ.get("NCSN_WRITE_SAVED_FOLDERS"):
        recorded = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
        RECORD.write_text(json.dumps({**recorded, kind: record}, indent=2, sort_keys=True) + "\n")
    assert record == json.loads(RECORD.read_text())[kind]
