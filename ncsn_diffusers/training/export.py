"""The end of a run: the EMA weights become the model, saved as a pipeline with its sample grid and model card."""

import time
from pathlib import Path

import torch
from accelerate.logging import get_logger

from .data import dataset_label
from .hub import push_to_hub
from .objectives import VE_OBJECTIVES
from .sampler import make_pipeline, save_sample_grid

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


def card_training(args, num_images: int, max_train_steps: int, num_processes: int, mixed_precision: str) -> dict:
    """What the run did, for the model card's text and its training table (`render_model_card(training=...)`)."""
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
        "noise_ladder": args.noise_ladder if args.objective in VE_OBJECTIVES else "ddpm",
        **({"sigma_sampling": args.sigma_sampling} if args.objective in VE_OBJECTIVES else {}),
        **(
            {"log_sigma_mean": args.log_sigma_mean, "log_sigma_std": args.log_sigma_std}
            if args.objective in VE_OBJECTIVES and args.sigma_sampling == "log_normal"
            else {}
        ),
        "seed": args.seed,
    }


def card_datasets(args) -> list[str] | None:
    """The model card's `datasets` metadata: the embedded digits, a Hub dataset's id, or none for local data."""
    if args.dataset_name is None and args.train_data_dir is None:
        return ["sklearn-digits"]
    return [args.dataset_name] if args.dataset_name and not Path(args.dataset_name).exists() else None


def finish(args, accelerator, unet, ema, noise_scheduler, images, max_train_steps, train_time, last):
    """Saves the pipeline (EMA weights) to --output_dir, samples the final grid, writes the model card, pushes."""
    unet = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to(unet.parameters())  # training is over: the EMA weights are the model
    unet.eval()
    pipeline = make_pipeline(unet, noise_scheduler, args)
    grid = Path(args.output_dir) / "samples" / f"step_{max_train_steps:06d}.png"
    sample_start = time.time()
    save_sample_grid(pipeline, grid, args.num_sample_images, args.seed, accelerator.device, args.sample_grid_steps)
    sample_time = time.time() - sample_start

    pipeline.model_card_kwargs = {
        "training": card_training(
            args, len(images), max_train_steps, accelerator.num_processes, accelerator.mixed_precision
        ),
        "results": {
            f"final training loss ({args.objective}, mean over pixels)": last.get(f"loss_{args.objective}"),
            "training time (s)": round(train_time, 1),
            "training images/s (last interval)": last.get("images_per_s"),
            f"sampling time for {args.num_sample_images} images (s)": round(sample_time, 1),
            **({"sample grid U-Net calls": args.sample_grid_steps} if args.sample_grid_steps else {}),
            "sample grid": str(grid.relative_to(args.output_dir)),
            "device": str(accelerator.device),
        },
        "datasets": card_datasets(args),
    }
    repo_id = args.hub_model_id or (Path(args.output_dir).resolve().name if args.push_to_hub else None)
    pipeline.save_pretrained(args.output_dir, repo_id=repo_id)
    logger.info(f"Saved the pipeline and model card to {args.output_dir}, samples to {grid} ({sample_time:.0f} s)")
    if args.push_to_hub:
        repo_id = push_to_hub(args, repo_id)
        logger.info(f"Pushed {args.output_dir} to {repo_id}")
