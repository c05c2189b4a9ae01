"""ConsistentAnnealedSamplingScheduler runs the score-scheduler contract (scheduler_contract.py)."""

from scheduler_contract import ScoreSchedulerContract

from ncsn_diffusers import AnnealedLangevinScheduler, ConsistentAnnealedSamplingScheduler


class TestConsistentAnnealedSamplingSchedulerContract(ScoreSchedulerContract):
    scheduler_class = ConsistentAnnealedSamplingScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=4)
    min_calls = 2


def test_an_annealed_langevin_config_never_saved_gives_no_epsilon():
    """Bug caught: a fresh ALS config (no `_class_name`) passed its epsilon on as CAS's own, outside
    CAS's stability window."""
    als = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.05, epsilon=1e-5)
    assert ConsistentAnnealedSamplingScheduler.from_config(als.config).config.epsilon is None
    own = ConsistentAnnealedSamplingScheduler(epsilon=1e-4)
    assert ConsistentAnnealedSamplingScheduler.from_config(own.config).config.epsilon == 1e-4
