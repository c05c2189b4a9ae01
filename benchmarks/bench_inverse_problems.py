"""Posterior sampling on the held-out digits: box and random-pixel masks, 4x super-resolution (16 -> 4), Gaussian blur
and denoising, with NCSNPosteriorPipeline's methods at equal U-Net calls. Per task, method and seed: the PSNR of the
posterior mean, the share of posterior samples the digits classifier gives the true class, and the coverage of the
per-pixel 90% credible intervals over the truth (see `benchmarks/inverse_tasks.py`).

python -m benchmarks.bench_inverse_problems --pipeline ncsn-digits [--num_images 8] [--seeds 0 1] \
    [--output results.jsonl] [--figure docs/inverse_problems.png]
python -m benchmarks.inverse_tasks results.jsonl   # the table over digits and seeds, with confidence intervals
"""

import argparse
import time
from pathlib import Path

import torch

from benchmarks.inverse_tasks import (
    IMAGE_SHAPE,
    RUN_HEADER,
    add_protocol_args,
    posterior_metrics,
    problems,
    report_run,
)
from ncsn_diffusers import NCSNPosteriorPipeline
from ncsn_diffusers.evaluation import load_digits_classifier

RESOLUTION = IMAGE_SHAPE[-1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_protocol_args(parser)
    parser.add_argument("--num_inference_steps", type=int, default=101, help="U-Net calls per chain.")
    parser.add_argument("--methods", nargs="+", default=["langevin", "mmps", "dps"])
    parser.add_argument("--cg_iterations", type=int, default=1)
    parser.add_argument("--dps_step_size", type=float, default=None, help="DPS's zeta (the pipeline's default).")
    parser.add_argument(
        "--final_denoise", type=int, default=None, choices=[0, 1], help="Override the sampler's final denoising step."
    )
    parser.add_argument("--figure", default=None, help="Write a grid: measurement, 4 samples, mean, truth.")
    return parser.parse_args(argv)


def measurement_image(operator, y: torch.Tensor) -> torch.Tensor:
    """A^T y normalised by A^T A 1, what the measurement shows in image space (0 where nothing is observed)."""
    weight = operator.A_adjoint(operator.A(torch.ones(1, *IMAGE_SHAPE)))
    return (operator.A_adjoint(y) / weight.clamp_min(1e-6)).clamp(0, 1)


def sample_posterior(pipe, operator, noise_std, method, y, seed, args) -> torch.Tensor:
    """Posterior samples `(N, num_samples, C, H, W)` in [0, 1]."""
    settings = {} if args.final_denoise is None else {"final_denoise": bool(args.final_denoise)}
    if args.dps_step_size is not None:
        settings["dps_step_size"] = args.dps_step_size
    return pipe(
        y,
        operator,
        noise_std,
        method=method,
        batch_size=args.num_samples,
        num_inference_steps=args.num_inference_steps,
        cg_iterations=args.cg_iterations,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **settings,
    ).images.view(len(y), args.num_samples, *IMAGE_SHAPE)


def plot(rows, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.0 * columns, 1.05 * len(rows)), squeeze=False)
    for r, (name, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=6)
    titles = ["measurement", *[f"sample {i + 1}" for i in range(columns - 3)], "mean", "truth"]
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=7)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    pipe = NCSNPosteriorPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    classifier, _ = load_digits_classifier(RESOLUTION)
    scheduler = pipe.scheduler
    print(
        f"{args.num_images} held-out digits per seed x {args.num_samples} posterior samples, {args.num_inference_steps}"
        f" U-Net calls, {type(scheduler).__name__} over sigma {scheduler.config.sigma_max:.3g}.."
        f"{scheduler.config.sigma_min} (mmps: {args.cg_iterations} CG step(s)); 90% intervals should cover 85-95%"
    )
    print(RUN_HEADER)
    figure_rows = []
    for seed, digits, images, labels, name, operator, noise_std, y in problems(args):
        for method in args.methods:
            start = time.perf_counter()
            samples = sample_posterior(pipe, operator, noise_std, method, y, seed, args)
            seconds = time.perf_counter() - start
            metrics = posterior_metrics(samples, images, labels, classifier)
            label = method if args.final_denoise is None else f"{method}, final_denoise={args.final_denoise}"
            report_run(
                dict(task=name, method=label, seed=seed, digits=digits, seconds=seconds, **metrics), args.output
            )
            if method == args.methods[0] and seed == args.seeds[0]:
                shown = measurement_image(operator, y[:1])
                panels = [shown[0], *samples[0, :4], samples[0].mean(0), images[0]]
                figure_rows.append((name.split(",")[0], panels))
    if args.figure:
        plot(figure_rows, Path(args.figure))
        print(f"Wrote {args.figure}")


if __name__ == "__main__":
    main()
