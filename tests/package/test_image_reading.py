"""One reading of an image file for the whole package: the training set, the pipelines' inputs and the evaluator
give the same values in [0, 1] for 8-bit, 16-bit and float files."""

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from ncsn_diffusers.evaluation.image_io import load_images
from ncsn_diffusers.pipelines.pipeline_utils import prepare_images
from ncsn_diffusers.training.image_dataset import ImageFolderDataset
from ncsn_diffusers.training.images import decode_images, image_folder_sources

torch.set_num_threads(1)

FILES = {
    "mid-gray-16bit.png": np.full((8, 8), 32768, np.uint16),
    "white-16bit.png": np.full((8, 8), 65535, np.uint16),
    "dark-ramp-16bit.png": np.linspace(1000, 2000, 64).reshape(8, 8).astype(np.uint16),
    "mid-gray-8bit.png": np.full((8, 8), 128, np.uint8),
    "half-float.tif": np.full((8, 8), 0.5, np.float32),
}
EXPECTED = {name: values.astype(np.float64) / {np.uint16: 65535, np.uint8: 255, np.float32: 1}[values.dtype.type]
            for name, values in FILES.items()}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bit-depths")
    for name, values in FILES.items():
        PIL.Image.fromarray(values).save(root / name)
    return root


def test_training_pipelines_and_evaluator_read_every_bit_depth_alike(folder):
    """Bug caught: the training stream stretched each 16-bit or float image to its own full range (a uniform 16-bit
    mid-gray or white image, or a float 0.5 image, trained as black) while the pipelines and the evaluator read the
    same files as 0.5 and 1.0."""
    names = sorted(FILES)
    in_memory, skipped = decode_images(image_folder_sources(folder), 8, 1, True)
    streamed = ImageFolderDataset(folder, 8, 1, True, seed=0)
    assert not skipped and [Path(os.fsdecode(path)).name for path in streamed.paths] == names
    for k, name in enumerate(names):
        expected = EXPECTED[name]
        for training in (in_memory[k], streamed[k]):  # uint8, as the training set is held
            np.testing.assert_allclose(training[0].numpy() / 255.0, expected, atol=0.5 / 255 + 1e-9)
        with PIL.Image.open(folder / name) as image:
            piped = prepare_images(image, channels=1, sample_size=8)[0, 0].numpy()
        np.testing.assert_allclose(piped, expected, atol=1e-6)
    pngs = [name for name in names if name.endswith(".png")]  # the evaluator reads PNG, JPEG, BMP, WebP
    evaluated = load_images(str(folder), mode="L")
    for k, name in enumerate(pngs):
        np.testing.assert_allclose(evaluated[k, 0].numpy(), EXPECTED[name], atol=1e-6)


def test_a_float_image_outside_the_unit_range_is_named_not_stretched(tmp_path):
    """Bug caught: a float image in other units was stretched to [0, 1] by its own extremes; it is refused, naming
    the range (skipped with a warning by the training set)."""
    PIL.Image.fromarray(np.full((8, 8), 3.0, np.float32)).save(tmp_path / "hdr.tif")
    PIL.Image.fromarray(np.full((8, 8), 0.25, np.float32)).save(tmp_path / "ok.tif")
    images, skipped = decode_images(image_folder_sources(tmp_path), 8, 1, True)
    assert skipped == [str(tmp_path / "hdr.tif")] and images.unique().tolist() == [64]
    with PIL.Image.open(tmp_path / "hdr.tif") as image, pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        prepare_images(image, channels=1, sample_size=8)
