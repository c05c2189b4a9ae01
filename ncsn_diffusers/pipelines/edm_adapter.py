"""Drives diffusers' EDM schedulers (EDMEulerScheduler, EDMDPMSolverMultistepScheduler) with a score model, through the
denoiser D(x, sigma) = x + sigma**2 s(x, sigma): the network sees the unscaled x and the real sigma."""

import inspect

import torch

from ..guidance import guided_score
from ..parameterization import denoiser_model_output, sample_from_score


def takes_denoised_sample(scheduler) -> bool:
    """Whether the EDM scheduler's `step` takes the denoised sample D itself (`pred_original_sample`, EDMEuler): it then
    gets D = x + sigma**2 s, one kernel, and skips its `precondition_outputs`."""
    return "pred_original_sample" in inspect.signature(scheduler.step).parameters


def edm_model_output(
    scheduler,
    unet,
    sample: torch.Tensor,
    t: torch.Tensor,
    unet_dtype: torch.dtype,
    denoised: bool,
    guidance: tuple | None = None,
) -> torch.Tensor:
    """
    What a diffusers EDM scheduler's step takes at timestep `t`: the score model at the unscaled x and the real sigma,
    handed over as the denoiser D(x, sigma) itself (`denoised`) or as the model output that the scheduler's
    `precondition_outputs` turns into D. `guidance` = (classifier, class_labels, w) makes s the guided score
    s + w grad_x log p(y | x, sigma) (see `guidance.py`), so that D = x + sigma**2 (s + w grad_x log p).
    """
    sigma = edm_sigma(scheduler, sample, t)
    score = unet(sample.to(unet_dtype), sigma).sample.float()
    if guidance is not None:
        score = guided_score(score, sample, sigma, *guidance)
    return edm_output_from_score(scheduler, score, sample, sigma, denoised)


def edm_sigma(scheduler, sample: torch.Tensor, t: torch.Tensor) -> float:
    """The sigma of the EDM scheduler's step at timestep `t`, at which the score model is called."""
    # only to let the scheduler find its step index: the network takes x unscaled, so scale no image
    scheduler.scale_model_input(sample[:0], t)
    return scheduler.sigmas[scheduler.step_index].item()  # sigmas live on the CPU: no device sync


def edm_output_from_score(scheduler, score: torch.Tensor, sample: torch.Tensor, sigma: float, denoised: bool):
    """The denoiser D = x + sigma**2 s itself (`denoised`), or the model output its `precondition_outputs` turns
    into D."""
    if denoised:
        return sample_from_score(score, sample.float(), sigma)
    return denoiser_model_output(scheduler, score, sample, sigma)
