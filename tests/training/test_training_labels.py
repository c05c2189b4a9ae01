"""The classes a noise classifier trains on: the first folder under --train_data_dir, whatever lies below it, and a
label column read as datasets' users mean it; single-class data and integer labels with gaps are refused."""

import logging

import numpy as np
import pytest
from PIL import Image

from ncsn_diffusers.training.labels import dataset_column_labels, image_folder_labels


def write_images(root, relative_paths):
    for relative in relative_paths:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / relative)
    return root


def test_folder_classes_are_the_first_level_folders_whatever_their_subfolders(tmp_path, caplog):
    """Bug caught: the class was each image's immediate folder, so cat/2023/, dog/2023/, cat/2024/ trained a
    "2023 vs 2024" classifier."""
    data = write_images(tmp_path / "data", ["cat/2023/a.png", "cat/2024/b.png", "cat/c.png", "dog/2023/d.png"])
    with caplog.at_level(logging.INFO, logger="ncsn_diffusers.training.labels"):
        labels, names = image_folder_labels(data)
    assert names == ["cat", "dog"] and labels.tolist() == [0, 0, 0, 1]  # files sorted by path
    assert "cat: 3, dog: 1" in caplog.text

    single = write_images(tmp_path / "one", ["all/cat/a.png", "all/dog/b.png"])
    with pytest.raises(ValueError, match=r"one class folder \(all\).*subfolders \(cat, dog\), pass .*all"):
        image_folder_labels(single)


def column_dataset(tmp_path, labels, feature=None):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": feature or datasets.Value("int64")})
    pixels = [Image.fromarray(np.full((4, 4), 10 * k, np.uint8)) for k in range(len(labels))]
    table = datasets.Dataset.from_dict({"img": pixels, "label": labels}, features=features)
    folder = tmp_path / f"set{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    table.to_parquet(str(folder / "train.parquet"))
    return str(folder)


def test_a_label_column_never_silently_builds_empty_classes(tmp_path, caplog):
    """Bug caught: a column whose rows are all one class trained a 10-class classifier (its ClassLabel's size), and
    integer labels {0, 5} gave 6 classes, 4 never seen."""
    import datasets

    digits = datasets.ClassLabel(names=[str(k) for k in range(10)])
    with pytest.raises(ValueError, match="all 4 rows are class 3; a classifier needs images of two or more classes"):
        dataset_column_labels(column_dataset(tmp_path, [3, 3, 3, 3], digits), None, None, "label")
    with pytest.raises(ValueError, match="all 3 rows are class 7"):
        dataset_column_labels(column_dataset(tmp_path, [7, 7, 7]), None, None, "label")
    with pytest.raises(ValueError, match=r"the integers \[0, 5\].*\[1, 2, 3, 4\] would be classes without an image.*"
                       r"class_encode_column\('label'\)"):  # fmt: skip
        dataset_column_labels(column_dataset(tmp_path, [0, 5, 5, 0]), None, None, "label")

    labels, names = dataset_column_labels(column_dataset(tmp_path, [2, 0, 1, 2]), None, None, "label")
    assert labels.tolist() == [2, 0, 1, 2] and names == ["0", "1", "2"]
    encoded = datasets.ClassLabel(names=["0", "5"])  # what class_encode_column makes of {0, 5}
    labels, names = dataset_column_labels(column_dataset(tmp_path, [0, 1, 1], encoded), None, None, "label")
    assert labels.tolist() == [0, 1, 1] and names == ["0", "5"]
    with caplog.at_level(logging.WARNING, logger="ncsn_diffusers.training.labels"):
        labels, names = dataset_column_labels(column_dataset(tmp_path, [0, 1, 0], digits), None, None, "label")
    assert len(names) == 10 and "no row is of 2, 3, 4, 5, 6, 7, 8, 9" in caplog.text


def test_a_save_to_disk_dataset_gives_its_label_column_as_it_gives_its_images(tmp_path):
    """Bug caught: the images of a `save_to_disk` folder streamed (training/images.py reads it with load_from_disk),
    but its labels went through `datasets.load_dataset`, which cannot read such a folder: a raw datasets traceback."""
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    pixels = [Image.fromarray(np.full((4, 4), 10 * k, np.uint8)) for k in range(3)]
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"img": pixels, "label": [1, 0, 1]}, features=features).save_to_disk(str(folder))
    labels, names = dataset_column_labels(str(folder), None, None, "label")
    assert labels.tolist() == [1, 0, 1] and names == ["a", "b"]
