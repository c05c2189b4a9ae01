"""NCSNppModel's pieces against closed forms: the SDE time maps, FIR resampling, and the configurations it refuses.
Its agreement with the authors' network is tested on their fixtures in tests/scripts/test_convert_score_sde.py."""

import math

import pytest
import torch

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNppModel, PredictorCorrectorScheduler
from ncsn_diffusers.models.fir_resampling import fir_downsample, fir_upsample, upfirdn2d
from ncsn_diffusers.models.score_sde_noise import sigma_from_time, time_from_sigma


def test_sigma_of_each_sde_at_t_1_and_back():
    """Bug caught: sub-VP's std squared-rooted again (it is 1 - alpha**2 already), or a time map that does not invert."""
    log_alpha = -0.25 * (20.0 - 0.1) - 0.5 * 0.1  # t = 1, beta in [0.1, 20]
    alpha = math.exp(log_alpha)
    expected = {"ve": 50.0, "vp": math.sqrt(1 - alpha**2) / alpha, "subvp": (1 - alpha**2) / alpha}
    for sde, sigma in expected.items():
        assert sigma_from_time(sde, 1.0).item() == pytest.approx(sigma, rel=1e-12)
        t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
        torch.testing.assert_close(
            time_from_sigma(sde, sigma_from_time(sde, t)), t, rtol=1e-9, atol=0
        )  # far below float32 t


def test_fir_resampling_keeps_a_constant_image_and_upsampling_inserts_zeros():
    x = torch.full((1, 2, 8, 8), 3.0)
    up, down = fir_upsample(x, (1, 3, 3, 1)), fir_downsample(x, (1, 3, 3, 1))
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    assert torch.allclose(
        up[..., 2:-2, 2:-2], torch.tensor(3.0)
    )  # away from the zero padding: gain 4 undoes the zeros
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(3.0))
    y = torch.arange(4.0).reshape(1, 1, 2, 2)
    expected = torch.tensor([[[[0.0, 0, 1, 0], [0, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0]]]])
    assert torch.equal(upfirdn2d(y, torch.ones(1, 1), up=2), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resblock_type": "ddpm", "fir": True}, "FIR up-sampling with a convolution"),
        ({"embedding_type": "fourier", "continuous": False}, "continuous=True"),
        ({"sde": "vp", "scale_by_sigma": True, "embedding_type": "positional"}, "scale_by_sigma"),
        ({"progressive": "skip"}, "progressive='skip'"),
        ({"conv_size": 5}, "conv_size=5"),
    ],
)
def test_configurations_the_authors_cannot_run_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NCSNppModel(sample_size=8, base_channels=4, channel_multipliers=(1, 2), num_res_blocks=1, **kwargs)


def test_pipeline_refuses_a_vp_epsilon_scheduler_for_the_ve_score_it_returns():
    """Bug caught: a converted VP model paired with a VP-coordinates scheduler, which would read the VE score as
    epsilon."""
    unet = NCSNppModel(sample_size=8, base_channels=4, channel_multipliers=(1, 2), num_res_blocks=1, sde="vp",
                       scale_by_sigma=False, embedding_type="positional", centered=True)  # fmt: skip
    with pytest.raises(ValueError, match="returns the score"):
        NCSNPipeline(unet=unet, scheduler=AnnealedLangevinScheduler(noise_space="vp", prediction_type="epsilon"))
    NCSNPipeline(unet=unet, scheduler=PredictorCorrectorScheduler(data_range=(-1.0, 1.0)))
