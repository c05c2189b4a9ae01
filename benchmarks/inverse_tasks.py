"""The digits inverse problems that bench_inverse_problems and bench_inverse_libraries share: the tasks, the
measurements (held-out digits, seeded noise), the per-digit metrics, and the table with confidence intervals.

Seed s takes held-out digits s * N .. (s + 1) * N - 1, its own measurement noise, random mask and chains, so every digit
of every seed is an independent unit; the table gives each metric's mean over them with its 95% Student-t interval
(`ncsn_diffusers.evaluation.intervals`), and the PSNR difference of two methods paired digit by digit.

python -m benchmarks.inverse_tasks benchmarks/results/inverse_problems_3000.jsonl   # prints the table of a results file
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from ncsn_diffusers import load_digits_images
from ncsn_diffusers.evaluation import (
    classifier_outputs,
    mean_interval,
    paired_difference_interval,
    sample_credible_interval,
)
from ncsn_diffusers.inverse import AveragePoolOperator, GaussianBlurOperator, IdentityOperator, MaskOperator

RESOLUTION = 16
IMAGE_SHAPE = (1, RESOLUTION, RESOLUTION)
LEVEL = 0.9
# Rows of other libraries' samplers (bench_inverse_libraries), set against this package's best.
LIBRARY_PREFIXES = ("azula-", "deepinv-")


def tasks(seed: int) -> dict:
    """name -> (operator, sigma_y): the measurements of the table."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "box mask 8x8, sigma_y 0.05": (MaskOperator.box(IMAGE_SHAPE, 4, 4, 8, 8), 0.05),
        "random mask 25% kept, sigma_y 0.05": (MaskOperator.random(IMAGE_SHAPE, 0.25, generator), 0.05),
        "4x super-resolution 16->4, sigma_y 0.05": (AveragePoolOperator(4), 0.05),
        "Gaussian blur std 1.5 px, sigma_y 0.05": (GaussianBlurOperator(1.5, (RESOLUTION, RESOLUTION)), 0.05),
        "denoising, sigma_y 0.2": (IdentityOperator(), 0.2),
    }


def add_protocol_args(parser: argparse.ArgumentParser, num_images: int = 8, num_samples: int = 32) -> None:
    parser.add_argument("--pipeline", default="ncsn-digits", help="A saved NCSNPipeline folder or Hub repo id.")
    parser.add_argument("--num_images", type=int, default=num_images, help="Held-out digits per task and seed.")
    parser.add_argument("--num_samples", type=int, default=num_samples, help="Posterior samples per digit.")
    parser.add_argument("--tasks", nargs="+", type=int, default=None, help="Indices of the tasks to run (all).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="Each seed: its own digits and noise.")
    parser.add_argument("--output", default=None, help="Append each run's per-digit metrics to this JSON-lines file.")


def chosen_tasks(seed: int, indices) -> list:
    chosen = list(tasks(seed).items())
    return [chosen[i] for i in indices] if indices else chosen


def held_out_digits(seed: int, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed s's block of held-out digits and labels."""
    images, labels = load_digits_images(RESOLUTION, split="test")
    block = slice(seed * num_images, (seed + 1) * num_images)
    if block.stop > len(images):
        raise ValueError(f"Only {len(images)} held-out digits: seeds x num_images must stay within them.")
    return images[block], labels[block]


def noisy_measurement(operator, noise_std: float, images: torch.Tensor, seed: int) -> torch.Tensor:
    """y = A x + n in the units of images in [0, 1], the same for every method at a seed."""
    y = operator.A(images)
    return y + noise_std * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))


def problems(args):
    """(seed, digit indices, images, labels, task name, A, sigma_y, y) for every seed and task that `args` name."""
    for seed in args.seeds:
        images, labels = held_out_digits(seed, args.num_images)
        digits = list(range(seed * args.num_images, (seed + 1) * args.num_images))
        for name, (operator, noise_std) in chosen_tasks(seed, args.tasks):
            y = noisy_measurement(operator, noise_std, images, seed)
            yield seed, digits, images, labels, name, operator, noise_std, y


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image, for images in [0, 1]."""
    return -10 * torch.log10((estimate - truth).pow(2).flatten(1).mean(1))


def posterior_metrics(samples: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, classifier) -> dict:
    """
    Per digit, from samples `(N, num_samples, C, H, W)` in [0, 1]: the PSNR of the posterior mean, the share of samples
    the classifier gives the true class, and the share of pixels whose 90% credible interval holds the truth, with the
    intervals at the order-statistic positions that cover an exchangeable truth at 90% (`coverage`) and as the 5th to
    95th percentile of torch.quantile (`coverage_percentile`, 84.5% for an exact sampler at 32 samples).
    """
    low, high = sample_credible_interval(samples, LEVEL, dim=1)
    tail = (1 - LEVEL) / 2
    low_pct, high_pct = samples.quantile(tail, dim=1), samples.quantile(1 - tail, dim=1)
    logits = classifier_outputs(classifier, samples.flatten(0, 1))[1]
    agrees = (logits.argmax(1) == labels.repeat_interleave(samples.shape[1])).float().view(len(images), -1)
    return {
        "psnr": psnr(samples.mean(1), images).tolist(),
        "agreement": agrees.mean(1).tolist(),
        "coverage": ((images >= low) & (images <= high)).float().flatten(1).mean(1).tolist(),
        "coverage_percentile": ((images >= low_pct) & (images <= high_pct)).float().flatten(1).mean(1).tolist(),
    }


def report_run(row: dict, output) -> None:
    """Prints one run's row (means over its digits) and appends its per-digit metrics to `output`."""
    means = {key: mean(row[key]) for key in ("psnr", "agreement", "coverage", "coverage_percentile")}
    print(
        f"| {row['task']} | {row['method']} | {row['seed']} | {means['psnr']:.2f} | {means['agreement']:.1%} | "
        f"{means['coverage']:.1%} | {means['coverage_percentile']:.1%} | {row['seconds']:.0f} |",
        flush=True,
    )
    if output:
        with open(output, "a") as file:
            file.write(json.dumps(row) + "\n")


RUN_HEADER = (
    "| task | method | seed | PSNR of the mean (dB) | class kept | 90% coverage | percentile coverage | seconds |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def print_table(path: str) -> None:
    """Per task and method, each metric's mean over all digits of all seeds, +- its 95% interval; then, per task, the
    PSNR of this package's best method minus the best library method's, paired digit by digit."""
    runs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    pooled = defaultdict(lambda: defaultdict(list))  # (task, method) -> metric -> per-digit values, seed-ordered
    seconds = defaultdict(float)
    for run in sorted(runs, key=lambda r: r["seed"]):
        for key in ("psnr", "agreement", "coverage", "coverage_percentile", "digits"):
            pooled[run["task"], run["method"]][key] += run[key]
        seconds[run["task"], run["method"]] += run["seconds"]

    def interval(values, scale=1.0, digits=2):
        result = mean_interval([v * scale for v in values])
        return f"{result['mean']:.{digits}f} ± {result['half_width']:.{digits}f}"

    print(
        "| task | method | digits | PSNR of the mean (dB) | class kept (%) | 90% coverage (%) | percentile coverage (%)"
        " | seconds |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    by_task = defaultdict(list)
    for task, method in pooled:
        by_task[task].append(method)
    for task, methods in by_task.items():  # grouped by task, in the order the runs came
        for method in methods:
            values = pooled[task, method]
            print(
                f"| {task} | {method} | {len(values['psnr'])} | {interval(values['psnr'])} | "
                f"{interval(values['agreement'], 100, 1)} | {interval(values['coverage'], 100, 1)} | "
                f"{interval(values['coverage_percentile'], 100, 1)} | {seconds[task, method]:.0f} |"
            )
    print(
        "\n| task | this package's best PSNR | the libraries' best | difference (dB), paired over digits | significant |"
    )
    print("| --- | --- | --- | ---: | --- |")
    for task, methods in by_task.items():
        ours = [m for m in methods if not m.startswith(LIBRARY_PREFIXES)]
        libraries = [m for m in methods if m.startswith(LIBRARY_PREFIXES)]
        if not ours or not libraries:
            continue
        best_ours, best_library = (
            max(group, key=lambda m: mean(pooled[task, m]["psnr"])) for group in (ours, libraries)
        )
        a, b = pooled[task, best_ours], pooled[task, best_library]
        if a["digits"] != b["digits"]:
            print(f"| {task} | {best_ours} | {best_library} | (not on the same digits) | |")
            continue
        difference = paired_difference_interval(a["psnr"], b["psnr"])
        print(
            f"| {task} | {best_ours} | {best_library} | {difference['mean']:+.2f} ± {difference['half_width']:.2f} | "
            f"{'yes' if difference['significant'] else 'no'} |"
        )


def mean(values) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="A JSON-lines file written by the benchmarks' --output.")
    print_table(parser.parse_args().results)
