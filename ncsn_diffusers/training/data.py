"""The training set and the batches drawn from it: images in the model's range, noise and noise levels per step."""

import logging
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..digits import load_digits_images
from ..parameterization import append_dims
from ..recipes import OFFICIAL_DATA_RANGE
from .batch_order import NOISE_STREAM, derived_seed
from .images import decode_images, hub_dataset_sources, image_folder_sources
from .objectives import build_objective

logger = logging.getLogger(__name__)

DATA_RANGE = (-1.0, 1.0)


def load_training_images(args) -> torch.Tensor:
    """The training set as (N, C, R, R), uint8 (image sources) or float32 in [0, 1] (digits), decoded once."""
    if args.train_data_dir is not None:
        sources = image_folder_sources(args.train_data_dir, exclude=[args.output_dir])
    elif args.dataset_name is not None:
        sources = hub_dataset_sources(args.dataset_name, args.dataset_config_name, args.cache_dir)
    else:
        images, _ = load_digits_images(resolution=args.resolution, split="train")
        return images if args.channels == 1 else images.expand(-1, 3, -1, -1).contiguous()
    images, skipped = decode_images(sources, args.resolution, args.channels, args.center_crop, seed=args.seed)
    if skipped:
        logger.warning(f"Skipped {len(skipped)} unreadable images; training on {len(images)}.")
    return images


def model_data_range(args) -> tuple[float, float]:
    """[0, 1] under `--recipe` (the authors' convention; their networks apply 2 x - 1), else [-1, 1]."""
    return OFFICIAL_DATA_RANGE if args.recipe else DATA_RANGE


def to_model_range(images: torch.Tensor, data_range: tuple[float, float] = DATA_RANGE) -> torch.Tensor:
    """[0, 1] (or uint8) images -> the model's `data_range`, [-1, 1] by default."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    low, high = data_range
    return images * (high - low) + low


def dataset_label(args) -> str:
    """The training data as the model card names it: a Hub dataset's id, or only the name of a local folder (its
    absolute path would publish the trainer's file system)."""
    if args.dataset_name is not None:
        local = Path(args.dataset_name)
        return f"local dataset `{local.resolve().name}`" if local.exists() else args.dataset_name
    if args.train_data_dir is not None:
        return f"image folder `{Path(args.train_data_dir).resolve().name}`"
    return "scikit-learn digits (train split)"


def draw_batch(images, order, micro_step, seed, noise_scheduler, args, process_index=0, num_processes=1):
    """The clean batch x (in [-1, 1]), its noise z and noise-level draws for one micro-step, on `images.device`.

    Draws are made for the global batch from a generator seeded by (seed, micro_step) and this process keeps its
    shard, so they do not depend on the number of processes, nor on where a run was resumed.

    Returns:
        `tuple`: clean (B, C, R, R), noise (B, C, R, R), levels (B,) (VE: ladder indices, or the sigmas themselves
        with `--sigma_sampling log_uniform`; VP: DDPM timesteps).
    """
    device = images.device
    index = order.indices(micro_step, process_index, num_processes)
    # A copy from pageable memory would make the host wait for the GPU's queue at every step; pinned, it does not.
    index = index.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else index.to(device)
    shard = slice(process_index * len(index), (process_index + 1) * len(index))
    global_shape = (order.global_batch_size, *images.shape[1:])
    generator = torch.Generator(device).manual_seed(derived_seed(seed, NOISE_STREAM, micro_step))

    clean = images[index]
    clean = clean.float() / 255.0 if clean.dtype == torch.uint8 else clean
    if args.dequantize:  # the official code's uniform dequantisation: x / 256 * 255 + u / 256
        u = torch.rand(global_shape, generator=generator, device=device)[shard]
        clean = clean * (255.0 / 256.0) + u / 256.0
    if args.random_flip:
        flip = torch.rand(global_shape[0], generator=generator, device=device)[shard] < 0.5
        clean = torch.where(append_dims(flip, clean.ndim), clean.flip(-1), clean)
    levels = build_objective(args, noise_scheduler).sample_levels(global_shape[0], generator, device)[shard]
    noise = randn_tensor(global_shape, generator=generator, device=device, dtype=torch.float32)[shard]
    return to_model_range(clean, model_data_range(args)), noise, levels
