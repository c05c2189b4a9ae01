"""Offline sample-quality evaluation on the embedded digits, and standard FID / IS through torch-fidelity.

`python -m ncsn_diffusers.evaluation --help` for the command.
"""

from .classifier import DigitsClassifier, classifier_outputs, load_digits_classifier, train_digits_classifier
from .digits_metrics import evaluate_samples, reference_floor
from .fid import compute_fid_metrics, digits_feature_function, inception_feature_function
from .metrics import (
    class_coverage,
    classifier_confidence,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_score,
    nearest_neighbour_memorisation,
)
from .sampling import sample_pipeline

__all__ = [
    "DigitsClassifier",
    "class_coverage",
    "classifier_confidence",
    "classifier_outputs",
    "compute_fid_metrics",
    "digits_feature_function",
    "evaluate_samples",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "inception_feature_function",
    "inception_score",
    "load_digits_classifier",
    "nearest_neighbour_memorisation",
    "reference_floor",
    "sample_pipeline",
    "train_digits_classifier",
]
