"""Bad input to the likelihood and the probability-flow ODE is refused before any solve: images off the model's data
range, a network that outputs NaN, and solver tolerances that cannot be met."""

import math

import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers import NCSNPipeline, PredictorCorrectorScheduler, log_likelihood
from ncsn_diffusers.probability_flow import encode

SIGMA_MIN, SIGMA_MAX = 0.01, 5.0


class NaNScoreModel(ModelMixin, ConfigMixin):
    """A score network that outputs NaN everywhere (a diverged training run)."""

    @register_to_config
    def __init__(self, in_channels: int = 1, sample_size: int = 2):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1), persistent=False)

    def forward(self, sample, sigma, return_dict=True):
        return UNet2DOutput(sample=sample * math.nan)


def pipeline(model, data_range=(-1.0, 1.0)) -> NCSNPipeline:
    scheduler = PredictorCorrectorScheduler(
        sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, num_noise_levels=4, data_range=data_range
    )
    return NCSNPipeline(model, scheduler)


def mixture_pipeline(data_range=(-1.0, 1.0)) -> NCSNPipeline:
    return pipeline(ImageMixtureScoreModel(means=[[0.0] * 4], weights=[1.0], std=0.5, sample_size=2), data_range)


def digits_on_17_levels(low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    levels = torch.randint(0, 17, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0)).float()
    levels[0, 0, 0, 0] = 1  # at least one odd level: k / 16 is then off the grid of 9 levels
    return low + (high - low) * levels / 16


@pytest.mark.parametrize(
    "images, message",
    [
        (digits_on_17_levels(0.0, 255.0), r"outside \[0.0, 1.0\]: pass images in \[0, 1\]"),  # 0..255 pixels
        (digits_on_17_levels(-1.0, 1.0), r"outside \[0.0, 1.0\]: pass images in \[0, 1\]"),  # model coordinates
        (digits_on_17_levels(), r"not on the 9 levels k / 8 of \[0.0, 1.0\]"),  # a wrong num_levels
    ],
)
def test_images_off_the_unit_range_or_its_levels_are_refused(images, message):
    """Bug caught: 0..255 images gave 16,341 bits/dim and [0, 1] images a plausible 1.99 on a [-1, 1] model, while
    `pipe.encode` took [0, 1]: both now take [0, 1] on every model, and refuse anything else."""
    num_levels = 9 if "9 levels" in message else 17
    with pytest.raises(ValueError, match=message):
        log_likelihood(mixture_pipeline(), images, num_levels=num_levels, solver="heun", num_steps=2)
    out = log_likelihood(mixture_pipeline(), digits_on_17_levels(), num_levels=17, solver="heun", num_steps=2)
    assert out.bits_per_dim.isfinite().all()


def test_likelihood_and_encode_take_the_same_images_on_any_data_range():
    """Bug caught: `log_likelihood(pipe, x)` wanted the model's coordinates (2x - 1 on a [-1, 1] run) where
    `pipe.encode(x)` wanted [0, 1]. The same [0, 1] images now give the same bits/dim on a [-1, 1] and on a [0, 1]
    model of the same data (the second is the first, moved by x -> (x + 1) / 2), and the latents `encode` returns are
    the ODE's end that `log_likelihood` reaches."""
    kwargs = {"num_levels": 17, "solver": "heun", "num_steps": 8, "generator": torch.Generator().manual_seed(1)}
    model = ImageMixtureScoreModel(means=[[0.0] * 4], weights=[1.0], std=0.5, sample_size=2)
    wide = log_likelihood(pipeline(model), digits_on_17_levels(), **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(1)
    unit_model = ImageMixtureScoreModel(means=[[0.5] * 4], weights=[1.0], std=0.25, sample_size=2)
    scheduler = PredictorCorrectorScheduler(
        sigma_max=SIGMA_MAX / 2, sigma_min=SIGMA_MIN / 2, num_noise_levels=4, data_range=(0.0, 1.0)
    )
    unit = log_likelihood(NCSNPipeline(unit_model, scheduler), digits_on_17_levels(), **kwargs)
    assert torch.allclose(wide.bits_per_dim, unit.bits_per_dim, atol=1e-4)
    assert torch.allclose(wide.log_prob, unit.log_prob, atol=1e-3)


def test_images_outside_the_unit_range_are_refused_without_num_levels():
    with pytest.raises(ValueError, match=r"outside \[0.0, 1.0\]"):
        log_likelihood(mixture_pipeline((0.0, 1.0)), digits_on_17_levels(-1.0, 1.0), solver="heun", num_steps=2)


@pytest.mark.parametrize("solver", ["rk45", "heun"])
def test_a_network_that_outputs_nan_is_named_not_integrated(solver):
    """Bug caught: RK45 on NaN scores never returned (180 s and counting), encode gave all-NaN latents."""
    pipe = pipeline(NaNScoreModel())
    images = digits_on_17_levels()
    with pytest.raises(FloatingPointError, match="The score network returned non-finite values"):
        log_likelihood(pipe, images, num_levels=17, solver=solver, num_steps=2)
    with pytest.raises(FloatingPointError, match="The score network returned non-finite values"):
        encode(pipe, 2 * images - 1, solver=solver, num_steps=2)  # the ODE itself, in the model's coordinates
    with pytest.raises(FloatingPointError, match="The score network returned non-finite values"):
        pipe.encode(images, solver=solver, num_steps=2)


@pytest.mark.parametrize("kwargs", [{"rtol": 0.0}, {"rtol": math.nan}, {"atol": -1.0}, {"atol": math.inf}])
def test_tolerances_that_cannot_be_met_are_named(kwargs):
    """Bug caught: rtol=0 or nan failed deep in the solve with "`sigma` must be positive ... nan"."""
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"{name}={value} must be a finite number > 0"):
        log_likelihood(mixture_pipeline(), digits_on_17_levels(), num_levels=17, **kwargs)
    with pytest.raises(ValueError, match=f"{name}={value} must be a finite number > 0"):
        mixture_pipeline().encode(torch.rand(1, 1, 2, 2), **kwargs)
