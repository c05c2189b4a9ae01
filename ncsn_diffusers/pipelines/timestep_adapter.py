"""Drives diffusers' DDPM-family schedulers (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, ...) with a
DDPM epsilon U-Net, in their standard loop: `scheduler.scale_model_input(x, t)`, `unet(x, t).sample`,
`scheduler.step(eps, t, x)`, as `DDPMPipeline` and `DDIMPipeline` run them."""

import inspect

import torch
from diffusers import DDPMScheduler

from ..schedulers import SCORE_SCHEDULERS

# The schedulers `DDPMScheduler.from_config` converts to and from (diffusers' `compatibles`), but EDM's, whose
# `timesteps` are sigmas and which `edm_adapter.py` drives.
TIMESTEP_SCHEDULERS = tuple(cls for cls in DDPMScheduler._get_compatibles() if not cls.__name__.startswith("EDM"))


def is_timestep_scheduler(scheduler) -> bool:
    """A diffusers scheduler that steps an epsilon (or v, x_0) model at integer DDPM timesteps."""
    return isinstance(scheduler, TIMESTEP_SCHEDULERS) and not isinstance(scheduler, SCORE_SCHEDULERS)


def timestep_step_kwargs(scheduler, generator) -> dict:
    """`generator=` for a `step` that draws noise (DDPM, DDIM with eta > 0, ...), nothing for one that does not."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def timestep_model_output(scheduler, unet, sample: torch.Tensor, t, unet_dtype: torch.dtype) -> torch.Tensor:
    """The network's output at timestep `t` on the scheduler's scaled input, which the scheduler's `step` takes."""
    model_input = scheduler.scale_model_input(sample, t)
    return unet(model_input.to(unet_dtype), t).sample.float()
