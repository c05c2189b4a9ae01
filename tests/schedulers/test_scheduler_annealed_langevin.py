"""AnnealedLangevinScheduler runs the score-scheduler contract (scheduler_contract.py)."""

from scheduler_contract import ScoreSchedulerContract

from ncsn_diffusers import AnnealedLangevinScheduler


class TestAnnealedLangevinSchedulerContract(ScoreSchedulerContract):
    scheduler_class = AnnealedLangevinScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=4)
    uneven_config = dict(steps_per_level=3, final_denoise=True)
    min_calls = 2
