"""Kernel Inception Distance, KID (Bińkowski et al. 2018), in any feature space, as torch-fidelity computes it.

KID is the unbiased estimate of the squared maximum mean discrepancy MMD^2 between the feature distributions under the
cubic polynomial kernel k(x, y) = (x . y / D + 1)^3, averaged over random subsets. Unlike the Fréchet distance it has
no bias from the sample size, so KIDs from different numbers of images can be compared.
"""

import numpy as np
import torch

from .metrics import _as_float64


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None, coef0=1.0):
    """k(x, y) = (gamma x . y + coef0)^degree for rows of `x` (m, D) and `y` (n, D), shape (m, n); gamma = 1/D."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, **kernel) -> float:
    """Unbiased MMD^2 of two samples of equal size m (Gretton et al. 2012, Eq. 3; KID's and torch-fidelity's form).

    MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.
    """
    m = x.shape[0]
    k_xx, k_yy, k_xy = (
        polynomial_kernel(x, x, **kernel),
        polynomial_kernel(y, y, **kernel),
        polynomial_kernel(x, y, **kernel),
    )
    off_diagonal = k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()
    return float(off_diagonal / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    real_features,
    fake_features,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 2020,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """KID: mean and standard deviation of MMD^2_u over `subsets` random subsets, drawn as torch-fidelity draws them.

    Subset s takes `subset_size` generated and then `subset_size` real features without replacement, with
    `numpy.random.RandomState(seed).choice`; torch-fidelity's defaults (100 subsets of 1000, cubic kernel, seed 2020)
    are the defaults here. Where either set is smaller than `subset_size`, the subsets take all of the smaller set's
    size instead of failing as torch-fidelity does; when that takes both whole sets, every subset gives the same
    MMD^2_u, computed once, with standard deviation 0 (it measures the spread over subsets, not the estimator's error).

    Args:
        real_features (`torch.Tensor` or `np.ndarray` of shape `(N, D)`): features of real images.
        fake_features (`torch.Tensor` or `np.ndarray` of shape `(M, D)`): features of generated images.
        subsets (`int`, defaults to 100): number of subsets.
        subset_size (`int`, defaults to 1000): m, the size of each subset on each side.
        degree, gamma, coef0: the polynomial kernel (gamma defaults to 1/D).
        seed (`int`, defaults to 2020): seed of the subset draws (torch-fidelity's `rng_seed`).
        device (`str` or `torch.device`, defaults to `"cpu"`): where the kernels are computed, in float64.

    Returns:
        `tuple[float, float]`: the mean and the (population) standard deviation of MMD^2_u over the subsets.
    """
    real = torch.as_tensor(_as_float64(real_features), device=device)
    fake = torch.as_tensor(_as_float64(fake_features), device=device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"Features must have shapes (N, D) and (M, D), got {tuple(real.shape)} and {tuple(fake.shape)}."
        )
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs subsets >= 1 of at least 2 features per side, got {subsets} subsets of {m}.")
    if m == real.shape[0] == fake.shape[0]:  # every subset is both whole sets, and MMD^2_u ignores their order
        return mmd2_unbiased(fake, real, degree=degree, gamma=gamma, coef0=coef0), 0.0
    rng = np.random.RandomState(seed)
    mmds = []
    for _ in range(subsets):
        fake_subset = fake[torch.from_numpy(rng.choice(fake.shape[0], m, replace=False)).to(device)]
        real_subset = real[torch.from_numpy(rng.choice(real.shape[0], m, replace=False)).to(device)]
        mmds.append(mmd2_unbiased(fake_subset, real_subset, degree=degree, gamma=gamma, coef0=coef0))
    return float(np.mean(mmds)), float(np.std(mmds))
