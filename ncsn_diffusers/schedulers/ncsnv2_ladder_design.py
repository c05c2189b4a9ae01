"""NCSNv2 noise hyperparameters computed from the data.

Implements Techniques 1, 2 and 4 of Song & Ermon (2020), "Improved Techniques for Training Score-Based Generative
Models" (NeurIPS 2020), which pick the noise ladder sigma_1 > ... > sigma_L and the Langevin step size epsilon of
annealed Langevin dynamics without hand tuning:

- Technique 1 (initial noise scale): sigma_1 = max_{i != j} ||x_i - x_j||_2 over the training set, measured in the
  normalisation the model sees.
- Technique 2 (other noise scales): the ladder is geometric with ratio gamma = sigma_{i-1} / sigma_i, where gamma
  solves Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) = C for data dimension D (Phi is
  the standard normal CDF); the paper uses C ~ 0.5. L = 1 + log(sigma_1 / sigma_L) / log(gamma) rounded to nearest.
- Technique 4 (Langevin step size): with T steps per level, epsilon makes
  s_T^2 / sigma^2 = (1 - epsilon / sigma_L^2)^(2T) (gamma^2 - b) + b, b = (2 epsilon / sigma_L^2) / (1 - (1 -
  epsilon / sigma_L^2)^2), as close to 1 as possible. This is the variance a Gaussian N(0, (gamma sigma)^2) reaches
  after T Langevin steps x <- x + alpha s(x) + sqrt(2 alpha) z, alpha = epsilon sigma_i^2 / sigma_L^2, aimed at
  N(0, sigma^2) (the official code's convention, `langevin_convention="official"`).

With C = 0.567 the published ladders come out exactly: CIFAR-10 (D = 3072, sigma 50 -> 0.01) gives L = 232.007 ->
232 and CelebA 64x64 (D = 12288, sigma 90 -> 0.01) gives L = 500.036 -> 500; rounding up would give 233 and 501.
The ratio of Technique 4 is always above 1 (it lies between min(gamma^2, b) and max(gamma^2, b), both > 1), so
"~ 1" means its minimum over epsilon; the published epsilons (6.2e-6 and 3.3e-6 for T = 5) are those minimisers to
two significant figures, where the ratio is 1.055 and 1.031.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar
from scipy.special import ndtr

# ---------------------------------------------------------------------------------------------------------------------
# Technique 1: sigma_1 = largest pairwise distance
# ---------------------------------------------------------------------------------------------------------------------


def max_pairwise_distance(
    data: torch.Tensor,
    chunk_size: int = 1024,
    max_points: int | None = 10000,
    generator: torch.Generator | None = None,
) -> float:
    """The largest Euclidean distance max_{i != j} ||x_i - x_j||_2 between two samples (Technique 1's sigma_1).

    Distances are computed in float64 on blocks of `chunk_size` x `chunk_size` pairs, so memory stays O(chunk_size^2)
    whatever N is; the maximising pair is then re-measured directly, so the result does not depend on the chunking.
    Above `max_points` samples a random subset of `max_points` is used: the maximum over a subset can only be smaller,
    so the result is then a lower bound on the full-data sigma_1 (a cheap upper bound is twice the largest distance to
    any one sample).

    Args:
        data (`torch.Tensor`):
            The training set of shape (N, ...), already in the normalisation the model sees; each sample is flattened.
        chunk_size (`int`, defaults to 1024):
            Rows (and columns) per distance block.
        max_points (`int`, *optional*, defaults to 10000):
            Subsample to this many points when N is larger; `None` uses all N (O(N^2 D) time).
        generator (`torch.Generator`, *optional*):
            Drives the subsample, making it reproducible.

    Returns:
        `float`: sigma_1.
    """
    x = _validate_data(data)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}; pass e.g. chunk_size=1024.")
    if max_points is not None and max_points < 2:
        raise ValueError(f"max_points must be >= 2 or None, got {max_points}; pass e.g. max_points=10000.")
    if max_points is not None and x.shape[0] > max_points:
        perm_device = generator.device if generator is not None else "cpu"
        keep = torch.randperm(x.shape[0], generator=generator, device=perm_device)[:max_points]
        x = x[keep.to(x.device)]

    # Distances are translation invariant; centring keeps ||x||^2 small so the Gram expansion loses no digits.
    mean = x.mean(dim=0, dtype=torch.float64)
    best, best_pair = -1.0, (0, 1)
    n = x.shape[0]
    for i0 in range(0, n, chunk_size):
        a = x[i0 : i0 + chunk_size].to(torch.float64) - mean  # (B_a, D)
        for j0 in range(i0, n, chunk_size):
            b = x[j0 : j0 + chunk_size].to(torch.float64) - mean  # (B_b, D)
            # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, (B_a, B_b)
            d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
            value, flat = d2.max(), d2.argmax()
            if value.item() > best:
                best, best_pair = value.item(), (i0 + flat.item() // d2.shape[1], j0 + flat.item() % d2.shape[1])
    i, j = best_pair
    return torch.linalg.vector_norm(x[i].to(torch.float64) - x[j].to(torch.float64)).item()


# ---------------------------------------------------------------------------------------------------------------------
# Technique 2: the ratio gamma and the number of levels L
# ---------------------------------------------------------------------------------------------------------------------


def gamma_overlap(gamma: float, data_dim: int) -> float:
    """Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma), Technique 2's left-hand side.

    It approximates the probability that a sample drawn at noise level sigma_{i-1} = gamma sigma_i lies within three
    standard deviations of the typical radius sqrt(D) sigma_i of the next level.
    """
    a = math.sqrt(2.0 * data_dim) * (gamma - 1.0)
    return float(ndtr(a + 3.0 * gamma) - ndtr(a - 3.0 * gamma))


def solve_gamma(data_dim: int, C: float = 0.567) -> float:
    """The ratio gamma = sigma_{i-1} / sigma_i > 1 at which `gamma_overlap(gamma, D)` falls to C (Technique 2).

    The overlap is 0.9973 at gamma = 1 and tends to 0 as gamma grows when D >= 5; the smallest gamma > 1 where it
    crosses C is returned (found on a grid, then refined with Brent's method to ~1e-15).

    Args:
        data_dim (`int`):
            D, the number of scalars per sample (3072 for CIFAR-10).
        C (`float`, defaults to 0.567):
            The target overlap; 0.567 reproduces the published CIFAR-10 (L = 232) and CelebA (L = 500) ladders.

    Returns:
        `float`: gamma.
    """
    if not 0.0 < C < 1.0:
        raise ValueError(f"C must lie in (0, 1), got {C}; the paper uses C ~ 0.5 (C=0.567 reproduces its ladders).")
    if data_dim < 1:
        raise ValueError(
            f"data_dim must be a positive integer, got {data_dim}; pass the number of scalars per sample."
        )
    grid = 1.0 + np.geomspace(1e-9, 1e4, 2000)
    excess = np.array([gamma_overlap(g, data_dim) for g in grid]) - C
    below = np.flatnonzero(excess < 0)
    if excess[0] < 0 or below.size == 0:
        raise ValueError(
            f"No gamma > 1 gives gamma_overlap = C = {C} for data_dim D = {data_dim}: the overlap stays within "
            f"[{excess.min() + C:.4f}, {excess.max() + C:.4f}]. Choose C inside that range (Technique 2 needs D >= 5), "
            "or set the noise ladder by hand."
        )
    k = below[0]
    return brentq(
        lambda g: gamma_overlap(g, data_dim) - C, grid[k - 1], grid[k], xtol=1e-15, rtol=4 * np.finfo(float).eps
    )


def num_noise_levels(sigma_max: float, sigma_min: float, gamma: float) -> int:
    """L = 1 + log(sigma_1 / sigma_L) / log(gamma), rounded to the nearest integer (at least 2).

    Rounding to nearest (or down) reproduces the published L = 232 (CIFAR-10) and L = 500 (CelebA); the ladder that is
    then built, geometric from sigma_1 to sigma_L in L levels, has a ratio within 1e-5 (relative) of gamma there.
    """
    return max(2, round(1.0 + math.log(sigma_max / sigma_min) / math.log(gamma)))


# ---------------------------------------------------------------------------------------------------------------------
# Technique 4: the Langevin step size epsilon
# ---------------------------------------------------------------------------------------------------------------------


def langevin_variance_ratio(eps: float, sigma_min: float, gamma: float, T: int) -> float:
    """s_T^2 / sigma^2 = (1 - eps / sigma_L^2)^(2T) (gamma^2 - b) + b, b = (2 eps / sigma_L^2) / (1 - (1 - eps /
    sigma_L^2)^2).

    Each official-convention step x <- x + alpha (-x / sigma^2) + sqrt(2 alpha) z with alpha = eps sigma^2 / sigma_L^2
    maps the variance v to (1 - eps / sigma_L^2)^2 v + 2 eps sigma^2 / sigma_L^2, whose fixed point is b sigma^2; T steps
    from v = gamma^2 sigma^2 give the formula, at every level sigma alike.

    Args:
        eps (`float`): The step size epsilon, in (0, 2 sigma_L^2).
        sigma_min (`float`): sigma_L.
        gamma (`float`): The ladder ratio sigma_{i-1} / sigma_i.
        T (`int`): Langevin steps per noise level.
    """
    a = eps / sigma_min**2
    b = 2.0 * a / (1.0 - (1.0 - a) ** 2)
    return (1.0 - a) ** (2 * T) * (gamma**2 - b) + b


def solve_epsilon(sigma_min: float, gamma: float, steps_per_level: int, target: float = 1.0) -> float:
    """The smallest epsilon with `langevin_variance_ratio` = target, or its minimiser when target is out of reach.

    As eps grows from 0 the ratio falls from gamma^2 to a minimum above 1 and then rises again, so for target = 1
    (the paper's choice) the minimiser is returned; a target between that minimum and gamma^2 is hit exactly on the
    falling branch.

    Args:
        sigma_min (`float`): sigma_L.
        gamma (`float`): The ladder ratio sigma_{i-1} / sigma_i (> 1).
        steps_per_level (`int`): T.
        target (`float`, defaults to 1.0): The wanted s_T^2 / sigma^2, below gamma^2.

    Returns:
        `float`: epsilon, in (0, 2 sigma_L^2).
    """
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}; pass sigma_L, e.g. 0.01.")
    if gamma <= 1:
        raise ValueError(f"gamma must be > 1, got {gamma}; compute it with solve_gamma(D, C).")
    if steps_per_level < 1:
        raise ValueError(f"steps_per_level must be >= 1, got {steps_per_level}; the paper uses T = 5.")
    if not 0 < target < gamma**2:
        raise ValueError(f"target must lie in (0, gamma**2 = {gamma**2:.6g}), got {target}; the paper uses 1.0.")

    def ratio(e):
        return langevin_variance_ratio(e, sigma_min, gamma, steps_per_level)

    # Work in u = log(eps / sigma_L^2): the minimiser sits many decades below the upper end 2 sigma_L^2.
    u_grid = np.linspace(math.log(1e-12), math.log(2.0 - 1e-9), 2001)
    values = np.array([ratio(sigma_min**2 * math.exp(u)) for u in u_grid])
    k = int(values.argmin())
    lo, hi = u_grid[max(k - 1, 0)], u_grid[min(k + 1, len(u_grid) - 1)]
    u_star = minimize_scalar(
        lambda u: ratio(sigma_min**2 * math.exp(u)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}
    ).x
    eps_star = sigma_min**2 * math.exp(u_star)
    if ratio(eps_star) >= target:
        return eps_star
    # The ratio is gamma^2 > target as eps -> 0 and below target at eps_star: one crossing on the falling branch.
    return brentq(lambda e: ratio(e) - target, sigma_min**2 * 1e-15, eps_star, xtol=1e-30, rtol=1e-14)


# ---------------------------------------------------------------------------------------------------------------------
# All together
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NCSNv2Hyperparameters:
    """The outcome of Techniques 1, 2 and 4 on a data set; `scheduler_config()` gives the scheduler's arguments.

    `gamma` is the ratio of the ladder actually built, (sigma_1 / sigma_L)^(1 / (L - 1)), which `epsilon` was solved
    for; `gamma_target` is Technique 2's root before L was rounded; `subsampled` says sigma_max is a lower bound.
    """

    sigma_max: float
    sigma_min: float
    num_noise_levels: int
    steps_per_level: int
    epsilon: float
    gamma: float
    gamma_target: float
    data_dim: int
    variance_ratio: float
    subsampled: bool

    def scheduler_config(self) -> dict:
        """Keyword arguments for `AnnealedLangevinScheduler(**config)` or `AnnealedLangevinScheduler.from_config`."""
        fields = asdict(self)
        keys = ("sigma_max", "sigma_min", "num_noise_levels", "steps_per_level", "epsilon")
        # Every NCSNv2 config ends sampling with the denoising step (`denoise: true`).
        return {**{k: fields[k] for k in keys}, "langevin_convention": "official", "final_denoise": True}


def ncsnv2_hyperparameters(
    data: torch.Tensor,
    sigma_min: float = 0.01,
    steps_per_level: int = 5,
    C: float = 0.567,
    generator: torch.Generator | None = None,
    max_points: int | None = 10000,
    chunk_size: int = 1024,
) -> NCSNv2Hyperparameters:
    """Techniques 1, 2 and 4 of Song & Ermon (2020) applied to `data`; see [`ncsnv2_scheduler_config`]."""
    x = _validate_data(data)
    if steps_per_level < 1:
        raise ValueError(f"steps_per_level must be >= 1, got {steps_per_level}; the paper uses T = 5.")
    if not 0.0 < C < 1.0:
        raise ValueError(f"C must lie in (0, 1), got {C}; the paper uses C ~ 0.5 (C=0.567 reproduces its ladders).")
    if not sigma_min > 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}; pass the smallest noise level sigma_L, e.g. 0.01.")
    sigma_max = max_pairwise_distance(x, chunk_size=chunk_size, max_points=max_points, generator=generator)
    if sigma_min >= sigma_max:
        raise ValueError(
            f"sigma_min = {sigma_min} must be below sigma_1 = {sigma_max:.6g} (the largest pairwise distance of the "
            "data); pass a smaller sigma_min or check the data normalisation."
        )
    data_dim = x[0].numel()
    gamma_target = solve_gamma(data_dim, C)
    levels = num_noise_levels(sigma_max, sigma_min, gamma_target)
    gamma = (sigma_max / sigma_min) ** (1.0 / (levels - 1))
    epsilon = solve_epsilon(sigma_min, gamma, steps_per_level)
    return NCSNv2Hyperparameters(
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        num_noise_levels=levels,
        steps_per_level=steps_per_level,
        epsilon=epsilon,
        gamma=gamma,
        gamma_target=gamma_target,
        data_dim=data_dim,
        variance_ratio=langevin_variance_ratio(epsilon, sigma_min, gamma, steps_per_level),
        subsampled=max_points is not None and x.shape[0] > max_points,
    )


def ncsnv2_scheduler_config(
    data: torch.Tensor,
    sigma_min: float = 0.01,
    steps_per_level: int = 5,
    C: float = 0.567,
    generator: torch.Generator | None = None,
    max_points: int | None = 10000,
    chunk_size: int = 1024,
) -> dict:
    """A ready `AnnealedLangevinScheduler` config from the data, by Techniques 1, 2 and 4 of Song & Ermon (2020).

    Args:
        data (`torch.Tensor`):
            The training set of shape (N, ...) in the exact normalisation the model sees.
        sigma_min (`float`, defaults to 0.01):
            sigma_L, the smallest noise level (kept as given).
        steps_per_level (`int`, defaults to 5):
            T, Langevin steps per noise level.
        C (`float`, defaults to 0.567):
            Technique 2's overlap target.
        generator (`torch.Generator`, *optional*):
            Drives the subsample of Technique 1 when N > `max_points`.
        max_points (`int`, *optional*, defaults to 10000):
            Subsample size for Technique 1 (the resulting sigma_max is then a lower bound); `None` uses all points.
        chunk_size (`int`, defaults to 1024):
            Block size of the pairwise-distance computation.

    Returns:
        `dict`: sigma_max, sigma_min, num_noise_levels, steps_per_level, epsilon, langevin_convention="official" and
        final_denoise=True.
        Use [`ncsnv2_hyperparameters`] for gamma, D and the achieved variance ratio.
    """
    return ncsnv2_hyperparameters(
        data, sigma_min, steps_per_level, C, generator, max_points, chunk_size
    ).scheduler_config()


def _validate_data(data: torch.Tensor) -> torch.Tensor:
    """Checks the training tensor and flattens it to (N, D)."""
    if not isinstance(data, torch.Tensor) or data.ndim < 2:
        raise ValueError(
            "data must be a torch.Tensor of shape (N, ...) with one sample per row; for scalar data pass data[:, None]."
        )
    if data.shape[0] < 2:
        raise ValueError(
            f"data needs at least 2 samples to measure a pairwise distance, got {data.shape[0]}; "
            "pass the training set, not one sample."
        )
    if not data.is_floating_point():
        data = data.to(torch.float64)
    if not torch.isfinite(data).all():
        raise ValueError("data contains NaN or inf; clean or re-normalise it before computing sigma_1.")
    return data.reshape(data.shape[0], -1)
