"""AnnealedLangevinScheduler runs the score-scheduler contract (scheduler_contract.py)."""

from scheduler_contract import ScoreSchedulerContract

from ncsn_diffusers import AnnealedLangevinScheduler, ConsistentAnnealedSamplingScheduler


class TestAnnealedLangevinSchedulerContract(ScoreSchedulerContract):
    scheduler_class = AnnealedLangevinScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=4)
    uneven_config = dict(steps_per_level=3, final_denoise=True)
    min_calls = 2


def test_a_consistent_annealed_config_swaps_in():
    """Bug caught: CAS's epsilon=None (its run's own window) was carried over and refused."""
    cas = ConsistentAnnealedSamplingScheduler(sigma_max=2.0, sigma_min=0.05)
    als = AnnealedLangevinScheduler.from_config(cas.config)
    assert als.config.relative_epsilon == 0.2 and als.config.sigma_min == 0.05
