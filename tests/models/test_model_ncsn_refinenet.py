"""NCSNRefineNet maps a sigma to its rung of the ladder at any floating-point precision."""

import pytest
import torch

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNRefineNet


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_a_half_precision_sigma_on_the_ladder_finds_its_rung(dtype):
    """Catches issue 20 row 17: a bf16 or fp16 rung was refused (a tolerance of 1e-5 whatever the dtype)."""
    model = NCSNRefineNet(sample_size=8, in_channels=1, base_channels=4, num_noise_levels=5)
    ladder = AnnealedLangevinScheduler(sigma_max=1.0, sigma_min=0.01, num_noise_levels=5).sigmas
    assert model.noise_level_index(ladder.to(dtype), 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="not on this network's ladder"):
        model.noise_level_index(torch.tensor([0.5], dtype=dtype), 1)
