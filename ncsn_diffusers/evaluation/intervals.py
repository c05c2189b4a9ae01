"""Confidence intervals for a metric measured over several seeds, so that a choice between samplers rests on
differences larger than the measurement's own spread.

Each seed gives one value of the metric (an FD over N samples, a share of rough samples); the seeds are independent
draws, so Student's t-interval mean +- t_{n-1, (1 + level) / 2} s / sqrt(n) covers the metric's expectation at that
N with probability `level` when the per-seed values are near Gaussian. Two samplers scored on the same seeds (the same
starting noise, the same reference set) are compared through their per-seed differences, which removes the share of
the spread they have in common.
"""

import math

import numpy as np
from scipy import stats


def mean_interval(values, level: float = 0.95) -> dict:
    """
    Mean of per-seed `values` and the half-width of its Student t confidence interval.

    Args:
        values (sequence of `float`): one value per seed (at least 2 for an interval).
        level (`float`, defaults to 0.95): the coverage of the interval.

    Returns:
        `dict`: `mean`, `half_width` (`inf` for a single value: one seed says nothing of the spread), `std` (the
        sample standard deviation s, ddof = 1), `num_seeds`, `level`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.95.")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"`values` must be a non-empty sequence of finite numbers, got {list(x)}.")
    if x.size == 1:
        return {"mean": float(x[0]), "half_width": math.inf, "std": math.nan, "num_seeds": 1, "level": level}
    std = float(x.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1) * std / math.sqrt(x.size))
    return {"mean": float(x.mean()), "half_width": half_width, "std": std, "num_seeds": int(x.size), "level": level}


def paired_difference_interval(values_a, values_b, level: float = 0.95) -> dict:
    """
    The t-interval of the mean of per-seed differences a_i - b_i, for two samplers scored on the same seeds.
    `significant` is whether the interval excludes 0.

    Returns:
        `dict`: the keys of `mean_interval` for the differences, and `significant`.
    """
    a, b = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (values_a, values_b))
    if a.shape != b.shape:
        raise ValueError(f"Pair the values seed by seed: got {a.size} and {b.size} values.")
    result = mean_interval(a - b, level)
    result["significant"] = bool(abs(result["mean"]) > result["half_width"])
    return result


def format_interval(values, level: float = 0.95, digits: int = 2) -> str:
    """`mean ± half-width` of `mean_interval`, e.g. "8.50 ± 0.42"."""
    result = mean_interval(values, level)
    return f"{result['mean']:.{digits}f} ± {result['half_width']:.{digits}f}"
