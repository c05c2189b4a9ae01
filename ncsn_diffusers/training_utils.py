"""What `train_ncsn.py` needs beyond the model and the scheduler: crash-safe checkpoints, the training images, and a
deterministic, resumable order of batches and noise.

Checkpoints are written as `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` once complete, so a folder with
the final name is always whole: a run killed at any moment leaves at worst a `*.tmp` folder, which is ignored and
removed. Random draws of the training loop (batch order, noise, levels, flips, dequantisation) are pure functions of
(seed, step), so a resumed run repeats exactly what the uninterrupted one would have done, on any number of
processes.
"""

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TMP_SUFFIX = ".tmp"
STATE_FILE = "training_state.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints `checkpoint-<step>` of `output_dir` as (step, path), oldest first.

    A checkpoint counts only if its name has no suffix (the rename happens last) and it holds the state file written
    just before the rename.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or `None` when there is none."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def remove_stale_temporaries(output_dir: str | os.PathLike) -> list[Path]:
    """Deletes `checkpoint-*.tmp*` folders left by a killed run; returns what was removed."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    stale = [p for p in output_dir.iterdir() if p.name.startswith("checkpoint-") and TMP_SUFFIX in p.name]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    """The JSON state (at least `{"step": int}`) stored in a complete checkpoint."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ValueError(
            f"{checkpoint} is not a complete checkpoint (no {STATE_FILE}); pass a `checkpoint-<step>` folder written "
            "by train_ncsn.py, or `latest`."
        )
    return json.loads(path.read_text())


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict, total_limit: int | None):
    """Atomically writes `output_dir/checkpoint-<step>` with `accelerator.save_state`, then prunes old ones.

    Every process must call it (each saves its own RNG state). The state goes to `checkpoint-<step>.tmp`; the main
    process adds `STATE_FILE` and renames the folder, so a kill at any moment leaves either the previous checkpoints
    untouched or the new one complete. Pruning keeps the `total_limit` newest complete checkpoints, renaming each
    victim to a `.tmp` name before deleting it so that a half-deleted folder is never taken for a checkpoint.

    Returns:
        `Path`: the final checkpoint folder.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}{TMP_SUFFIX}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
        if final.exists():  # a re-run from an older checkpoint overwrites the later one it reaches again
            _discard(final)
        os.replace(tmp, final)
        if total_limit is not None:
            for _, old in complete_checkpoints(output_dir)[:-total_limit]:
                _discard(old)
    accelerator.wait_for_everyone()
    return final


def _discard(path: Path):
    doomed = path.with_name(path.name + TMP_SUFFIX + "-delete")
    os.replace(path, doomed)
    shutil.rmtree(doomed)


# ---------------------------------------------------------------------------------------------------------------------
# Training images
# ---------------------------------------------------------------------------------------------------------------------


def preprocess_image(image, resolution: int, channels: int, center_crop: bool, rng: np.random.Generator):
    """Converts a PIL image to a uint8 array of shape (channels, resolution, resolution).

    Any mode is accepted (L, RGB, RGBA, P, I;16, ...): palette and alpha images are flattened via RGBA (transparent
    pixels keep their colour values, as `convert("RGB")` does), then converted to L (`channels=1`) or RGB. The
    shorter side is resized to `resolution` (bicubic, as diffusers' example) and the square is cut from the centre
    (`center_crop=True`) or at a position drawn once from `rng`.
    """
    from PIL import Image

    if image.mode in ("P", "PA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grayscale: rescale to 8 bits before "L"
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-12)
        image = Image.fromarray(((array - array.min()) / span * 255).round().astype(np.uint8), mode="L")
    image = image.convert("L" if channels == 1 else "RGB")

    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, resample=Image.Resampling.BICUBIC)
    width, height = image.size
    if center_crop:
        left, top = (width - resolution) // 2, (height - resolution) // 2
    else:
        left, top = int(rng.integers(0, width - resolution + 1)), int(rng.integers(0, height - resolution + 1))
    image = image.crop((left, top, left + resolution, top + resolution))

    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, R, R)


def decode_images(
    sources, resolution: int, channels: int, center_crop: bool, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """Decodes and preprocesses images once, skipping unreadable ones with a warning that names the file.

    Args:
        sources (iterable of `(name, opener)`):
            `opener()` returns a PIL image; `name` is what a warning reports.
        resolution, channels, center_crop: see [`preprocess_image`].
        seed (`int`, defaults to 0):
            Seed of the random crops.

    Returns:
        `tuple[torch.Tensor, list[str]]`: uint8 images of shape (N, channels, resolution, resolution) and the names
        of the skipped files.
    """
    from PIL import UnidentifiedImageError

    rng = np.random.default_rng(seed)
    arrays, skipped = [], []
    for name, opener in sources:
        try:
            image = opener()
            image.load()
            arrays.append(preprocess_image(image, resolution, channels, center_crop, rng))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            logger.warning(f"Skipping corrupt or unreadable image {name}: {err}")
            skipped.append(str(name))
    if not arrays:
        raise ValueError(f"None of the {len(skipped)} images could be read (first: {skipped[:3]}).")
    return torch.from_numpy(np.stack(arrays)), skipped


def image_folder_sources(train_data_dir: str | os.PathLike, cache_dir: str | None = None):
    """The images of a folder (recursively) through `datasets`' imagefolder, as `(path, opener)` pairs."""
    from PIL import Image

    root = Path(train_data_dir)
    if not root.is_dir():
        raise ValueError(f"--train_data_dir {root} does not exist or is not a folder; pass a folder of images.")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.rglob("*") if p.is_file()):
        raise ValueError(
            f"--train_data_dir {root} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            "put the training images there (subfolders are fine)."
        )
    import datasets

    dataset = datasets.load_dataset("imagefolder", data_dir=str(root), split="train", cache_dir=cache_dir)
    # Decoding ourselves lets one corrupt file be skipped and named instead of failing the whole run mid-training.
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    for record in dataset["image"]:
        path = record["path"]
        yield path, (lambda path=path: Image.open(path))


def hub_dataset_sources(dataset_name: str, dataset_config_name: str | None = None, cache_dir: str | None = None):
    """The images of a `datasets` dataset (Hub id or local script/folder), as `(index, opener)` pairs.

    Raises a `ValueError` at once, without network retries, when the Hub is unreachable and the dataset is not cached.
    """
    import datasets

    if not Path(dataset_name).exists() and not datasets.config.HF_HUB_OFFLINE and not hub_reachable():
        raise ValueError(
            f"--dataset_name {dataset_name!r}: the Hub ({hub_endpoint()}) is unreachable. Connect to the network, "
            "or, if the dataset is already in the local cache, set HF_HUB_OFFLINE=1 to load it from there."
        )
    try:
        dataset = datasets.load_dataset(dataset_name, dataset_config_name, split="train", cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError)
        raise ValueError(f"--dataset_name {dataset_name!r} could not be loaded: {err}") from err
    column = next((name for name, f in dataset.features.items() if isinstance(f, datasets.Image)), None)
    if column is None:
        raise ValueError(
            f"--dataset_name {dataset_name!r} has no image column (columns: {list(dataset.features)}); "
            "pass a dataset with a `datasets.Image` feature."
        )
    dataset = dataset.cast_column(column, datasets.Image(decode=False))
    from io import BytesIO

    from PIL import Image

    for index, record in enumerate(dataset[column]):
        name = record.get("path") or f"{dataset_name}[{index}]"
        if record.get("bytes") is not None:
            yield name, (lambda data=record["bytes"]: Image.open(BytesIO(data)))
        else:
            yield name, (lambda path=record["path"]: Image.open(path))


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds (no retries)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------------
# Deterministic, resumable randomness
# ---------------------------------------------------------------------------------------------------------------------


def derived_seed(seed: int, *counters: int) -> int:
    """A well-mixed 63-bit seed for the stream (seed, *counters), e.g. (seed, stream id, step)."""
    return int(np.random.SeedSequence([seed, *counters]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class BatchOrder:
    """Which training images each micro-batch uses: a fresh permutation per epoch, cut into global batches.

    Micro-batch k (counted over the whole run) belongs to epoch k // batches_per_epoch; its global batch of
    `global_batch_size` indices is split into `num_processes` consecutive shards, so N processes with batch B each
    see together exactly what one process with batch N * B sees. The last incomplete batch of an epoch is dropped.
    """

    def __init__(self, num_images: int, global_batch_size: int, seed: int):
        if global_batch_size > num_images:
            raise ValueError(
                f"The global batch (train_batch_size x processes = {global_batch_size}) is larger than the "
                f"{num_images} training images; lower --train_batch_size."
            )
        self.num_images = num_images
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.batches_per_epoch = num_images // global_batch_size
        self._epoch, self._permutation = None, None

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_epoch

    def indices(self, micro_step: int, process_index: int = 0, num_processes: int = 1) -> torch.Tensor:
        epoch = self.epoch_of(micro_step)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, 0, epoch))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_images, generator=generator)
        start = (micro_step % self.batches_per_epoch) * self.global_batch_size
        shard = self.global_batch_size // num_processes
        start += process_index * shard
        return self._permutation[start : start + shard]


def num_update_steps(num_epochs: int, batches_per_epoch: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in `num_epochs` epochs (an update may straddle two epochs)."""
    return math.ceil(num_epochs * batches_per_epoch / gradient_accumulation_steps)
