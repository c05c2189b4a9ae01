#!/usr/bin/env python
"""Controllable generation on the digits: class-guided sampling with a noise-conditional classifier, and SDEdit
image-to-image on corrupted held-out digits, scored by the evaluator's digits classifier.

    accelerate launch train_ncsn.py --output_dir ncsn-digits     # the default run
    python examples/controllable_digits.py --pipeline ncsn-digits --output_dir ncsn-digits-control

1. Trains a `NoiseConditionalClassifier` with `train_ncsn.py --objective noise_classifier --score_model PIPELINE`
   (the score model's noise ladder and sigma draws) into `--output_dir/classifier`, times it, and saves the
   pipeline with it (`--output_dir/pipeline`), or loads one with `--classifier DIR`.
2. Guided digits: for every class and guidance scale w, `--samples_per_class` samples of the pipeline's default
   chain with `class_labels=c, guidance_scale=w`; prints the share the evaluator's classifier assigns to c and the FD
   per class (against the held-out digits of c), beside the same for unguided samples, and writes a figure with one
   row per class (`--figure_dir`/guided_digits.png).
3. Image-to-image: the held-out digits corrupted three ways (additive noise, blur, a stroke erased), edited by
   `NCSNImg2ImgPipeline` at several strengths (and, for the stroke, with its mask); prints the classifier's agreement
   with the original class and the FD (against the training digits) of inputs and edits, and writes a figure with
   rows of input, edits and original (`--figure_dir`/img2img.png).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ncsn_diffusers import NCSNImg2ImgPipeline, NCSNPipeline, NoiseConditionalClassifier, load_digits_images
from ncsn_diffusers.evaluation import classifier_outputs, frechet_distance, load_digits_classifier
from ncsn_diffusers.training import TrainingConfig, train

CORRUPTIONS = ("noise", "blur", "stroke")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--pipeline", default="ncsn-digits", help="A saved NCSNPipeline folder (the default run's).")
    add("--output_dir", default="ncsn-digits-control", help="Where the classifier, the pipeline and results go.")
    add("--classifier", default=None, help="A saved NoiseConditionalClassifier folder; trained if not given.")
    add("--classifier_steps", type=int, default=None, help="Steps of the classifier's run (default: the command's).")
    add("--guidance_scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    add("--samples_per_class", type=int, default=50)
    add("--strengths", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    add("--num_images", type=int, default=360, help="Held-out digits to corrupt and edit (360 = all).")
    add("--parts", nargs="+", default=["guided", "img2img"], choices=["guided", "img2img"])
    add(
        "--figure_dir",
        default=None,
        help="Where guided_digits.png and img2img.png are written (default: --output_dir; the repository's own "
        "figures are made with --figure_dir docs).",
    )
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.figure_dir = args.figure_dir or args.output_dir
    if min(args.classifier_steps or 1, args.samples_per_class, args.num_images) < 1:
        parser.error("--classifier_steps, --samples_per_class and --num_images must be positive.")
    if any(not 0 <= s <= 1 for s in args.strengths) or any(w < 0 for w in args.guidance_scales):
        parser.error("--strengths must lie in [0, 1] and --guidance_scales be >= 0.")
    return args


def to_model_range(images: torch.Tensor, data_range) -> torch.Tensor:
    low, high = data_range
    return low + (high - low) * images


def get_classifier(args, output_dir: Path) -> NoiseConditionalClassifier:
    """--classifier, or one trained by `train_ncsn.py --objective noise_classifier --score_model --pipeline`."""
    if args.classifier is not None:
        return NoiseConditionalClassifier.from_pretrained(args.classifier)
    folder = output_dir / "classifier"
    config = TrainingConfig(objective="noise_classifier", output_dir=str(folder), report_to="none", seed=args.seed)
    if (Path(args.pipeline) / "training_args.json").is_file():
        config.score_model = args.pipeline  # the score model's ladder, sigma draws and data
    if args.classifier_steps is not None:
        config.max_train_steps = args.classifier_steps
    start = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - start
    last = json.loads((folder / "logs" / "train_log.jsonl").read_text().splitlines()[-1])
    print(f"classifier: {last['step']} steps in {seconds:.0f} s, final loss {last['loss_noise_classifier']:.3f}")
    return NoiseConditionalClassifier.from_pretrained(folder)


def noisy_accuracy(classifier, pipe, sigmas=(0.02, 0.3, 1.0, 3.0)) -> dict:
    images, labels = load_digits_images(pipe.unet.config.sample_size, split="test")
    x = to_model_range(images, pipe.scheduler.data_range)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return {
            s: (classifier(x + s * torch.randn(x.shape, generator=generator), s).logits.argmax(1) == labels)
            .float()
            .mean()
            .item()
            for s in sigmas
        }


def per_class_fd(evaluator, images: torch.Tensor, reference: torch.Tensor) -> float:
    return frechet_distance(classifier_outputs(evaluator, images)[0], classifier_outputs(evaluator, reference)[0])


def guided_part(args, pipe, evaluator):
    resolution = pipe.unet.config.sample_size
    test_images, test_labels = load_digits_images(resolution, split="test")
    generator = torch.Generator().manual_seed(args.seed)
    n = args.samples_per_class
    start = time.perf_counter()
    unguided = pipe(batch_size=10 * n, generator=generator, output_type="pt").images
    unguided_seconds = time.perf_counter() - start
    predicted = classifier_outputs(evaluator, unguided)[1].argmax(1)
    print(
        f"\nGuided digits, {len(pipe.scheduler.timesteps)} calls per sample, {n} per class; unguided: "
        f"{10 * n} samples in {unguided_seconds:.0f} s, FD {per_class_fd(evaluator, unguided, test_images):.2f}"
    )
    rows, figure = [], {}
    for w in args.guidance_scales:
        shares, fds, start = [], [], time.perf_counter()
        for c in range(10):
            images = pipe(batch_size=n, generator=generator, class_labels=c, guidance_scale=w, output_type="pt").images
            assigned = classifier_outputs(evaluator, images)[1].argmax(1)
            shares.append((assigned == c).float().mean().item())
            fds.append(per_class_fd(evaluator, images, test_images[test_labels == c]))
            figure.setdefault(w, []).append(images[:10])
        seconds = time.perf_counter() - start
        rows.append((w, shares, fds, seconds))
    unguided_fds = [
        per_class_fd(evaluator, unguided[predicted == c], test_images[test_labels == c])
        if (predicted == c).sum() > 2
        else float("nan")
        for c in range(10)
    ]
    train_images, train_labels = load_digits_images(resolution, split="train")
    floor = [
        per_class_fd(evaluator, train_images[train_labels == c][:n], test_images[test_labels == c]) for c in range(10)
    ]
    print("w      | share of samples given the requested class, per class 0..9          | min   | s")
    for w, shares, _, seconds in rows:
        print(f"{w:<6} | {' '.join(f'{s:5.0%}' for s in shares)} | {min(shares):5.0%} | {seconds:.0f}")
    print("FD per class (against the held-out digits of that class):")
    for w, _, fds, _ in rows:
        print(f"  w = {w:<4}: {' '.join(f'{f:5.1f}' for f in fds)}  mean {sum(fds) / 10:.1f}")
    print(f"  unguided, by evaluator class: {' '.join(f'{f:5.1f}' for f in unguided_fds)}")
    print(f"  {n} training digits of the class (floor): {' '.join(f'{f:5.1f}' for f in floor)}")
    best = max(rows, key=lambda row: (min(row[1]), -sum(row[2])))[0]
    plot_rows(
        torch.stack(figure[best]),
        [f"{c}" for c in range(10)],
        Path(args.figure_dir) / "guided_digits.png",
        f"guided, w = {best}",
    )
    return rows


def corrupt(images: torch.Tensor, kind: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(corrupted images in [0, 1], the mask of the corrupted pixels or None)."""
    if kind == "noise":
        return (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1), None
    if kind == "blur":
        x = torch.arange(-3, 4, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * 1.2**2))
        kernel = (kernel[:, None] * kernel[None]) / kernel.sum() ** 2
        return F.conv2d(F.pad(images, (3, 3, 3, 3), mode="replicate"), kernel[None, None]), None
    # a 3-pixel band erased across the digit, at a random height in its middle half
    size = images.shape[-1]
    rows = torch.randint(size // 4, 3 * size // 4 - 3, (len(images),), generator=generator)
    mask = torch.zeros(len(images), 1, size, size)
    for i, r in enumerate(rows.tolist()):
        mask[i, :, r : r + 3] = 1.0
    return images * (1 - mask), mask


def img2img_part(args, pipe, evaluator):
    img2img = NCSNImg2ImgPipeline.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    resolution = pipe.unet.config.sample_size
    images, labels = load_digits_images(resolution, split="test")
    images, labels = images[: args.num_images], labels[: args.num_images]
    train_images, _ = load_digits_images(resolution, split="train")
    generator = torch.Generator().manual_seed(args.seed)

    def score(x):
        _, logits = classifier_outputs(evaluator, x)
        return (logits.argmax(1) == labels).float().mean().item(), per_class_fd(evaluator, x, train_images)

    agreement, fd = score(images)
    print(f"\nImage-to-image on {len(images)} held-out digits; originals: agreement {agreement:.1%}, FD {fd:.2f}")
    print("corruption | input           | " + " | ".join(f"strength {s:<6}" for s in args.strengths))
    figure = []
    for kind in CORRUPTIONS:
        corrupted, mask = corrupt(images, kind, generator)
        variants = [(kind, None)] + ([(f"{kind} + mask", mask)] if mask is not None else [])
        for name, mask_image in variants:
            cells, edits, start = [], [], time.perf_counter()
            for s in args.strengths:
                out = img2img(corrupted, strength=s, mask_image=mask_image, generator=generator, output_type="pt")
                edits.append(out.images)
                cells.append("{:5.1%} FD {:5.2f}".format(*score(out.images)))
            seconds = time.perf_counter() - start
            print(
                f"{name:<10} | {'{:5.1%} FD {:5.2f}'.format(*score(corrupted))} | {' | '.join(cells)} ({seconds:.0f} s)"
            )
            figure.append(torch.stack([corrupted[:4], *[e[:4] for e in edits], images[:4]], dim=1))  # (4, S + 2, ...)
    columns = ["input", *[f"strength {s}" for s in args.strengths], "original"]
    plot_grid(torch.cat(figure), columns, Path(args.figure_dir) / "img2img.png")


def plot_rows(images: torch.Tensor, row_names, path: Path, title: str):
    """images (R, K, 1, H, W): one row per name."""
    plot_grid(images, None, path, title=title, row_names=row_names)


def plot_grid(images: torch.Tensor, column_names, path: Path, title: str | None = None, row_names=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = images.shape[:2]
    fig, axes = plt.subplots(rows, columns, figsize=(0.9 * columns, 0.9 * rows), squeeze=False)
    for r in range(rows):
        for c in range(columns):
            axes[r, c].imshow(images[r, c, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        if row_names is not None:
            axes[r, 0].set_ylabel(row_names[r], fontsize=8)
    for c, name in enumerate(column_names or []):
        axes[0, c].set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Wrote {path}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipe = NCSNPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    classifier = get_classifier(args, output_dir)
    pipe = NCSNPipeline(pipe.unet, pipe.scheduler, classifier=classifier.eval())
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(output_dir / "pipeline")
    accuracy = noisy_accuracy(classifier, pipe)
    print(
        "noise-conditional classifier, held-out accuracy at sigma: "
        + ", ".join(f"{s}: {a:.1%}" for s, a in accuracy.items())
    )
    evaluator, _ = load_digits_classifier(pipe.unet.config.sample_size)
    if "guided" in args.parts:
        guided_part(args, pipe, evaluator)
    if "img2img" in args.parts:
        img2img_part(args, pipe, evaluator)


if __name__ == "__main__":
    main()
