"""Distils a saved NCSN score pipeline into diffusers' own `ConsistencyModelPipeline` (1-2 U-Net calls).

accelerate launch examples/distill_ncsn.py --teacher_model ./ncsn-digits --output_dir ./ncsn-digits-cd

The output folder loads with diffusers alone: `DiffusionPipeline.from_pretrained(OUT)(num_inference_steps=1)`. The
teacher is any saved NCSN pipeline (folder or Hub id) whose U-Net is an `NCSNUNet2DModel`; the data are the digits it
was trained on (the package's default dataset), in diffusers' [-1, 1].
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ncsn_diffusers import NCSNPipeline, load_digits_images, resolve_pipeline_folder
from ncsn_diffusers.training.consistency_distillation import (
    DISTANCES,
    consistency_pipeline,
    distill,
    student_from_teacher,
    teacher_denoiser,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher_model", required=True, help="A saved NCSNPipeline folder or Hub repo id.")
    parser.add_argument(
        "--output_dir", required=True, help="A new (or empty) folder for the ConsistencyModelPipeline."
    )
    parser.add_argument("--num_levels", type=int, default=18, help="N, levels of the Karras grid (the paper: 18).")
    parser.add_argument(
        "--max_train_steps",
        type=int,
        default=2000,
        help="0.8 CPU-s each at batch 32 on the digits U-Net on an idle machine (~27 CPU-minutes), ~4 when contended.",
    )
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument(
        "--learning_rate", type=float, default=1e-3, help="Adam; 1e-3 beat 1e-4 at 100 steps (2-call FD 331 vs 433)."
    )
    parser.add_argument("--ema_rate", type=float, default=0.95, help="mu of the target network (the paper: 0.95).")
    parser.add_argument("--distance", choices=DISTANCES, default="l2")
    parser.add_argument("--sigma_data", type=float, default=0.5, help="sigma_data of c_skip / c_out / c_in.")
    parser.add_argument(
        "--init", choices=("teacher", "random"), default="teacher", help="Student weights: the teacher's, or fresh."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log_every", type=int, default=100)
    args = parser.parse_args(argv)
    if args.num_levels < 2:
        parser.error(f"--num_levels must be at least 2, got {args.num_levels}.")
    if args.max_train_steps < 0 or args.train_batch_size < 1:
        parser.error("--max_train_steps must be >= 0 and --train_batch_size >= 1.")
    if not 0.0 <= args.ema_rate < 1.0:
        parser.error(f"--ema_rate must lie in [0, 1), got {args.ema_rate}.")
    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        parser.error(f"--output_dir {output} exists and is not empty; pass a new folder (nothing is overwritten).")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.process_time()
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # the student's fresh layers

    teacher_pipe = NCSNPipeline.from_pretrained(resolve_pipeline_folder(args.teacher_model))
    teacher = teacher_pipe.unet.requires_grad_(False).eval()
    scheduler_config = teacher_pipe.scheduler.config
    # as NCSNPipeline reads it: diffusers' EDM schedulers record none and mean [-1, 1]
    data_range = tuple(float(v) for v in getattr(teacher_pipe.scheduler, "data_range", (-1.0, 1.0)))
    denoiser = teacher_denoiser(teacher, data_range)
    student = student_from_teacher(teacher, init_from_teacher=args.init == "teacher")
    # the grid the teacher samples on, mapped to [-1, 1] (a [0, 1] teacher's sigmas double)
    sigma_scale = 2.0 if data_range == (0.0, 1.0) else 1.0
    sigma_min, sigma_max = sigma_scale * scheduler_config.sigma_min, sigma_scale * scheduler_config.sigma_max
    pipe = consistency_pipeline(student, sigma_min, sigma_max, args.sigma_data, args.num_levels)

    images, _ = load_digits_images(resolution=teacher.config.sample_size, split="train")
    data = images * 2 - 1  # diffusers' [-1, 1]
    target = distill(
        student,
        denoiser,
        pipe.scheduler,
        data,
        args.max_train_steps,
        args.train_batch_size,
        args.learning_rate,
        args.ema_rate,
        args.distance,
        generator,
        args.log_every,
    )
    cpu_minutes = (time.process_time() - start) / 60

    pipe = consistency_pipeline(target, sigma_min, sigma_max, args.sigma_data, args.num_levels)
    save_atomically(pipe, args, cpu_minutes)
    print(f"saved {args.output_dir} ({cpu_minutes:.1f} CPU-minutes)")


def save_atomically(pipe, args: argparse.Namespace, cpu_minutes: float) -> None:
    """Writes the folder next to `--output_dir` and renames it into place, so a killed run leaves no half folder."""
    output = Path(args.output_dir)
    partial = output.with_name(output.name + ".partial")
    if partial.exists():
        raise ValueError(f"{partial} exists (a killed earlier run?); remove it or choose another --output_dir.")
    pipe.save_pretrained(partial)
    record = {**vars(args), "cpu_minutes": round(cpu_minutes, 2)}
    (partial / "distillation_args.json").write_text(json.dumps(record, indent=2))
    (partial / "README.md").write_text(model_card(args, pipe, cpu_minutes))
    if output.exists():
        output.rmdir()  # empty: checked in `parse_args`
    os.replace(partial, output)


def model_card(args: argparse.Namespace, pipe, cpu_minutes: float) -> str:
    config = pipe.scheduler.config
    return f"""---
library_name: diffusers
tags: [consistency-models, ncsn, unconditional-image-generation]
---
# Consistency model distilled from {args.teacher_model}

Consistency distillation (Song et al. 2023, Algorithm 2) of the NCSN score model `{args.teacher_model}`: N =
{config.num_train_timesteps} Karras levels from sigma_max = {config.sigma_max:.4g} to sigma_min = {config.sigma_min:.4g}
(rho = {config.rho}), sigma_data = {config.sigma_data}, {args.max_train_steps} steps of batch {args.train_batch_size},
{args.distance} distance, EMA rate {args.ema_rate}, student initialised from the {args.init}; {cpu_minutes:.1f}
CPU-minutes.

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{args.output_dir}")
images = pipe(batch_size=16, num_inference_steps=1).images  # 1 U-Net call; num_inference_steps=2: 2 calls
```

Quality: measure with `python -m ncsn_diffusers.evaluation --pipeline {args.output_dir} --num_inference_steps 1`.
"""


if __name__ == "__main__":
    main()
