"""PredictorCorrectorScheduler runs the score-scheduler contract (scheduler_contract.py)."""

from scheduler_contract import ScoreSchedulerContract

from ncsn_diffusers import PredictorCorrectorScheduler


class TestPredictorCorrectorSchedulerContract(ScoreSchedulerContract):
    scheduler_class = PredictorCorrectorScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=4)
    uneven_config = dict(corrector_steps=3)
