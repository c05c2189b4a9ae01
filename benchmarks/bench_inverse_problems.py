"""Posterior sampling on the held-out digits: box and random-pixel masks, 4x super-resolution (16 -> 4), Gaussian blur
and denoising, with NCSNPosteriorPipeline's methods at equal U-Net calls. Per task and method: the PSNR of the
posterior mean, the share of posterior samples the digits classifier gives the true class, and the coverage of the
per-pixel 90% credible intervals (5th to 95th percentile of the samples) over the truth.

python -m benchmarks.bench_inverse_problems --pipeline ncsn-digits [--num_images 8] [--figure docs/inverse_problems.png]
"""

import argparse
import time
from pathlib import Path

import torch

from ncsn_diffusers import NCSNPosteriorPipeline, load_digits_images
from ncsn_diffusers.evaluation import classifier_outputs, load_digits_classifier
from ncsn_diffusers.inverse import AveragePoolOperator, GaussianBlurOperator, IdentityOperator, MaskOperator

RESOLUTION = 16
IMAGE_SHAPE = (1, RESOLUTION, RESOLUTION)


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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="ncsn-digits", help="A saved NCSNPipeline folder or Hub repo id.")
    parser.add_argument("--num_images", type=int, default=8, help="Held-out digits per task.")
    parser.add_argument("--num_samples", type=int, default=32, help="Posterior samples per digit.")
    parser.add_argument("--num_inference_steps", type=int, default=101, help="U-Net calls per chain.")
    parser.add_argument("--methods", nargs="+", default=["langevin", "mmps", "dps"])
    parser.add_argument("--tasks", nargs="+", type=int, default=None, help="Indices of the tasks to run (all).")
    parser.add_argument("--cg_iterations", type=int, default=1)
    parser.add_argument("--dps_step_size", type=float, default=None, help="DPS's zeta (the pipeline's default).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help="Write a grid: measurement, 4 samples, mean, truth.")
    return parser.parse_args(argv)


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image, for images in [0, 1]."""
    return -10 * torch.log10((estimate - truth).pow(2).flatten(1).mean(1))


def measurement_image(operator, y: torch.Tensor) -> torch.Tensor:
    """A^T y normalised by A^T A 1, what the measurement shows in image space (0 where nothing is observed)."""
    weight = operator.A_adjoint(operator.A(torch.ones(1, *IMAGE_SHAPE)))
    return (operator.A_adjoint(y) / weight.clamp_min(1e-6)).clamp(0, 1)


def run_task(pipe, classifier, operator, noise_std, method, images, labels, args):
    generator = torch.Generator().manual_seed(args.seed)
    y = operator.A(images)
    y = y + noise_std * torch.randn(y.shape, generator=generator)
    start = time.perf_counter()
    samples = pipe(
        y,
        operator,
        noise_std,
        method=method,
        batch_size=args.num_samples,
        num_inference_steps=args.num_inference_steps,
        cg_iterations=args.cg_iterations,
        **({} if args.dps_step_size is None else {"dps_step_size": args.dps_step_size}),
        generator=generator,
        output_type="pt",
    ).images.view(len(images), args.num_samples, *IMAGE_SHAPE)
    seconds = time.perf_counter() - start
    return dict(**posterior_metrics(samples, images, labels, classifier), seconds=seconds), y, samples


def posterior_metrics(samples: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, classifier) -> dict:
    """PSNR of the posterior mean, class kept, 90% interval coverage; samples `(N, num_samples, C, H, W)` in [0, 1]."""
    mean = samples.mean(1)
    low, high = samples.quantile(0.05, dim=1), samples.quantile(0.95, dim=1)
    covered = ((images >= low) & (images <= high)).float().mean().item()
    logits = classifier_outputs(classifier, samples.flatten(0, 1))[1]
    agreement = (logits.argmax(1) == labels.repeat_interleave(samples.shape[1])).float().mean().item()
    return dict(psnr=psnr(mean, images).mean().item(), agreement=agreement, coverage=covered)


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
    images, labels = load_digits_images(RESOLUTION, split="test")
    images, labels = images[: args.num_images], labels[: args.num_images]
    classifier, _ = load_digits_classifier(RESOLUTION)
    scheduler = pipe.scheduler
    print(
        f"{args.num_images} held-out digits x {args.num_samples} posterior samples, {args.num_inference_steps} U-Net "
        f"calls, {type(scheduler).__name__} over sigma {scheduler.config.sigma_max:.3g}..{scheduler.config.sigma_min}"
        f" (mmps: {args.cg_iterations} CG step(s)); 90% intervals should cover 85-95%"
    )
    print("| task | method | PSNR of the mean (dB) | class kept | 90% coverage | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    chosen = list(tasks(args.seed).items())
    chosen = [chosen[i] for i in args.tasks] if args.tasks else chosen
    figure_rows = []
    for name, (operator, noise_std) in chosen:
        for method in args.methods:
            row, y, samples = run_task(pipe, classifier, operator, noise_std, method, images, labels, args)
            print(
                f"| {name} | {method} | {row['psnr']:.2f} | {row['agreement']:.1%} | {row['coverage']:.1%} | "
                f"{row['seconds']:.0f} |",
                flush=True,
            )
            if method == args.methods[0]:
                shown = measurement_image(operator, y[:1])
                panels = [shown[0], *samples[0, :4], samples[0].mean(0), images[0]]
                figure_rows.append((name.split(",")[0], panels))
    if args.figure:
        plot(figure_rows, Path(args.figure))
        print(f"Wrote {args.figure}")


if __name__ == "__main__":
    main()
