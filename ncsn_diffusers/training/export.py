"""A trained score (or epsilon) network saved as a pipeline with its sample grid and model card; the EMA weights
loaded for a while, for the grids drawn during training."""

import time
from pathlib import Path

import torch
from accelerate.logging import get_logger

from ..hub.pipeline_card import PipelineCard, save_pipeline_with_card
from .data import card_datasets, dataset_label
from .sampler import make_pipeline, save_sample_grid
from .score_sde_ve_export import save_score_sde_ve_folder

logger = get_logger(__name__, log_level="INFO")


class ema_weights:
    """Temporarily loads the EMA weights into `model` (a no-op without EMA)."""

    def __init__(self, model, ema):
        self.model, self.ema = model, ema

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())
        self.model.eval()

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.model.parameters())


def card_training(
    args, num_images: int, max_train_steps: int, num_processes: int, mixed_precision: str, ve_ladder: bool
) -> dict:
    """What the run did, for the model card's text and its training table (`render_model_card(training=...)`).
    `ve_ladder`: the model was trained on the VE ladder (the card names the ladder and sigma draws)."""
    return {
        "objective": args.objective,
        "dataset": dataset_label(args),
        "num_images": num_images,
        "resolution": args.resolution,
        "channels": args.channels,
        "model_preset": args.model_preset,
        "max_train_steps": max_train_steps,
        "train_batch_size": args.train_batch_size,
        "num_processes": num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate,
        "lr_scheduler": args.lr_scheduler,
        "lr_warmup_steps": args.lr_warmup_steps,
        "max_grad_norm": args.max_grad_norm,
        "use_ema": args.use_ema,
        "ema_max_decay": args.ema_max_decay if args.use_ema else None,
        "mixed_precision": mixed_precision,
        "num_threads": torch.get_num_threads(),  # what the run used (--num_threads, else OMP_NUM_THREADS or torch)
        "dequantize": args.dequantize,
        "random_flip": args.random_flip,
        "noise_ladder": args.noise_ladder if ve_ladder else "ddpm",
        **({"sigma_sampling": args.sigma_sampling} if ve_ladder else {}),
        **(
            {"log_sigma_mean": args.log_sigma_mean, "log_sigma_std": args.log_sigma_std}
            if ve_ladder and args.sigma_sampling == "log_normal"
            else {}
        ),
        "seed": args.seed,
    }


def save_pipeline(
    args, accelerator, unet, noise_scheduler, images, max_train_steps, train_time, last, repo_id, ve_ladder
):
    """Saves the trained network as a pipeline to --output_dir with its sampler, samples the final grid and writes
    the model card. `ve_ladder`: the model was trained on the VE ladder (the card names the ladder and sigma draws)."""
    pipeline = make_pipeline(unet, noise_scheduler, args)
    grid = Path(args.output_dir) / "samples" / f"step_{max_train_steps:06d}.png"
    sample_start = time.time()
    save_sample_grid(pipeline, grid, args.num_sample_images, args.seed, accelerator.device, args.sample_grid_steps)
    sample_time = time.time() - sample_start

    card = PipelineCard(
        training=card_training(
            args, len(images), max_train_steps, accelerator.num_processes, accelerator.mixed_precision, ve_ladder
        ),
        results={
            f"final training loss ({args.objective}, mean over pixels)": last.get(f"loss_{args.objective}"),
            "training time (s)": round(train_time, 1),
            "training images/s (last interval)": last.get("images_per_s"),
            f"sampling time for {args.num_sample_images} images (s)": round(sample_time, 1),
            **({"sample grid U-Net calls": args.sample_grid_steps} if args.sample_grid_steps else {}),
            "sample grid": str(grid.relative_to(args.output_dir)),
            "device": str(accelerator.device),
        },
        datasets=card_datasets(args),
    )
    if args.model_type == "ncsnpp":  # diffusers' ScoreSdeVePipeline folder, which the package loads too
        save_score_sde_ve_folder(pipeline, args.output_dir, card, repo_id=repo_id)
    else:
        save_pipeline_with_card(pipeline, args.output_dir, card, repo_id=repo_id)
    logger.info(f"Saved the pipeline and model card to {args.output_dir}, samples to {grid} ({sample_time:.0f} s)")
