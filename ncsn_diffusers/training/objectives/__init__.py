"""Training objectives, one file each on `Objective` (`base.py`): score matching (`score_matching.py`: DSM, SSM),
DDPM's epsilon (`epsilon.py`), the noise classifier (`noise_classifier.py`) and consistency distillation
(`consistency_distillation.py`). `OBJECTIVES` maps each `--objective` value to its class; nothing else tests an
objective's name."""

from ..networks import build_noise_scheduler
from .base import Objective
from .consistency_distillation import ConsistencyDistillation
from .epsilon import EpsilonPrediction
from .noise_classifier import NoiseClassification
from .perturbation import objective_losses, sliced_losses, training_losses
from .score_matching import DenoisingScoreMatching, SlicedScoreMatching
from .sigma_draws import log_normal_sigmas, log_uniform_sigmas

OBJECTIVES: dict[str, type[Objective]] = {
    objective.name: objective
    for objective in (
        DenoisingScoreMatching,
        SlicedScoreMatching,
        EpsilonPrediction,
        ConsistencyDistillation,
        NoiseClassification,
    )
}


def objective_class(name: str) -> type[Objective]:
    """The class of `--objective name`."""
    return OBJECTIVES[name]


def build_objective(config, images) -> Objective:
    """The objective `config.objective` names, with the noise scheduler of its run on the training set `images`."""
    cls = objective_class(config.objective)
    return cls(config, build_noise_scheduler(config, images, cls.noise_space))


__all__ = [
    "OBJECTIVES",
    "ConsistencyDistillation",
    "DenoisingScoreMatching",
    "EpsilonPrediction",
    "NoiseClassification",
    "Objective",
    "SlicedScoreMatching",
    "build_objective",
    "log_normal_sigmas",
    "log_uniform_sigmas",
    "objective_class",
    "objective_losses",
    "sliced_losses",
    "training_losses",
]
