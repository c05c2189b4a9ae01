#!/usr/bin/env python
"""Inpainting held-out digits with annealed Langevin dynamics (Song & Ermon 2019, Sec. 5, Fig. 6).

    accelerate launch train_ncsn.py --output_dir ncsn-digits     # the default run
    python examples/inpaint_digits.py --pipeline ncsn-digits --sampler annealed_langevin --num_inference_steps 201

Masks the bottom half of every held-out digit, completes it with `NCSNInpaintPipeline`, and prints how often the
evaluator's digits classifier (`ncsn_diffusers.evaluation`) gives the completion the original's class, beside the
same rate for the top half alone (the bottom left black, i.e. the masked input scored as is), for the top half
completed by the training digits' mean bottom half, and for the originals. Writes a figure: per row the masked input,
several completions and the original.
"""

import argparse
import time
from pathlib import Path

import torch

from ncsn_diffusers import NCSNInpaintPipeline, NCSNPipeline, load_digits_images
from ncsn_diffusers.evaluation import classifier_outputs, load_digits_classifier


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="ncsn-digits", help="A saved NCSNPipeline folder or Hub repo id.")
    parser.add_argument(
        "--output",
        default="outputs/inpainting.png",
        help="Where to write the figure (the repository's own: --output docs/inpainting.png).",
    )
    parser.add_argument("--num_images", type=int, default=360, help="Held-out digits to complete (360 = all).")
    parser.add_argument("--figure_rows", type=int, default=8, help="Digits shown in the figure.")
    parser.add_argument("--figure_completions", type=int, default=5, help="Completions per digit in the figure.")
    parser.add_argument("--batch_size", type=int, default=120, help="Images per pipeline call.")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Defaults to the pipeline's own.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sampler",
        choices=("default", "saved", "annealed_langevin", "stochastic_heun"),
        default="default",
        help="default: the sampler NCSNInpaintPipeline.from_pretrained gives (annealed Langevin, 10 levels x 10 steps "
        "+ denoising over the saved range); saved: the scheduler saved for unconditional sampling; annealed_langevin: Algorithm 1 on 10 levels of its range, T = 20, "
        "+ denoising (the paper's inpainting); stochastic_heun: EDM's sampler with gamma = 1 at every level.",
    )
    args = parser.parse_args(argv)
    if min(args.num_images, args.figure_rows, args.figure_completions, args.batch_size) < 1:
        parser.error("--num_images, --figure_rows, --figure_completions and --batch_size must be positive.")
    return args


def bottom_half_mask(resolution: int) -> torch.Tensor:
    """(1, R, R), 1 (white, generate) on the bottom half."""
    mask = torch.zeros(1, resolution, resolution)
    mask[:, resolution // 2 :] = 1.0
    return mask


def use_sampler(pipe, sampler: str):
    """Replaces the pipeline's scheduler by `sampler` over the same sigma range and data range."""
    from ncsn_diffusers import AnnealedLangevinScheduler, StochasticHeunScheduler

    config = pipe.scheduler.config
    if sampler == "annealed_langevin":
        pipe.scheduler = AnnealedLangevinScheduler(
            sigma_max=config.sigma_max, sigma_min=config.sigma_min, num_noise_levels=10, steps_per_level=20,
            relative_epsilon=0.5, final_denoise=True, data_range=tuple(config.data_range),
        )  # fmt: skip
    elif sampler == "stochastic_heun":
        pipe.scheduler = StochasticHeunScheduler.from_config(
            config, s_churn=1e6, s_gamma_max=1.0, s_tmin=0.0, s_tmax=1e6, s_noise=1.0
        )


def inpaint(pipe, images, mask, completions: int, seed: int, batch_size: int, num_inference_steps) -> torch.Tensor:
    """`completions` completions of each image, (N * completions, 1, R, R) in [0, 1], in chunks of `batch_size`."""
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, batch_size // completions)
    outputs = [
        pipe(
            part,
            mask,
            batch_size=completions,
            generator=generator,
            num_inference_steps=num_inference_steps,
            output_type="pt",
        ).images
        for part in images.split(chunk)
    ]
    return torch.cat(outputs).cpu()


def class_agreement(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    _, logits = classifier_outputs(classifier, images)
    return (logits.argmax(1) == labels).float().mean().item()


def plot(masked, completions, originals, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = len(originals), completions.shape[1] + 2
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.1 * rows), squeeze=False)
    for r in range(rows):
        panels = [masked[r], *completions[r], originals[r]]
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    axes[0, 0].set_title("masked", fontsize=8)
    for c in range(1, columns - 1):
        axes[0, c].set_title(f"completion {c}", fontsize=8)
    axes[0, -1].set_title("original", fontsize=8)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    saved = NCSNPipeline.from_pretrained(args.pipeline)
    # from_pipe without a scheduler gives the task's sampler; "saved" names the saved one
    pipe = NCSNInpaintPipeline.from_pipe(saved, **({"scheduler": saved.scheduler} if args.sampler == "saved" else {}))
    pipe.set_progress_bar_config(disable=True)
    use_sampler(pipe, args.sampler)
    resolution = pipe.unet.config.sample_size
    images, labels = load_digits_images(resolution, split="test")
    images, labels = images[: args.num_images], labels[: args.num_images]
    mask = bottom_half_mask(resolution)
    keep = 1 - mask
    classifier, _ = load_digits_classifier(resolution)

    start = time.perf_counter()
    completed = inpaint(pipe, images, mask, 1, args.seed, args.batch_size, args.num_inference_steps)
    seconds = time.perf_counter() - start
    train_mean = load_digits_images(resolution, split="train")[0].mean(0)
    rates = {
        "completion (NCSNInpaintPipeline)": class_agreement(classifier, completed, labels),
        "top half alone (bottom black, the masked input as is)": class_agreement(classifier, images * keep, labels),
        "top half + the training mean's bottom half": class_agreement(
            classifier, images * keep + train_mean * mask, labels
        ),
        "original": class_agreement(classifier, images, labels),
    }
    print(
        f"{len(images)} held-out digits, bottom half masked, {type(pipe.scheduler).__name__} "
        f"({args.num_inference_steps or 'its own'} calls); "
        f"{seconds:.0f} s for the completions. Share given the original's class by the digits classifier:"
    )
    for name, rate in rates.items():
        print(f"  {rate:6.1%}  {name}")

    rows = min(args.figure_rows, len(images))
    shown = inpaint(
        pipe, images[:rows], mask, args.figure_completions, args.seed + 1, args.batch_size, args.num_inference_steps
    )
    shown = shown.view(rows, args.figure_completions, *shown.shape[1:])
    masked = images[:rows] * keep + 0.5 * mask  # the generated region shown grey
    plot(masked, shown, images[:rows], Path(args.output))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
