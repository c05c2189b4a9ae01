"""The class labels of the training set, aligned with the image index the batch order yields.

`load_training_labels(args)` returns a (N,) int64 tensor whose entry i is the class of training image i: the i-th
digit of the train split, the i-th file of `--train_data_dir` (sorted by path, as the images are read), or the i-th
row of `--dataset_name`. A batch of indices `index` has the labels `labels[index]`.
"""

from pathlib import Path

import torch

from ..digits import load_digits_images
from .images import image_folder_sources


def load_training_labels(args) -> tuple[torch.Tensor, list[str]]:
    """(labels, class names) of the training set of `args` (a resolved `TrainingConfig`).

    - the digits: their digit, classes "0" to "9";
    - `--train_data_dir`: the name of the folder each image is in (datasets' `imagefolder` convention,
      DIR/<class>/<image>), classes sorted by name;
    - `--dataset_name`: the column `--label_column`, a `datasets.ClassLabel` (its names) or integers 0..K-1.

    Raises:
        `ValueError`: naming the flag, for images outside a class folder, fewer than two classes, or a missing or
        non-integer label column.
    """
    if args.train_data_dir is not None:
        return image_folder_labels(args.train_data_dir, exclude=[args.output_dir])
    if args.dataset_name is not None:
        return dataset_column_labels(args.dataset_name, args.dataset_config_name, args.cache_dir, args.label_column)
    _, labels = load_digits_images(resolution=args.resolution, split="train")
    return labels, [str(k) for k in range(10)]


def image_folder_labels(train_data_dir, exclude=()) -> tuple[torch.Tensor, list[str]]:
    """The class of every image under `train_data_dir`, in the order the images are read: its folder's name."""
    root = Path(train_data_dir)
    paths = [Path(name) for name, _ in image_folder_sources(root, exclude=exclude)]
    loose = [path for path in paths if path.parent == root]
    if loose:
        raise ValueError(
            f"--train_data_dir {root} holds images outside a class folder ({', '.join(p.name for p in loose[:3])}): "
            "--objective noise_classifier takes each image's class from the name of its folder, "
            "DIR/<class>/<image> (datasets' imagefolder convention). Move them into class folders."
        )
    names = sorted({path.parent.name for path in paths})
    if len(names) < 2:
        raise ValueError(f"--train_data_dir {root} has one class folder ({names[0]}); a classifier needs two or more.")
    index = {name: k for k, name in enumerate(names)}
    return torch.tensor([index[path.parent.name] for path in paths], dtype=torch.int64), names


def dataset_column_labels(dataset_name, config_name, cache_dir, label_column: str) -> tuple[torch.Tensor, list[str]]:
    """The column `label_column` of the train split of a `datasets` dataset, row by row."""
    import datasets

    dataset = datasets.load_dataset(dataset_name, config_name, split="train", cache_dir=cache_dir)
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
    num_classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(labels.max()) + 1
    if labels.min() < 0 or num_classes < 2:
        raise ValueError(
            f"--label_column {label_column!r} of {dataset_name!r} must hold classes 0..K-1 with K >= 2, got values "
            f"{int(labels.min())}..{int(labels.max())}."
        )
    names = feature.names if isinstance(feature, datasets.ClassLabel) else [str(k) for k in range(num_classes)]
    return labels.to(torch.int64), names
