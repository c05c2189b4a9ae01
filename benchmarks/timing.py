"""Wall-clock timing shared by the benchmarks: warm up, then interleaved repeats, reported as medians.

Interleaving (a, b, c, a, b, c, ...) makes the ratios robust to the load of a shared machine drifting during the run.
"""

import statistics
import time
from collections.abc import Callable


def median_seconds(fns: dict[str, Callable[[], None]], repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """The median wall time of one call of each function, measured round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in runs.items()}
