"""StochasticHeunScheduler runs the score-scheduler contract (scheduler_contract.py)."""

import pytest
from scheduler_contract import ScoreSchedulerContract

from ncsn_diffusers import StochasticHeunScheduler


class TestStochasticHeunSchedulerContract(ScoreSchedulerContract):
    scheduler_class = StochasticHeunScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=4)

    def calls_laid_out(self, num_inference_steps: int) -> int:
        return num_inference_steps - 1 + num_inference_steps % 2  # L levels cost 2L - 1 calls: an odd count


def test_a_chain_cannot_begin_at_a_heun_correction():
    """Catches a tail that starts at a correction, whose Euler half (x^_i, d_i) it never saw."""
    scheduler = StochasticHeunScheduler(sigma_max=2.0, sigma_min=0.05)
    scheduler.set_timesteps(9)
    with pytest.raises(ValueError, match="begin_index=3 is the Heun correction of step 1.*e.g. 2 or 4"):
        scheduler.set_begin_index(3)
