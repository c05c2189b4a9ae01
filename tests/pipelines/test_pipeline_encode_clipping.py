"""`NCSNPipeline.encode` for a DDPM model decoded by DDIM: the round trip holds only without x_0 clipping.

Bug caught: docs/likelihood.md swapped in `DDIMScheduler.from_config(config)`, whose `clip_sample=True` default clamps
the x_0 prediction at every step; a trained network's x_0 predictions overshoot [-1, 1] at high noise, so the decode
left the ODE: max error 0.72 at 100 steps and 1.0 at 250 on the digits, growing with the steps. `encode` now refuses a
clipping scheduler with the fix, and without clipping DDIM returns the images to its first-order error.
"""

import pytest
import torch
from analytic_models import GaussianEpsilonModel
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers import NCSNPipeline
from ncsn_diffusers.schedulers.noise_ladders import ddpm_alphas_cumprod

ALPHAS_CUMPROD = ddpm_alphas_cumprod(1000, 1e-4, 0.02, "linear")
# the sampler train_ncsn.py saves with an epsilon model, whose config the docs' DDIM swap reads
SAVED = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


class OffsetEpsilonModel(GaussianEpsilonModel):
    """The exact epsilon of N(0, 0.8^2 I) plus 0.05: an imperfect network, whose x_0 prediction
    (x_t - sqrt(1 - abar) eps) / sqrt(abar) leaves [-1, 1] at high noise as a trained one's does. Its ODE is as
    smooth as the exact one's, so encode and decode must still invert each other."""

    def forward(self, sample, timestep, return_dict=True):
        return UNet2DOutput(sample=super().forward(sample, timestep).sample + 0.05)


def images() -> torch.Tensor:
    ramp = torch.linspace(0.02, 0.98, 16).view(1, 1, 4, 4)
    return torch.cat([ramp, ramp.flip(-1)])  # (2, 1, 4, 4) in [0, 1]


def round_trip_error(pipe, steps: int) -> float:
    pipe.set_progress_bar_config(disable=True)
    latents = pipe.encode(images(), num_inference_steps=steps)
    back = pipe(batch_size=2, latents=latents, num_inference_steps=steps, output_type="pt").images
    return float((back - images()).abs().max())


def test_ddim_without_clipping_decodes_the_latents_to_first_order():
    model = OffsetEpsilonModel(mean=0.0, std=0.8, alphas_cumprod=ALPHAS_CUMPROD.tolist(), sample_size=4)
    pipe = NCSNPipeline(model, DDIMScheduler.from_config(SAVED.config, clip_sample=False))
    error_100, error_200 = round_trip_error(pipe, 100), round_trip_error(pipe, 200)
    assert error_100 < 0.02 and error_200 < 0.6 * error_100  # measured: 0.014, then 0.0072


def test_encode_refuses_a_scheduler_that_clips_its_x0_prediction():
    model = OffsetEpsilonModel(mean=0.0, std=0.8, alphas_cumprod=ALPHAS_CUMPROD.tolist(), sample_size=4)
    clipping = DDIMScheduler.from_config(SAVED.config)  # diffusers' default clip_sample=True
    assert clipping.config.clip_sample
    with pytest.raises(ValueError, match=r"clip_sample=True.*from_config\(pipe.scheduler.config, clip_sample=False\)"):
        NCSNPipeline(model, clipping).encode(images(), num_inference_steps=100)
    thresholding = DDIMScheduler.from_config(SAVED.config, clip_sample=False, thresholding=True)
    with pytest.raises(ValueError, match="thresholding=True"):
        NCSNPipeline(model, thresholding).encode(images(), num_inference_steps=100)
