"""Training images decoded one at a time: map-style `torch.utils.data.Dataset`s over a folder's file list or a
`datasets` table, for a `DataLoader` with worker processes (nothing but the list of files is held in memory)."""

import logging
import os

import numpy as np
import torch

from .images import (
    decode_errors,
    image_folder_paths,
    item_rng,
    load_image_table,
    preprocess_image,
    record_opener,
)

logger = logging.getLogger(__name__)

# Images one DataLoader worker decodes per batch at start-up.
DECODE_CHECK_BATCH = 256


class DecodeChecks(torch.utils.data.Dataset):
    """Item k: "" when image k of `images` decodes and preprocesses as training will read it, else the warning
    naming it; checked by DataLoader workers at start-up, so that a corrupt body (its header fine) is skipped then,
    not met when its batch comes."""

    def __init__(self, images: "PreprocessedImages"):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> str:
        name, _ = self.images.source(index)
        try:
            self.images.decode(index)
            return ""
        except decode_errors() as err:
            return f"Skipping corrupt or unreadable image {name}: {err}"


def readable_items(images: "PreprocessedImages", num_workers: int) -> np.ndarray:
    """The indices of the items of `images` that decode; warns, naming each file, for the others."""
    checks = torch.utils.data.DataLoader(
        DecodeChecks(images), batch_size=DECODE_CHECK_BATCH, num_workers=num_workers, collate_fn=list
    )
    warnings = [warning for batch in checks for warning in batch]
    for warning in filter(None, warnings):
        logger.warning(warning)
    return np.array([index for index, warning in enumerate(warnings) if not warning], dtype=np.int64)


class PreprocessedImages(torch.utils.data.Dataset):
    """Item k: image k decoded and preprocessed as [`preprocess_image`] does, its random crop drawn from
    `item_rng(seed, k)` (never from a worker's state), as a uint8 tensor (channels, resolution, resolution).

    Subclasses give `source(k) -> (name, opener)`, `__len__` and `file_list()`. An image that decoded at start-up
    but no longer does (changed since) stops the run with a `ValueError` naming it.
    """

    def __init__(self, resolution: int, channels: int, center_crop: bool, seed: int):
        self.resolution, self.channels, self.center_crop, self.seed = resolution, channels, center_crop, seed

    def source(self, index: int):
        raise NotImplementedError

    def decode(self, index: int) -> np.ndarray:
        """Image `index` as (channels, resolution, resolution) uint8; raises one of `decode_errors()` if it fails."""
        _, opener = self.source(index)
        with opener() as image:
            image.load()
            return preprocess_image(
                image, self.resolution, self.channels, self.center_crop, item_rng(self.seed, index)
            )

    def __getitem__(self, index: int) -> torch.Tensor:
        name, _ = self.source(index)
        try:
            array = self.decode(index)
        except decode_errors() as err:
            raise ValueError(
                f"Training image {name} could not be decoded ({err}); remove or replace it, then resume the run "
                "with --resume_from_checkpoint latest."
            ) from err
        return torch.from_numpy(array.copy())  # PIL's buffer is read-only


class ImageFolderDataset(PreprocessedImages):
    """Every image file under `train_data_dir` (see [`image_folder_paths`]); files that cannot be decoded are
    skipped at start-up (checked by `num_workers` workers) with a warning naming them, as the in-memory path did.

    Paths are held as one numpy bytes array, not a list of `str`: forked workers would otherwise copy the pages of
    every string they touch (reference counts), and the workers' memory would grow with the data set.
    """

    def __init__(
        self,
        train_data_dir,
        resolution: int,
        channels: int,
        center_crop: bool,
        seed: int,
        exclude=(),
        num_workers: int = 0,
    ):
        super().__init__(resolution, channels, center_crop, seed)
        self.paths = np.array([os.fsencode(path) for path in image_folder_paths(train_data_dir, exclude)])
        self.paths = self.paths[readable_items(self, num_workers)]
        if not len(self.paths):
            raise ValueError(f"--train_data_dir {train_data_dir}: none of its image files could be read.")
        self.root = os.fsencode(os.path.join(train_data_dir, ""))

    def __len__(self) -> int:
        return len(self.paths)

    def file_list(self) -> list[bytes]:
        """The files trained on, relative to --train_data_dir, in batch-order index order."""
        return [bytes(path).removeprefix(self.root) for path in self.paths]

    def source(self, index: int):
        from PIL import Image

        path = os.fsdecode(self.paths[index])
        return path, lambda: Image.open(path)


class ImageTableDataset(PreprocessedImages):
    """The images of a `datasets` dataset (see [`load_image_table`]), read row by row from its memory-mapped table;
    rows whose image cannot be decoded are skipped at start-up (checked by `num_workers` workers) with a warning
    naming them."""

    def __init__(
        self,
        dataset_name: str,
        dataset_config_name: str | None,
        cache_dir: str | None,
        resolution: int,
        channels: int,
        center_crop: bool,
        seed: int,
        num_workers: int = 0,
    ):
        super().__init__(resolution, channels, center_crop, seed)
        self.dataset_name = dataset_name
        self.table, self.column = load_image_table(dataset_name, dataset_config_name, cache_dir)
        self.rows = np.arange(len(self.table), dtype=np.int64)
        self.rows = self.rows[readable_items(self, num_workers)]
        if not len(self.rows):
            raise ValueError(f"--dataset_name {dataset_name!r}: none of its {len(self.table)} images could be read.")

    def file_list(self) -> list[bytes]:
        """The rows trained on, in batch-order index order."""
        return [str(int(row)).encode() for row in self.rows]

    def _name(self, row: int, record: dict) -> str:
        return record.get("path") or f"{self.dataset_name}[{row}]"

    def __len__(self) -> int:
        return len(self.rows)

    def source(self, index: int):
        row = int(self.rows[index])
        record = self.table[row][self.column]
        return self._name(row, record), record_opener(record)
