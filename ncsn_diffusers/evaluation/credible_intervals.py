"""Per-coordinate credible intervals from a finite set of posterior samples, at order-statistic positions that give
the nominal coverage.

If the truth x and n posterior samples are exchangeable (an exact sampler, x drawn from the prior and y from x), x
falls between the i-th and j-th smallest samples with probability (j - i) / (n + 1). The percentile interval that
`torch.quantile` gives, positions p (n - 1) + 1, is therefore too narrow for small n: its 5th to 95th percentile covers
(0.9 n - 0.9) / (n + 1) = 84.5% at n = 32 and 79% at n = 16, however exact the sampler. The positions p (n + 1)
(Weibull's; numpy's `method="weibull"`) cover (0.9 (n + 1)) / (n + 1) = 90% between order statistics, and close to it
with the linear interpolation between them (90.8% on Gaussian samples at n = 32).
"""

import torch


def sample_quantile(samples: torch.Tensor, q: float, dim: int = 0) -> torch.Tensor:
    """
    The q-quantile of `samples` along `dim` at the order-statistic position q (n + 1) (1-based), linearly interpolated
    and held at the smallest / largest sample outside [1, n]; numpy's `quantile(..., method="weibull")`.
    """
    if not 0 < q < 1:
        raise ValueError(f"q={q} must lie in (0, 1), e.g. 0.05.")
    n = samples.shape[dim]
    if n < 2:
        raise ValueError(f"A quantile needs at least 2 samples along dim {dim}; got {n}.")
    ordered = samples.sort(dim=dim).values
    position = min(max(q * (n + 1) - 1, 0.0), n - 1.0)  # 0-based
    below = int(position)
    above = min(below + 1, n - 1)
    fraction = position - below
    return ordered.select(dim, below) * (1 - fraction) + ordered.select(dim, above) * fraction


def sample_credible_interval(
    samples: torch.Tensor, level: float = 0.9, dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The central `level` credible interval of each coordinate from the posterior samples along `dim`, which covers a
    truth exchangeable with the samples with probability `level` (see the module's docstring).

    Args:
        samples (`torch.Tensor`): posterior samples, n >= 2 of them along `dim`.
        level (`float`, defaults to 0.9): the interval's probability.
        dim (`int`, defaults to 0): the samples' axis.

    Returns:
        `(low, high)`: tensors shaped like `samples` without `dim`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.9.")
    tail = (1 - level) / 2
    return sample_quantile(samples, tail, dim), sample_quantile(samples, 1 - tail, dim)
