"""The sampler that conditional tasks (inpainting, posterior sampling) run when none is named: annealed Langevin
dynamics on the saved scheduler's noise range, measured best for them (docs/inpainting.md, docs/inverse_problems.md),
rather than the sampler saved for unconditional sampling (the default run saves predictor-corrector)."""

from ..models import NCSNRefineNet
from ..schedulers import AnnealedLangevinScheduler
from .pairing import is_denoiser_scheduler
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
    `from_pretrained` and `from_pipe` give the pipeline [`conditional_task_scheduler`] in place of the saved sampler,
    unless a `scheduler=` is passed: the sampler a caller names is always the one that runs.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        return with_task_sampler(super().from_pretrained(pretrained_model_name_or_path, **kwargs), kwargs)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        return with_task_sampler(super().from_pipe(pipeline, **kwargs), kwargs)


def with_task_sampler(pipe, load_kwargs: dict):
    """`pipe` with [`conditional_task_scheduler`] unless the loading call named a `scheduler`."""
    if load_kwargs.get("scheduler") is None:
        pipe.scheduler = conditional_task_scheduler(pipe.unet, pipe.scheduler)
    return pipe
