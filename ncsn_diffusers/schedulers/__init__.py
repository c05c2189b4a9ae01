"""Samplers for score models, one scheduler class per algorithm, sharing `scheduling_utils`."""

from .scheduling_annealed_langevin import AnnealedLangevinScheduler, AnnealedLangevinSchedulerOutput
from .scheduling_consistent_annealed import ConsistentAnnealedSamplingScheduler
from .scheduling_log_sigma_multistep import LogSigmaMultistepScheduler
from .scheduling_predictor_corrector import PredictorCorrectorScheduler
from .scheduling_stochastic_heun import StochasticHeunScheduler
from .scheduling_utils import ScoreSchedulerOutput

SCORE_SCHEDULERS = (
    AnnealedLangevinScheduler,
    PredictorCorrectorScheduler,
    ConsistentAnnealedSamplingScheduler,
    StochasticHeunScheduler,
    LogSigmaMultistepScheduler,
)

__all__ = [
    "SCORE_SCHEDULERS",
    "AnnealedLangevinScheduler",
    "AnnealedLangevinSchedulerOutput",
    "ConsistentAnnealedSamplingScheduler",
    "LogSigmaMultistepScheduler",
    "PredictorCorrectorScheduler",
    "ScoreSchedulerOutput",
    "StochasticHeunScheduler",
]
