"""The Hub's ScoreSdeVe folders (google/ncsnpp-*), read as they are.

Such a folder is diffusers' `ScoreSdeVePipeline`: an NCSN++ `UNet2DModel` (Fourier embedding of sigma, Skip blocks)
that returns the score itself (it divides its output by sigma, the timestep it is called with, as
`model(sample, sigma_t).sample`) and a `ScoreSdeVeScheduler` (sigma_min, sigma_max, snr, correct_steps), data in
[0, 1]. The package's pipelines call a score network the same way, `unet(x, sigma)`, so the U-Net is used as it is and
only the scheduler is replaced: by the predictor-corrector chain of the same settings, which
`PredictorCorrectorScheduler.from_config` reads from its config (`schedulers/compatible_configs.py`). The folder
itself is only read; `save_pretrained` writes this package's format elsewhere.
"""

import json
from pathlib import Path

from diffusers import ScoreSdeVeScheduler

from ..schedulers import PredictorCorrectorScheduler


def is_score_sde_ve_scheduler(scheduler) -> bool:
    return isinstance(scheduler, ScoreSdeVeScheduler)


def package_scheduler(scheduler):
    """The package's predictor-corrector scheduler for a `ScoreSdeVeScheduler`; any other scheduler as it is."""
    return (
        PredictorCorrectorScheduler.from_config(scheduler.config)
        if is_score_sde_ve_scheduler(scheduler)
        else scheduler
    )


def is_score_sde_ve_folder(folder: str | Path) -> bool:
    index = json.loads((Path(folder) / "model_index.json").read_text())
    return list(index.get("scheduler") or [])[-1:] == ["ScoreSdeVeScheduler"]


def converted_components(folder: str | Path) -> dict:
    """The components of a saved pipeline that the package's pipelines take in another form: `{"scheduler": PC}` for a
    ScoreSdeVe folder, nothing for any other."""
    if not is_score_sde_ve_folder(folder):
        return {}
    config = ScoreSdeVeScheduler.load_config(Path(folder) / "scheduler")
    return {"scheduler": PredictorCorrectorScheduler.from_config(config)}
