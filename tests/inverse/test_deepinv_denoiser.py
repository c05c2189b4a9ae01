"""The benchmark's wrapper of a VE score model as a deepinv denoiser (images in [0, 1], sigma in their units), checked
against Tweedie's formula on Gaussian data. It needs no deepinv: the wrapper is plain torch."""

from types import SimpleNamespace

import pytest
import torch
from analytic_models import GaussianScoreModel

from benchmarks.deepinv_samplers import UnitRangeScoreDenoiser

MEAN, STD = [0.3, -0.2, 0.1, 0.5], 0.2


def score_pipe(data_range):
    unet = GaussianScoreModel(mean=MEAN, covariance=(STD**2 * torch.eye(4)).tolist(), sample_size=2)
    config = SimpleNamespace(sigma_min=0.02, sigma_max=8.0, prediction_type="score")
    return SimpleNamespace(unet=unet, scheduler=SimpleNamespace(config=config), data_range=data_range)


def tweedie_in_model_units(x_model: torch.Tensor, sigma_model: float) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 1, 2, 2)
    return mean + STD**2 / (STD**2 + sigma_model**2) * (x_model - mean)


@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_denoiser_is_tweedie_in_the_units_of_images_in_unit_range(data_range):
    """Bug caught: sigma handed to the network in image units instead of the model's (a factor high - low), or the
    denoised image left in the model's range."""
    low, high = data_range
    denoiser = UnitRangeScoreDenoiser(score_pipe(data_range))
    x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sigma = 0.15  # in the units of images in [0, 1]
    expected = (tweedie_in_model_units(low + (high - low) * x, (high - low) * sigma) - low) / (high - low)
    torch.testing.assert_close(denoiser(x, sigma), expected)
    torch.testing.assert_close(denoiser(x, torch.full((3,), sigma)), expected)


def test_denoiser_clamps_below_the_trained_range_and_refuses_above_it():
    """Bug caught: a sampler's level below sigma_min sent to the network as is, or one above sigma_max accepted."""
    denoiser = UnitRangeScoreDenoiser(score_pipe((-1.0, 1.0)))
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(denoiser(x, 0.001), denoiser(x, 0.01))  # 0.01 in [0, 1] units is sigma_min = 0.02
    with pytest.raises(ValueError, match="sigma_max"):
        denoiser(x, 4.1)  # 8.2 in the model's units
