"""The training set and the batches drawn from it: images in the model's range, noise and noise levels per step."""

import logging
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..digits import load_digits_images
from ..parameterization import append_dims
from .batch_order import NOISE_STREAM, BatchOrder, derived_seed
from .image_dataset import ImageFolderDataset, ImageTableDataset
from .images import decode_images, hub_dataset_sources, image_folder_sources
from .recipes import OFFICIAL_DATA_RANGE
from .streaming import batch_loader, decode_subset

logger = logging.getLogger(__name__)

DATA_RANGE = (-1.0, 1.0)

# NCSNv2's sigma_1 is measured on at most this many images (ncsnv2_scheduler_config's own subsample) and at most
# this many bytes of float32 pixels: the ladder's cost does not grow with the data set.
LADDER_MAX_POINTS = 10_000
LADDER_MAX_BYTES = 2**30


def training_set(args) -> torch.Tensor | torch.utils.data.Dataset:
    """The training set: the embedded digits as one tensor in memory (float32 in [0, 1], (N, C, R, R)); a folder or a
    `datasets` dataset as a map-style dataset decoding one uint8 image per item, streamed by [`TrainingBatches`].

    Every image is decoded once here, by the DataLoader workers, and only to check it: one that fails is skipped
    with a warning naming it, so a corrupt file never stops the run when its batch comes. Nothing is kept.
    """
    settings = dict(resolution=args.resolution, channels=args.channels, center_crop=args.center_crop, seed=args.seed)
    settings.update(num_workers=args.dataloader_num_workers)  # the workers also check each image decodes
    if args.train_data_dir is not None:
        return ImageFolderDataset(args.train_data_dir, exclude=[args.output_dir], **settings)
    if args.dataset_name is not None:
        return ImageTableDataset(args.dataset_name, args.dataset_config_name, args.cache_dir, **settings)
    return load_training_images(args)


def load_training_images(args) -> torch.Tensor:
    """The training set as (N, C, R, R), uint8 (image sources) or float32 in [0, 1] (digits), decoded at once: the
    digits' path, and the in-memory reference the streamed one is tested against."""
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
    """[0, 1] under `--recipe` (the authors' convention; their networks apply 2 x - 1) and for `--model_type ncsnpp`
    (diffusers' `ScoreSdeVePipeline` samples [0, 1]), else [-1, 1]."""
    return OFFICIAL_DATA_RANGE if args.recipe or args.model_type == "ncsnpp" else DATA_RANGE


def to_model_range(images: torch.Tensor, data_range: tuple[float, float] = DATA_RANGE) -> torch.Tensor:
    """[0, 1] (or uint8) images -> the model's `data_range`, [-1, 1] by default."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    low, high = data_range
    return images * (high - low) + low


def trained_on_digits(args) -> bool:
    """Whether the run trains on the embedded digits (no --dataset_name, no --train_data_dir)."""
    return args.dataset_name is None and args.train_data_dir is None


def card_datasets(args) -> list[str] | None:
    """The `datasets` of a model card's metadata: the digits, or a Hub dataset's id (never a local path)."""
    if trained_on_digits(args):
        return ["sklearn-digits"]
    return [args.dataset_name] if args.dataset_name and not Path(args.dataset_name).exists() else None


def dataset_label(args) -> str:
    """The training data as the model card names it: a Hub dataset's id, or only the name of a local folder (its
    absolute path would publish the trainer's file system)."""
    if args.dataset_name is not None:
        local = Path(args.dataset_name)
        return f"local dataset `{local.resolve().name}`" if local.exists() else args.dataset_name
    if args.train_data_dir is not None:
        return f"image folder `{Path(args.train_data_dir).resolve().name}`"
    return "scikit-learn digits (train split)"


def ladder_sample(images, args, max_points: int | None = None) -> torch.Tensor:
    """The images NCSNv2's Technique 1 measures, in the model's range.

    A set in memory is returned whole (the ladder design draws its own subsample). Of a streamed set only the
    subsample `ncsnv2_scheduler_config` would draw from it in memory is decoded: the first `max_points` of a
    permutation seeded by `--seed` (all images, in order, when there are fewer), so both give the same sigma_1.
    `max_points` defaults to `LADDER_MAX_POINTS`, lowered to keep the float32 pixels within `LADDER_MAX_BYTES`.
    """
    if isinstance(images, torch.Tensor):
        return to_model_range(images, model_data_range(args))
    if max_points is None:
        max_points = min(LADDER_MAX_POINTS, LADDER_MAX_BYTES // (4 * args.channels * args.resolution**2))
    if len(images) > max_points:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:max_points]
    else:
        keep = torch.arange(len(images))
    return to_model_range(decode_subset(images, keep, args.dataloader_num_workers), model_data_range(args))


class TrainingBatches:
    """The clean images of this process's shard of every micro-step in [start, end), on `device`, in the order of
    `order`: indexed from a tensor in memory (the digits), or streamed by a `DataLoader` with
    `--dataloader_num_workers` worker processes (a folder, a `datasets` set). Call `clean(k)` for k = start, ..."""

    def __init__(
        self, images, order: BatchOrder, start: int, end: int, args, device, process_index=0, num_processes=1
    ):
        self.order, self.device = order, torch.device(device)
        self.process_index, self.num_processes = process_index, num_processes
        self.images, self.stream, self.next_step = None, None, start
        self.dataset = images  # the training set, as a checkpoint fingerprints it
        if isinstance(images, torch.Tensor):
            self.images = images.to(self.device)
        else:
            loader = batch_loader(
                images,
                order,
                start,
                end,
                process_index,
                num_processes,
                num_workers=args.dataloader_num_workers,
                pin_memory=self.device.type == "cuda",
            )
            self.stream = iter(loader)

    def clean(self, micro_step: int) -> torch.Tensor:
        """The shard (B, C, R, R) of micro-step `micro_step`, uint8 or float32 in [0, 1]."""
        if self.images is not None:
            return shard_in_memory(self.images, self.order, micro_step, self.process_index, self.num_processes)
        if micro_step != self.next_step:
            raise ValueError(f"Micro-step {micro_step} was asked of a stream at micro-step {self.next_step}.")
        self.next_step += 1
        return next(self.stream).to(self.device, non_blocking=True)


def shard_in_memory(images, order, micro_step, process_index=0, num_processes=1) -> torch.Tensor:
    """This process's shard of micro-step `micro_step`'s global batch, from images in memory (on their device)."""
    device = images.device
    index = order.indices(micro_step, process_index, num_processes)
    # A copy from pageable memory would make the host wait for the GPU's queue at every step; pinned, it does not.
    index = index.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else index.to(device)
    return images[index]


def draw_batch(images, order, micro_step, seed, objective, args, process_index=0, num_processes=1):
    """[`complete_batch`] of the shard of micro-step `micro_step` from images in memory, on `images.device`."""
    clean = shard_in_memory(images, order, micro_step, process_index, num_processes)
    return complete_batch(clean, order.global_batch_size, micro_step, seed, objective, args, process_index)


def complete_batch(clean, global_batch_size, micro_step, seed, objective, args, process_index=0):
    """The clean batch x (in the model's range), its noise z and the run's `objective`'s noise-level draws for one
    micro-step, on `clean.device`, from this process's shard `clean` (uint8, or float32 in [0, 1]) of its global
    batch.

    Draws (dequantisation, flips, levels, noise) are made for the global batch from a generator seeded by
    (seed, micro_step) and this process keeps its shard, so they do not depend on the number of processes, nor on
    where a run was resumed, nor on whether the images came from memory or a stream.

    Returns:
        `tuple`: clean (B, C, R, R), noise (B, C, R, R), levels (B,) (VE: ladder indices, or the sigmas themselves
        with `--sigma_sampling log_uniform`; VP: DDPM timesteps).
    """
    device = clean.device
    shard = slice(process_index * len(clean), (process_index + 1) * len(clean))
    global_shape = (global_batch_size, *clean.shape[1:])
    generator = torch.Generator(device).manual_seed(derived_seed(seed, NOISE_STREAM, micro_step))

    clean = clean.float() / 255.0 if clean.dtype == torch.uint8 else clean
    if args.dequantize:  # the official code's uniform dequantisation: x / 256 * 255 + u / 256
        u = torch.rand(global_shape, generator=generator, device=device)[shard]
        clean = clean * (255.0 / 256.0) + u / 256.0
    if args.random_flip:
        flip = torch.rand(global_shape[0], generator=generator, device=device)[shard] < 0.5
        clean = torch.where(append_dims(flip, clean.ndim), clean.flip(-1), clean)
    levels = objective.sample_levels(global_shape[0], generator, device)[shard]
    noise = randn_tensor(global_shape, generator=generator, device=device, dtype=torch.float32)[shard]
    return to_model_range(clean, model_data_range(args)), noise, levels
