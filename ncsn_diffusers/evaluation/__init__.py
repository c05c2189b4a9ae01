"""Offline sample-quality evaluation on the embedded digits, FD_DINOv2 through transformers, and standard FID / IS
through torch-fidelity; precision, recall, density, coverage and KID in each of these feature spaces.

`python -m ncsn_diffusers.evaluation --help` for the command.
"""

from .classifier import DigitsClassifier, classifier_outputs, load_digits_classifier, train_digits_classifier
from .credible_intervals import sample_credible_interval, sample_quantile
from .digits_metrics import evaluate_samples, reference_floor
from .dinov2 import DEFAULT_FEATURE_MODEL, compute_dinov2_metrics, dinov2_feature_function, load_dinov2
from .feature_metrics import evaluate_features
from .fid import compute_fid_metrics, digits_feature_function, inception_feature_function
from .intervals import mean_interval, paired_difference_interval
from .kid import kernel_inception_distance
from .metrics import (
    check_finite,
    class_coverage,
    classifier_confidence,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_score,
    nearest_neighbour_memorisation,
)
from .precision_recall import precision_recall_density_coverage
from .sampling import sample_pipeline

__all__ = [
    "DEFAULT_FEATURE_MODEL",
    "DigitsClassifier",
    "check_finite",
    "class_coverage",
    "classifier_confidence",
    "classifier_outputs",
    "compute_dinov2_metrics",
    "compute_fid_metrics",
    "digits_feature_function",
    "dinov2_feature_function",
    "evaluate_features",
    "evaluate_samples",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "inception_feature_function",
    "inception_score",
    "kernel_inception_distance",
    "load_digits_classifier",
    "load_dinov2",
    "mean_interval",
    "nearest_neighbour_memorisation",
    "paired_difference_interval",
    "precision_recall_density_coverage",
    "reference_floor",
    "sample_credible_interval",
    "sample_pipeline",
    "sample_quantile",
    "train_digits_classifier",
]
