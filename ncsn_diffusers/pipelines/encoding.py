"""`NCSNPipeline.encode`: images -> the standard normal `latents` from which the pipeline's sampler starts at
sigma_max, through the probability-flow ODE (`probability_flow.py`), so that a deterministic sampler decodes them."""

import torch

from ..probability_flow import FlowField, flow_for, integrate, vp_flow
from .pairing import is_denoiser_scheduler
from .timestep_adapter import is_timestep_scheduler


def sampler_flow(pipe, data_range: tuple[float, float], num_inference_steps: int):
    """
    The probability-flow ODE that ends where the pipeline's sampler starts, and the map from its end x(sigma_max) (VE
    coordinates) to the `latents` z the pipeline takes: z = (x - centre) / scale with the sampler's start
    centre + scale z.
    """
    scheduler = pipe.scheduler
    if getattr(scheduler.config, "initial_distribution", "gaussian") == "uniform":
        raise ValueError(
            f"{type(scheduler).__name__} starts from a uniform draw (initial_distribution='uniform'), which no ODE "
            "maps images to; encode with a scheduler that starts from N(centre, sigma_max**2 I), e.g. "
            "AnnealedLangevinScheduler.from_config(pipe.scheduler.config, initial_distribution='gaussian')."
        )
    if is_timestep_scheduler(scheduler):
        if scheduler.init_noise_sigma != 1:
            raise ValueError(
                f"{type(scheduler).__name__} samples in sigma coordinates (init_noise_sigma != 1); encode for a "
                "scheduler that steps x_t itself: DDIMScheduler, DDPMScheduler or DPMSolverMultistepScheduler."
            )
        clipping = [key for key in ("clip_sample", "thresholding") if scheduler.config.get(key)]
        if clipping:
            raise ValueError(
                f"{type(scheduler).__name__} has {clipping[0]}=True: it clamps its x_0 prediction at every step, "
                "which the probability-flow ODE does not, so decoding would not return the images (the error grows "
                "with the steps). Encode and decode with it off: pipe.scheduler = "
                f"{type(scheduler).__name__}.from_config(pipe.scheduler.config, {clipping[0]}=False)."
            )
        scheduler.set_timesteps(num_inference_steps)  # the chain's first timestep is the ODE's top
        flow = vp_flow(pipe.unet, scheduler.alphas_cumprod, t_max=int(scheduler.timesteps[0]))
        return flow, 0.0, 1 / flow.latent_scale  # x_t = latent_scale x_VE is the start, z itself
    flow, _ = flow_for(pipe, data_range=data_range)
    if getattr(scheduler.config, "noise_space", "ve") == "vp":  # a score chain on DDPM's levels, from x_{T-1} = z
        return flow, 0.0, 1 / flow.latent_scale
    centre = 0.5 * (data_range[0] + data_range[1])
    scale = scheduler.init_noise_sigma if is_denoiser_scheduler(scheduler) else flow.sigma_max
    return flow, centre, float(scale)


def encode_latents(pipe, images: torch.Tensor, data_range, num_inference_steps: int, **solver_kwargs) -> torch.Tensor:
    """Images in `data_range` (B, C, H, W) -> the pipeline's `latents` (see [`sampler_flow`])."""
    flow, centre, scale = sampler_flow(pipe, data_range, num_inference_steps)
    device = pipe._execution_device
    x_ve, _ = integrate(
        FlowField(flow), images.to(device).float() * flow.data_scale, flow.sigma_min, flow.sigma_max, **solver_kwargs
    )
    return (x_ve - centre) / scale
