"""Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) of sample features.

Each real feature x_i (i = 1..N) gets the ball B(x_i, NND_k(x_i)) whose radius is its distance to its k-th nearest
other real feature; the union of the balls estimates the support of the real distribution. Likewise the samples y_j
(j = 1..M) get balls B(y_j, NND_k(y_j)). A Fréchet distance mixes two failures these separate:

- precision = (1/M) sum_j 1[y_j in some real ball]: the share of samples that look real (fidelity).
- recall = (1/N) sum_i 1[x_i in some sample ball]: the share of the data the samples reach (diversity).
- density = (1/(kM)) sum_j sum_i 1[y_j in B(x_i, NND_k(x_i))]: fidelity counted by overlapping real balls, near 1
  for samples distributed as the data, and not inflated by real outliers as precision is.
- coverage = (1/N) sum_i 1[some y_j in B(x_i, NND_k(x_i))]: diversity measured on real balls only, not inflated by
  sample outliers as recall is.

Balls are closed (distance <= radius), distances Euclidean in float64.
"""

import torch

from .metrics import _as_float64


def _distance_batches(a: torch.Tensor, b: torch.Tensor, batch_size: int):
    """Yields (rows, distances of shape (len(rows), len(b))) for consecutive row batches of `a`."""
    for start in range(0, a.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        yield rows, torch.cdist(a[rows], b)


def nearest_neighbour_radii(features: torch.Tensor, k: int = 5, batch_size: int = 1024) -> torch.Tensor:
    """NND_k(x_i): the distance of each row of `features` (N, D) to its k-th nearest other row, shape (N,)."""
    radii = torch.empty(features.shape[0], dtype=features.dtype, device=features.device)
    for rows, distances in _distance_batches(features, features, batch_size):
        radii[rows] = distances.kthvalue(k + 1, dim=1).values  # the smallest distance, 0, is the point itself
    return radii


def precision_recall_density_coverage(
    real_features, fake_features, k: int = 5, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> dict:
    """Precision, recall, density and coverage of samples against real data, in any feature space.

    Args:
        real_features (`torch.Tensor` or `np.ndarray` of shape `(N, D)`): features x_i of real images.
        fake_features (`torch.Tensor` or `np.ndarray` of shape `(M, D)`): features y_j of generated images.
        k (`int`, defaults to 5): the k of the k-nearest-neighbour balls; 5 as in Naeem et al. (2020).
        batch_size (`int`, defaults to 1024): rows per distance batch, a `(batch_size, max(N, M))` float64 matrix;
            the results do not depend on it.
        device (`str` or `torch.device`, defaults to `"cpu"`): where the distances are computed.

    Returns:
        `dict`: `precision`, `recall`, `density`, `coverage` (floats; precision, recall and coverage in [0, 1]).
    """
    real = torch.as_tensor(_as_float64(real_features), device=device)
    fake = torch.as_tensor(_as_float64(fake_features), device=device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"Features must have shapes (N, D) and (M, D), got {tuple(real.shape)} and {tuple(fake.shape)}."
        )
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(
            f"k = {k} nearest neighbours need more than {k} real and generated features, got {real.shape[0]} and "
            f"{fake.shape[0]}; pass more images or a smaller k."
        )
    real_radii = nearest_neighbour_radii(real, k, batch_size)  # (N,)
    fake_radii = nearest_neighbour_radii(fake, k, batch_size)  # (M,)

    fake_in_real_balls = torch.zeros(fake.shape[0], dtype=torch.float64, device=device)  # sum_i 1[y_j in B(x_i)]
    real_in_fake_balls = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
    real_ball_has_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
    for rows, distances in _distance_batches(fake, real, batch_size):  # (b, N): d(y_j, x_i)
        inside_real = distances <= real_radii[None, :]
        fake_in_real_balls[rows] = inside_real.sum(dim=1, dtype=torch.float64)
        real_ball_has_fake |= inside_real.any(dim=0)
        real_in_fake_balls |= (distances <= fake_radii[rows, None]).any(dim=0)

    return {
        "precision": float((fake_in_real_balls > 0).double().mean()),
        "recall": float(real_in_fake_balls.double().mean()),
        "density": float(fake_in_real_balls.sum() / (k * fake.shape[0])),
        "coverage": float(real_ball_has_fake.double().mean()),
    }
