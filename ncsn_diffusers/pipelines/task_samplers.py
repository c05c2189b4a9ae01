"""The sampler that conditional tasks (inpainting, posterior sampling) run when none is named: annealed Langevin
dynamics on the saved scheduler's noise range, measured best for them (docs/inpainting.md, docs/inverse_problems.md),
rather than the sampler saved for unconditional sampling (the default run saves predictor-corrector)."""

import json
from pathlib import Path

from ..models import NCSNRefineNet
from ..schedulers import AnnealedLangevinScheduler
from .pairing import is_denoiser_scheduler
from .pipeline_folder import HUB_KWARGS, resolve_pipeline_folder
from .timestep_adapter import is_timestep_scheduler

# L levels of T Langevin steps, + the denoising call: 101 calls, the step relative to sigma_L**2 of docs/inpainting.md.
TASK_NUM_NOISE_LEVELS = 10
TASK_STEPS_PER_LEVEL = 10
TASK_RELATIVE_EPSILON = 0.5
# The data range of diffusers' EDM schedulers, which do not record one.
EDM_DATA_RANGE = (-1.0, 1.0)


def conditional_task_scheduler(unet, scheduler) -> AnnealedLangevinScheduler:
    """
    Annealed Langevin dynamics (L = 10 levels of T = 10 steps, eta = epsilon / sigma_L**2 = 0.5, final denoising) over
    `scheduler`'s sigma_max .. sigma_min and data range; for a DDPM epsilon model's scheduler, `from_config`'s VP
    chain over the same DDPM schedule. An `NCSNRefineNet` keeps the levels of its own ladder.
    """
    config = scheduler.config
    if is_timestep_scheduler(scheduler) or config.get("noise_space") == "vp":
        return AnnealedLangevinScheduler.from_config(config)
    data_range = EDM_DATA_RANGE if is_denoiser_scheduler(scheduler) else scheduler.data_range
    num_levels = unet.config.num_noise_levels if isinstance(unet, NCSNRefineNet) else TASK_NUM_NOISE_LEVELS
    return AnnealedLangevinScheduler(
        sigma_max=config.sigma_max,
        sigma_min=config.sigma_min,
        num_noise_levels=num_levels,
        steps_per_level=TASK_STEPS_PER_LEVEL,
        relative_epsilon=TASK_RELATIVE_EPSILON,
        final_denoise=True,
        data_range=data_range,
    )


class ConditionalTaskSamplerMixin:
    """
    `from_pretrained` and `from_pipe` give the pipeline [`conditional_task_scheduler`] in place of a sampler saved for
    unconditional sampling (a folder or pipeline of another class, such as `NCSNPipeline`), unless a `scheduler=` is
    passed: the sampler a caller names, or one saved with a conditional pipeline, is the one that runs.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        local_dir = resolve_pipeline_folder(
            pretrained_model_name_or_path, **{k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        )
        pipe = super().from_pretrained(local_dir, **kwargs)
        saved_class = json.loads((Path(local_dir) / "model_index.json").read_text()).get("_class_name")
        return with_task_sampler(pipe, kwargs, saved_for_task=saved_class in CONDITIONAL_PIPELINE_NAMES)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        saved_for_task = isinstance(pipeline, ConditionalTaskSamplerMixin)
        return with_task_sampler(super().from_pipe(pipeline, **kwargs), kwargs, saved_for_task)


# The pipelines whose saved scheduler was chosen for a conditional task (kept when loaded).
CONDITIONAL_PIPELINE_NAMES = ("NCSNInpaintPipeline", "NCSNPosteriorPipeline")


def with_task_sampler(pipe, load_kwargs: dict, saved_for_task: bool):
    """`pipe` with [`conditional_task_scheduler`] unless the loading call named a `scheduler` or the sampler it came
    with was chosen for a conditional task."""
    if load_kwargs.get("scheduler") is None and not saved_for_task:
        pipe.scheduler = conditional_task_scheduler(pipe.unet, pipe.scheduler)
    return pipe
