"""Scoring samplers of one model on the digits over several seeds, with confidence intervals: the protocol behind
the tables of docs/sampling.md (`examples/choose_default_sampler.py`, `benchmarks/bench_few_step.py`)."""

import time

import numpy as np
import torch

from ..pipelines import NCSNPipeline
from .digits_metrics import evaluate_samples
from .intervals import mean_interval, paired_difference_interval


def score_sampler(unet, scheduler, calls: int | None, seed: int, num_samples: int, batch_size: int = 500) -> dict:
    """
    Draws `num_samples` images with `scheduler` in `calls` U-Net calls (the scheduler's own default if `None`),
    from one generator seeded `seed`, in batches of `batch_size`, and scores them with `evaluate_samples`.

    Returns:
        `dict`: `num_samples`, `fd`, `min_class` and `max_class` (the smallest and largest class share), `rough` (share of samples
        rougher than every training digit), `cpu_seconds` (process CPU time of the sampling) and `seconds` (wall).
    """
    pipe = NCSNPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    start, start_cpu, images = time.perf_counter(), time.process_time(), []
    for first in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - first)
        output = pipe(batch_size=count, num_inference_steps=calls, generator=generator, output_type="pt")
        images.append(output.images.float().cpu())
    return score_images(torch.cat(images), time.process_time() - start_cpu, time.perf_counter() - start)


def score_images(images: torch.Tensor, cpu_seconds: float, seconds: float) -> dict:
    """
    Scores sampled digits `images` (N, C, H, W) in [0, 1] with `evaluate_samples`, RGB ones (digits repeated over 3
    channels, as an NCSN++ folder draws them) by their channel mean, and returns the dict of [`score_sampler`] with
    the sampling's `cpu_seconds` and wall `seconds`.
    """
    if images.shape[1] == 3:
        images = images.mean(dim=1, keepdim=True)
    results = evaluate_samples(images)
    shares = np.asarray(results["class_counts"]) / results["num_samples"]
    return {
        "num_samples": images.shape[0],
        "fd": results["frechet_distance"],
        "min_class": float(shares.min()),
        "max_class": float(shares.max()),
        "rough": results["rough_fraction"],
        "cpu_seconds": cpu_seconds,
        "seconds": seconds,
    }


def comparison_table(cells: dict, calls: dict | None = None, level: float = 0.95) -> str:
    """
    A markdown table of `cells` (sampler name -> one `score_sampler` dict per seed, the same seeds in every row):
    FD mean ± the half-width of its `level` t-interval over seeds, the per-seed FDs, the paired difference to the row
    with the lowest mean FD (± its interval; "*" where the interval excludes 0), the class range, the rough share and
    the CPU-seconds per 1,000 samples.
    """
    best = min(cells, key=lambda name: np.mean([c["fd"] for c in cells[name]]))
    best_fd = [c["fd"] for c in cells[best]]
    lines = [
        f"| sampler | calls | FD ± {100 * level:.0f}% CI | FD per seed | FD - best (paired) | classes (min-max) | "
        "rough | CPU-s per 1000 |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for name, rows in cells.items():
        fd = [r["fd"] for r in rows]
        interval = mean_interval(fd, level)
        if name == best:
            difference = "best"
        else:
            paired = paired_difference_interval(fd, best_fd, level)
            difference = f"{paired['mean']:+.2f} ± {paired['half_width']:.2f}{'*' if paired['significant'] else ''}"
        samples = sum(r.get("num_samples", 0) for r in rows) or 1
        cpu_per_1000 = 1000 * sum(r["cpu_seconds"] for r in rows) / samples
        lines.append(
            f"| {name} | {(calls or {}).get(name, '')} | {interval['mean']:.2f} ± {interval['half_width']:.2f} | "
            f"{' / '.join(f'{v:.2f}' for v in fd)} | {difference} | "
            f"{100 * min(r['min_class'] for r in rows):.1f}-{100 * max(r['max_class'] for r in rows):.1f}% | "
            f"{100 * np.mean([r['rough'] for r in rows]):.1f}% | {cpu_per_1000:.0f} |"
        )
    return "\n".join(lines)


def few_call_goals(cells: dict, calls: dict, families: dict) -> list[str]:
    """
    Checks the few-call goals of docs/sampling.md ("Lowering the calls") for each sampler family: the rows (names in
    `cells`, U-Net calls in `calls`) of one sampler at several budgets. A family meets them when it has no more than
    2% rough samples from 10 calls up, every class 5-15% of the samples on every seed at every budget, and mean FD at
    its fewest calls within 1.3x the lowest mean FD of any row of the table.

    Args:
        cells (`dict`): sampler name -> one `score_sampler` dict per seed, as for `comparison_table`.
        calls (`dict`): sampler name -> U-Net calls.
        families (`dict`): family name -> the sampler names of its rows.

    Returns:
        `list[str]`: one line per family, "<family>: meets the goals" or the goals it misses, with the figures.
    """
    mean_fd = {name: float(np.mean([c["fd"] for c in rows])) for name, rows in cells.items()}
    best_fd = min(mean_fd.values())
    lines = []
    for family, names in families.items():
        misses = []
        rough = [name for name in names if calls[name] >= 10 and np.mean([c["rough"] for c in cells[name]]) > 0.02]
        if rough:
            misses.append("over 2% rough at " + ", ".join(f"{calls[n]} calls" for n in rough))
        skewed = [
            n
            for n in names
            if min(c["min_class"] for c in cells[n]) < 0.05 or max(c["max_class"] for c in cells[n]) > 0.15
        ]
        if skewed:
            misses.append("a class outside 5-15% at " + ", ".join(f"{calls[n]} calls" for n in skewed))
        fewest = min(names, key=lambda n: calls[n])
        ratio = mean_fd[fewest] / best_fd
        if ratio > 1.3:
            misses.append(f"FD at {calls[fewest]} calls {ratio:.2f}x the best row's")
        verdict = "meets the goals" if not misses else "misses: " + "; ".join(misses)
        lines.append(f"{family}: {verdict} (FD at {calls[fewest]} calls / best FD {best_fd:.2f} = {ratio:.2f})")
    return lines
