"""A trained NCSN++ (`--model_type ncsnpp`) saved as diffusers' `ScoreSdeVePipeline` folder, the Hub's google/ncsnpp
layout: `model_index.json` naming `ScoreSdeVePipeline`, the `UNet2DModel` and a `ScoreSdeVeScheduler` holding the run's
predictor-corrector sampler (sigma_min, sigma_max, snr, corrector steps, levels). diffusers' own pipeline samples it
as it samples the Hub's folders; the package's pipelines load it as such a folder (`pipelines/score_sde_ve_folder.py`),
which turns the scheduler back into the same `PredictorCorrectorScheduler` on data in [0, 1]. Its model card shows
diffusers' own pipeline as the way to sample it without this package."""

from pathlib import Path

from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler

from ..hub import PipelineCard, render_pipeline_card, write_card
from ..pipelines import NCSNPipeline


def score_sde_ve_scheduler(predictor_corrector) -> ScoreSdeVeScheduler:
    """diffusers' `ScoreSdeVeScheduler` of a `PredictorCorrectorScheduler`'s chain: its sigma range, snr, corrector
    steps per level and number of levels (`num_train_timesteps`, what the package samples a loaded folder with)."""
    config = predictor_corrector.config
    return ScoreSdeVeScheduler(
        num_train_timesteps=config.num_noise_levels,
        sigma_min=config.sigma_min,
        sigma_max=config.sigma_max,
        snr=config.snr,
        correct_steps=config.corrector_steps,
    )


def save_score_sde_ve_folder(
    pipeline: NCSNPipeline, save_directory: str | Path, card: PipelineCard | None = None, repo_id: str | None = None
):
    """Writes `pipeline` (a score U-Net returning the score, and its predictor-corrector sampler on [0, 1] data) to
    `save_directory` as a `ScoreSdeVePipeline` folder, with the model card of the pipeline the package loads from it.

    Returns:
        `ScoreSdeVePipeline`: the pipeline written.
    """
    if tuple(pipeline.scheduler.config.data_range) != (0.0, 1.0):
        raise ValueError(
            f"ScoreSdeVePipeline samples data in [0, 1]; this sampler's data range is "
            f"{tuple(pipeline.scheduler.config.data_range)}."
        )
    folder = ScoreSdeVePipeline(unet=pipeline.unet, scheduler=score_sde_ve_scheduler(pipeline.scheduler))
    folder.save_pretrained(save_directory)
    write_card(save_directory, render_pipeline_card(folder, card, repo_id))
    return folder
