"""Every feature-space metric of a set of samples against real data in one call: Fréchet distance, precision, recall,
density, coverage and KID.

The Fréchet distance says how far the samples are; precision and density say whether they look real (fidelity),
recall and coverage whether they reach all of the data (diversity), and KID is an unbiased distance that, unlike the
Fréchet distance, does not grow as the number of samples shrinks.
"""

import math
import warnings

import torch

from .kid import kernel_inception_distance
from .metrics import check_finite, frechet_distance
from .precision_recall import precision_recall_density_coverage


def evaluate_features(
    real_features,
    fake_features,
    nearest_k: int = 5,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    device: str | torch.device = "cpu",
) -> dict:
    """Scores generated features against real ones, in whatever space both come from (digits, DINOv2, Inception).

    Args:
        real_features (`torch.Tensor` or `np.ndarray` of shape `(N, D)`): features of real images.
        fake_features (`torch.Tensor` or `np.ndarray` of shape `(M, D)`): features of generated images.
        nearest_k (`int`, defaults to 5): k of precision, recall, density and coverage.
        kid_subsets (`int`, defaults to 100): KID subsets.
        kid_subset_size (`int`, defaults to 1000): KID subset size, capped at min(N, M).
        device (`str` or `torch.device`, defaults to `"cpu"`): where distances and kernels are computed, in float64.

    Returns:
        `dict`: `frechet_distance`, `precision`, `recall`, `density`, `coverage`, `kid_mean`, `kid_std`; the four
        k-nearest-neighbour metrics are NaN (with a warning) when either set has no more than `nearest_k` features.
    """
    check_finite(real_features, "real feature vectors")
    check_finite(fake_features, "generated feature vectors")
    kid_mean, kid_std = kernel_inception_distance(
        real_features, fake_features, subsets=kid_subsets, subset_size=kid_subset_size, device=device
    )
    if min(len(real_features), len(fake_features)) > nearest_k:
        neighbourhood = precision_recall_density_coverage(real_features, fake_features, k=nearest_k, device=device)
    else:
        warnings.warn(
            f"Precision, recall, density and coverage need more than k = {nearest_k} real and generated images, got "
            f"{len(real_features)} and {len(fake_features)}; they are reported as NaN.",
            stacklevel=2,
        )
        neighbourhood = dict.fromkeys(("precision", "recall", "density", "coverage"), math.nan)
    return {
        "frechet_distance": frechet_distance(fake_features, real_features),
        **neighbourhood,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    }
