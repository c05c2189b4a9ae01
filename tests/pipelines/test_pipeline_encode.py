"""`NCSNPipeline.encode`: images -> the latents its sampler starts from, through the probability-flow ODE, which a
deterministic sampler decodes. Gaussian data with the exact score give the ODE's map in closed form:
x(sigma) = mean + (x - mean) sqrt((s^2 + sigma^2) / (s^2 + sigma_min^2))."""

import math

import pytest
import torch
from analytic_models import GaussianEpsilonModel, ImageMixtureScoreModel
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, StochasticHeunScheduler
from ncsn_diffusers.probability_flow import vp_sigma
from ncsn_diffusers.schedulers.noise_ladders import ddpm_alphas_cumprod

MEAN, STD = 0.1, 0.3  # the data N(MEAN, STD^2 I), 1x2x2 images in [-1, 1]
SIGMA_MIN, SIGMA_MAX = 0.01, 20.0


def gaussian_images(seed: int = 0) -> torch.Tensor:
    """Four draws of the data as images in [0, 1], the pipeline's output form."""
    x = MEAN + STD * torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    return ((x.clamp(-0.95, 0.95) + 1) / 2).float()


def flow_map(x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    return MEAN + (x - MEAN) * math.sqrt((STD**2 + sigma_to**2) / (STD**2 + sigma_from**2))


def decode(pipe, latents, steps):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=len(latents), latents=latents, num_inference_steps=steps, output_type="pt").images


def test_ve_encode_is_the_gaussian_flow_and_deterministic_heun_decodes_it():
    """Catches latents that are not the ODE's end (wrong drift size, centre or scale of z) and a round trip that does
    not return the images: Heun without churn retraces the ODE (its last step, to sigma = 0, is Tweedie's denoiser,
    which moves the Gaussian's points by (x - mean) sigma_min^2 / s^2 ~ 1e-4)."""
    model = ImageMixtureScoreModel(means=[[MEAN] * 4], weights=[1.0], std=STD, sample_size=2)
    scheduler = StochasticHeunScheduler(
        sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, num_noise_levels=50, s_churn=0.0, data_range=(-1.0, 1.0)
    )
    pipe = NCSNPipeline(model, scheduler)
    images = gaussian_images()
    latents = pipe.encode(images)
    expected = flow_map(2 * images - 1, SIGMA_MIN, SIGMA_MAX) / SIGMA_MAX  # the start is 0 + sigma_max z
    torch.testing.assert_close(latents, expected, atol=1e-4, rtol=0)
    back = decode(pipe, latents, 99)
    assert (back - images).abs().max() < 2e-3


def test_vp_encode_starts_ddim_at_its_first_timestep_and_ddim_decodes_it():
    """Catches encoding to t = T - 1 when the decoding DDIM chain starts at 990 (100 leading steps of 1000), a wrong VP
    scaling of the latents (z = x_t = sqrt(abar_t) x_VE), and a DDIM decode that does not converge to the images."""
    alphas_cumprod = ddpm_alphas_cumprod(1000, 1e-4, 0.02, "linear")
    model = GaussianEpsilonModel(mean=MEAN, std=STD, alphas_cumprod=alphas_cumprod.tolist())
    pipe = NCSNPipeline(model, DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    images = gaussian_images(1)
    latents = pipe.encode(images, num_inference_steps=100)
    sigma_min, sigma_top = vp_sigma(alphas_cumprod, 0).item(), vp_sigma(alphas_cumprod, 990).item()
    x_ve = (2 * images - 1) * math.sqrt(1 + sigma_min**2)
    expected = flow_map(x_ve, sigma_min, sigma_top) / math.sqrt(1 + sigma_top**2)
    torch.testing.assert_close(latents, expected, atol=1e-4, rtol=0)
    # DDIM is a first-order solver of the same ODE: the round trip's error, 0.011 at 100 steps, halves with twice the
    # steps (to 1.4e-3 at 1000)
    error = (decode(pipe, latents, 100) - images).abs().max()
    error_200 = (decode(pipe, pipe.encode(images, num_inference_steps=200), 200) - images).abs().max()
    assert error < 0.015 and error_200 < 0.6 * error


def test_encode_refuses_what_no_ode_starts(tmp_path):
    model = ImageMixtureScoreModel(means=[[MEAN] * 4], weights=[1.0], std=STD, sample_size=2)
    uniform = AnnealedLangevinScheduler(initial_distribution="uniform", data_range=(-1.0, 1.0))
    with pytest.raises(ValueError, match="initial_distribution='uniform'"):
        NCSNPipeline(model, uniform).encode(gaussian_images())
    alphas_cumprod = ddpm_alphas_cumprod(1000, 1e-4, 0.02, "linear")
    epsilon_model = GaussianEpsilonModel(mean=MEAN, std=STD, alphas_cumprod=alphas_cumprod.tolist())
    with pytest.raises(ValueError, match="init_noise_sigma != 1"):
        NCSNPipeline(epsilon_model, EulerDiscreteScheduler()).encode(gaussian_images(), num_inference_steps=10)
    with pytest.raises(ValueError, match="images has values in"):
        NCSNPipeline(model, uniform).encode(gaussian_images() * 2 - 1)
