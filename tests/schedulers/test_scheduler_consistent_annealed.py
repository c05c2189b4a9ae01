"""ConsistentAnnealedSamplingScheduler runs the score-scheduler contract (scheduler_contract.py)."""

from scheduler_contract import ScoreSchedulerContract

from ncsn_diffusers import ConsistentAnnealedSamplingScheduler


class TestConsistentAnnealedSamplingSchedulerContract(ScoreSchedulerContract):
    scheduler_class = ConsistentAnnealedSamplingScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=4)
    min_calls = 2
