"""The class labels of the training set, aligned with the image index the batch order yields.

`load_training_labels(args)` returns a (N,) int64 tensor whose entry i is the class of training image i: the i-th
digit of the train split, the i-th file of `--train_data_dir` (sorted by path, as the images are read), or the i-th
row of `--dataset_name`. A batch of indices `index` has the labels `labels[index]`.
"""

import logging
from pathlib import Path

import torch

from ..digits import load_digits_images
from .images import image_folder_sources, load_train_split

logger = logging.getLogger(__name__)


def load_training_labels(args) -> tuple[torch.Tensor, list[str]]:
    """(labels, class names) of the training set of `args` (a resolved `TrainingConfig`).

    - the digits: their digit, classes "0" to "9";
    - `--train_data_dir`: the name of the first folder under it on each image's path (datasets' `imagefolder`
      convention, DIR/<class>/<image>; deeper subfolders belong to their class folder), classes sorted by name;
    - `--dataset_name`: the column `--label_column`, a `datasets.ClassLabel` (its names; classes without a row are
      named in a warning) or integers that are exactly 0..K-1 (names "0".."K-1").

    Raises:
        `ValueError`: naming the flag, for images outside a class folder, fewer than two classes present, integer
        labels with gaps ({0, 5}: map them to 0..K-1 or make them a ClassLabel), or a missing or non-integer label
        column.
    """
    if args.train_data_dir is not None:
        return image_folder_labels(args.train_data_dir, exclude=[args.output_dir])
    if args.dataset_name is not None:
        return dataset_column_labels(args.dataset_name, args.dataset_config_name, args.cache_dir, args.label_column)
    _, labels = load_digits_images(resolution=args.resolution, split="train")
    return labels, [str(k) for k in range(10)]


def image_folder_labels(train_data_dir, exclude=()) -> tuple[torch.Tensor, list[str]]:
    """The class of every image under `train_data_dir`, in the order the images are read: the name of the first
    folder below `train_data_dir` on its path (DIR/<class>/.../<image>), whatever subfolders lie under it, as
    datasets' imagefolder names the classes of DIR/<class>/<image>."""
    root = Path(train_data_dir)
    paths = [Path(name).relative_to(root) for name, _ in image_folder_sources(root, exclude=exclude)]
    loose = [path for path in paths if len(path.parts) == 1]
    if loose:
        raise ValueError(
            f"--train_data_dir {root} holds images outside a class folder ({', '.join(p.name for p in loose[:3])}): "
            "--objective noise_classifier takes each image's class from the first folder under --train_data_dir, "
            "DIR/<class>/<image> (datasets' imagefolder convention). Move them into class folders."
        )
    names = sorted({path.parts[0] for path in paths})
    if len(names) < 2:
        nested = sorted({path.parts[1] for path in paths if len(path.parts) > 2})
        hint = (
            f"; to take the classes from its subfolders ({', '.join(nested[:5])}), pass {root / names[0]}"
            if nested
            else ""
        )
        raise ValueError(
            f"--train_data_dir {root} has one class folder ({names[0]}); a classifier needs two or more{hint}."
        )
    index = {name: k for k, name in enumerate(names)}
    labels = torch.tensor([index[path.parts[0]] for path in paths], dtype=torch.int64)
    counts = ", ".join(f"{name}: {n}" for name, n in zip(names, labels.bincount(minlength=len(names)).tolist()))
    logger.info(f"Classes of --train_data_dir {root} (its first-level folders): {counts}")
    return labels, names


def dataset_column_labels(dataset_name, config_name, cache_dir, label_column: str) -> tuple[torch.Tensor, list[str]]:
    """The column `label_column` of the train split of a `datasets` dataset (a Hub id, a local data folder or a
    `save_to_disk` folder, read as the images are: [`load_train_split`]), row by row."""
    import datasets

    dataset = load_train_split(dataset_name, config_name, cache_dir)
    if label_column not in dataset.features:
        raise ValueError(
            f"--dataset_name {dataset_name!r} has no column {label_column!r} (columns: {list(dataset.features)}); "
            "pass the one holding the classes with --label_column."
        )
    feature = dataset.features[label_column]
    try:
        labels = torch.as_tensor(dataset[label_column])
    except (TypeError, ValueError):  # strings, nested lists
        labels = None
    if labels is None or labels.is_floating_point() or labels.ndim != 1:
        raise ValueError(
            f"--label_column {label_column!r} of {dataset_name!r} holds {feature}, not one integer class per image; "
            "pass a ClassLabel or integer column."
        )
    present = sorted(labels.unique().tolist())
    if present[0] < 0:
        raise ValueError(
            f"--label_column {label_column!r} of {dataset_name!r} holds negative values ({present[0]}); classes are "
            "0..K-1."
        )
    if len(present) < 2:
        raise ValueError(
            f"--label_column {label_column!r} of {dataset_name!r}: all {len(labels)} rows are class {present[0]}; a "
            "classifier needs images of two or more classes."
        )
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        absent = [names[k] for k in range(len(names)) if k not in set(present)]
        if absent:
            logger.warning(
                f"--label_column {label_column!r}: the ClassLabel names {len(names)} classes but no row is of "
                f"{', '.join(absent[:10])}; the classifier keeps an output for each (never trained)."
            )
        return labels.to(torch.int64), names
    if present != list(range(len(present))):
        missing = sorted(set(range(present[-1] + 1)) - set(present))
        raise ValueError(
            f"--label_column {label_column!r} of {dataset_name!r} holds the integers {present[:10]}: integer labels "
            f"are class indices 0..K-1, so {missing[:10]} would be classes without an image. Make them a ClassLabel "
            f"(`dataset.class_encode_column({label_column!r})`, which numbers the values in sorted order and names "
            "the classes after them), or map them to 0..K-1."
        )
    return labels.to(torch.int64), [str(k) for k in present]
