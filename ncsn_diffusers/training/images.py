"""Decoding training images of any mode and size into fixed-size uint8 arrays, from a folder or a `datasets` set."""

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..hub.endpoint import hub_endpoint, hub_reachable
from ..image_reading import read_pixels

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def preprocess_image(image, resolution: int, channels: int, center_crop: bool, rng: np.random.Generator):
    """Converts a PIL image to a uint8 array of shape (channels, resolution, resolution).

    Any mode is accepted (L, RGB, RGBA, P, I;16, F, ...) and read as the pipelines and the evaluator read it
    ([`read_pixels`]): converted to L (`channels=1`) or RGB; a 16-bit, 32-bit or float image is divided by its white
    (never stretched per image) and rounded to the 8 bits the training set is held in. The shorter side is resized to
    `resolution` (bicubic, as diffusers' example) and the square is cut from the centre (`center_crop=True`) or at a
    position drawn once from `rng`.
    """
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    image = read_pixels(image, mode)
    if image.mode == "F":  # high bit depth, in [0, 1]
        image = Image.fromarray(np.round(np.asarray(image) * 255).astype(np.uint8)).convert(mode)

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


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image `index`'s random crop: a function of (seed, index) only, so the crop does not depend
    on which process or DataLoader worker decodes the image, nor on whether the set is decoded once or streamed."""
    return np.random.default_rng([seed, index])


def decode_images(
    sources, resolution: int, channels: int, center_crop: bool, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """Decodes and preprocesses images once, skipping unreadable ones with a warning that names the file.

    Args:
        sources (iterable of `(name, opener)`):
            `opener()` returns a PIL image; `name` is what a warning reports.
        resolution, channels, center_crop: see [`preprocess_image`].
        seed (`int`, defaults to 0):
            Seed of the random crops (image k of the result is cropped by `item_rng(seed, k)`).

    Returns:
        `tuple[torch.Tensor, list[str]]`: uint8 images of shape (N, channels, resolution, resolution) and the names
        of the skipped files.
    """
    arrays, skipped = [], []
    for name, opener in sources:
        try:
            image = opener()
            image.load()
            arrays.append(preprocess_image(image, resolution, channels, center_crop, item_rng(seed, len(arrays))))
        except decode_errors() as err:
            logger.warning(f"Skipping corrupt or unreadable image {name}: {err}")
            skipped.append(str(name))
    if not arrays:
        raise ValueError(f"None of the {len(skipped)} images could be read (first: {skipped[:3]}).")
    return torch.from_numpy(np.stack(arrays)), skipped


def decode_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file that is not a readable image (truncated, corrupt, a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


def image_folder_paths(train_data_dir: str | os.PathLike, exclude=()) -> list[Path]:
    """Every image file under a folder (recursively, symbolic links to folders followed, sorted by path).

    Every image is read: no split rules (`datasets`' imagefolder would train on the 8 `train_*.png` among 32 images,
    or fail on a `test/` subfolder). Files under a folder of `exclude` (a run's --output_dir placed inside the data
    folder, say) are left out. A folder reached a second time (a link back up the tree, or two links to one folder)
    is read once, and named in a warning.
    """
    root = Path(train_data_dir)
    if not root.is_dir():
        raise ValueError(f"--train_data_dir {root} does not exist or is not a folder; pass a folder of images.")
    excluded = [Path(folder).resolve() for folder in exclude]
    paths, seen, again = [], set(), []
    for folder, subfolders, files in os.walk(root, followlinks=True):  # excluded folders are pruned, not each path
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            again.append(folder)
            subfolders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders.sort()  # the walk, and so which of two links to one folder is read, does not depend on the disk
        if any(Path(folder).resolve().is_relative_to(other) for other in excluded):
            subfolders.clear()
            continue
        paths += [
            Path(folder, name)
            for name in files
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, name))
        ]
    if again:
        logger.warning(
            f"--train_data_dir {root}: {len(again)} folder(s) reached through symbolic links were read already and "
            f"were not read again ({', '.join(again[:3])})."
        )
    paths.sort(key=lambda path: path.parts)  # as `Path`s sort, part by part: the order the batch order indexes
    if not paths:
        raise ValueError(
            f"--train_data_dir {root} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            "put the training images there (subfolders are fine)."
        )
    return paths


def image_folder_sources(train_data_dir: str | os.PathLike, cache_dir: str | None = None, exclude=()):
    """The images of [`image_folder_paths`] as `(path, opener)` pairs. `cache_dir` is accepted for symmetry with
    [`hub_dataset_sources`] and not used."""
    from PIL import Image

    # Decoding ourselves lets one corrupt file be skipped and named instead of failing the whole run mid-training.
    for path in image_folder_paths(train_data_dir, exclude):
        yield str(path), (lambda path=path: Image.open(path))


def load_train_split(dataset_name: str, dataset_config_name: str | None = None, cache_dir: str | None = None):
    """The train split of a `datasets` dataset: a Hub id, a local data folder or a `save_to_disk` folder.

    Raises a `ValueError` at once, without network retries, when the Hub is unreachable and the dataset is not cached.
    """
    import datasets

    local = Path(dataset_name)
    if not local.exists() and not datasets.config.HF_HUB_OFFLINE and not hub_reachable():
        raise ValueError(
            f"--dataset_name {dataset_name!r}: the Hub ({hub_endpoint()}) is unreachable. Connect to the network, "
            "or, if the dataset is already in the local cache, set HF_HUB_OFFLINE=1 to load it from there."
        )
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():  # written by save_to_disk
            dataset = datasets.load_from_disk(str(local))
            return dataset["train"] if isinstance(dataset, datasets.DatasetDict) else dataset
        return datasets.load_dataset(dataset_name, dataset_config_name, split="train", cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError)
        raise ValueError(f"--dataset_name {dataset_name!r} could not be loaded: {err}") from err


def load_image_table(dataset_name: str, dataset_config_name: str | None = None, cache_dir: str | None = None):
    """The train split of a `datasets` dataset ([`load_train_split`]) and the name of its image column, cast to
    undecoded records `{"bytes", "path"}`: nothing is decoded or held in memory."""
    import datasets

    dataset = load_train_split(dataset_name, dataset_config_name, cache_dir)
    column = next((name for name, f in dataset.features.items() if isinstance(f, datasets.Image)), None)
    if column is None:
        raise ValueError(
            f"--dataset_name {dataset_name!r} has no image column (columns: {list(dataset.features)}); "
            "pass a dataset with a `datasets.Image` feature."
        )
    return dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False)), column


def record_opener(record: dict):
    """`opener()` of an undecoded `datasets.Image` record: from its bytes, or from its file."""
    from io import BytesIO

    from PIL import Image

    if record.get("bytes") is not None:
        return lambda: Image.open(BytesIO(record["bytes"]))
    return lambda: Image.open(record["path"])


def hub_dataset_sources(dataset_name: str, dataset_config_name: str | None = None, cache_dir: str | None = None):
    """The images of a `datasets` dataset (see [`load_image_table`]), as `(name, opener)` pairs."""
    table, column = load_image_table(dataset_name, dataset_config_name, cache_dir)
    for index in range(len(table)):
        record = table[index][column]
        yield record.get("path") or f"{dataset_name}[{index}]", record_opener(record)
