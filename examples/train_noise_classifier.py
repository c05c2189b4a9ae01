#!/usr/bin/env python
"""Trains a noise-conditional classifier p_phi(y | x, sigma) on the digits, for classifier guidance.

    python examples/train_noise_classifier.py --output_dir ncsn-digits-classifier --pipeline ncsn-digits

Cross-entropy on the training digits (labels 0..9) perturbed by x + sigma z with sigma log-uniform in
[--sigma_min, --sigma_max], the default run's training distribution (`train_noise_classifier`). Writes atomic
safetensors checkpoints (`checkpoint-<step>`, the same format as train_ncsn.py's) every --checkpointing_steps and
resumes from the latest with --resume_from_checkpoint latest, taking the steps an uninterrupted run takes. The
classifier goes to `OUTPUT_DIR/classifier`; with --pipeline, the score pipeline with it as its `classifier` component
goes to `OUTPUT_DIR/pipeline`, ready for `pipe(class_labels=..., guidance_scale=...)`.
"""

import argparse
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from ncsn_diffusers import NCSNPipeline, NoiseConditionalClassifier, load_digits_images
from ncsn_diffusers.training.noise_classifier import log_uniform_sigmas, train_noise_classifier
from ncsn_diffusers.training_utils import latest_checkpoint, load_checkpoint, save_checkpoint

DEFAULT_DATA_RANGE = (-1.0, 1.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--output_dir", required=True, help="Where checkpoints, the classifier and the pipeline are written.")
    add("--pipeline", default=None, help="A saved NCSNPipeline folder to pair the classifier with (its data range).")
    add("--resolution", type=int, default=16)
    add("--sigma_min", type=float, default=0.02, help="Smallest training sigma (the default run's 0.02).")
    add("--sigma_max", type=float, default=17.09, help="Largest training sigma (the default run's sigma_1 = 17.09).")
    add("--max_train_steps", type=int, default=1500)
    add("--train_batch_size", type=int, default=128)
    add("--learning_rate", type=float, default=2e-3)
    add("--checkpointing_steps", type=int, default=500)
    add("--checkpoints_total_limit", type=int, default=2)
    add("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("resolution", "max_train_steps", "train_batch_size", "checkpointing_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer.")
    if not 0 < args.sigma_min < args.sigma_max:
        parser.error("--sigma_min must be positive and below --sigma_max.")
    if not args.learning_rate > 0:
        parser.error("--learning_rate must be positive.")
    return args


def resume_step(args, accelerator, classifier, optimizer) -> int:
    if args.resume_from_checkpoint is None:
        return 0
    checkpoint = (
        latest_checkpoint(args.output_dir) if args.resume_from_checkpoint == "latest" else args.resume_from_checkpoint
    )
    if checkpoint is None:
        return 0
    state = load_checkpoint(checkpoint, accelerator, model=classifier, optimizer=optimizer)
    if state.get("seed") != args.seed:
        raise ValueError(f"{checkpoint} was trained with --seed {state.get('seed')}; resume it with that seed.")
    print(f"Resuming from {checkpoint} at step {state['step']}")
    return state["step"]


def save_atomically(model, path: Path):
    """save_pretrained into `path.tmp`, then one rename: a kill leaves the previous folder or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    pipe = NCSNPipeline.from_pretrained(args.pipeline) if args.pipeline else None
    data_range = getattr(pipe.scheduler, "data_range", DEFAULT_DATA_RANGE) if pipe else DEFAULT_DATA_RANGE
    images, labels = load_digits_images(args.resolution, split="train")
    low, high = data_range
    images = (low + (high - low) * images).to(accelerator.device)  # the score model's data range
    labels = labels.to(accelerator.device)

    torch.manual_seed(args.seed)
    classifier = NoiseConditionalClassifier(sample_size=args.resolution, num_classes=10).to(accelerator.device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=args.learning_rate)
    step = resume_step(args, accelerator, classifier, optimizer)
    draw = log_uniform_sigmas(args.sigma_min, args.sigma_max)
    start = time.perf_counter()
    while step < args.max_train_steps:
        stop = min(step + args.checkpointing_steps, args.max_train_steps)
        losses = train_noise_classifier(
            classifier,
            images,
            labels,
            draw,
            num_steps=stop,
            batch_size=args.train_batch_size,
            seed=args.seed,
            start_step=step,
            optimizer=optimizer,
        )
        step = stop
        state = {"seed": args.seed, "sigma_min": args.sigma_min, "sigma_max": args.sigma_max}
        save_checkpoint(
            accelerator, output_dir, step, state, args.checkpoints_total_limit, model=classifier, optimizer=optimizer
        )
        print(f"step {step}: loss {sum(losses) / len(losses):.4f}")
    print(f"Trained to step {step} in {time.perf_counter() - start:.0f} s")
    save_atomically(classifier, output_dir / "classifier")
    if pipe is not None:
        pipe = NCSNPipeline(pipe.unet, pipe.scheduler, classifier=classifier.eval().cpu())
        save_atomically(pipe, output_dir / "pipeline")
    print(f"Wrote {output_dir / 'classifier'}" + (f" and {output_dir / 'pipeline'}" if pipe is not None else ""))


if __name__ == "__main__":
    main()
