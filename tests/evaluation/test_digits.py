import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ncsn_diffusers.digits import load_digits_images, split_indices


def test_native_resolution_is_the_raw_data_over_16():
    images, labels = load_digits_images(resolution=8, split="all")
    raw = load_digits()
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.shape == (1797, 1, 8, 8)
    assert torch.equal(images[:, 0], torch.from_numpy(raw.images.astype(np.float32)) / 16)
    assert torch.equal(labels, torch.from_numpy(raw.target).long())


@pytest.mark.parametrize("resolution", [4, 16, 32])
def test_resized_shape_and_range(resolution):
    images, labels = load_digits_images(resolution=resolution, split="test")
    assert images.shape == (len(labels), 1, resolution, resolution)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Bilinear resizing keeps each image's mean brightness (exactly when enlarging: the kernel weights sum to 1).
    native, _ = load_digits_images(resolution=8, split="test")
    assert torch.allclose(
        images.mean(dim=(1, 2, 3)), native.mean(dim=(1, 2, 3)), atol=0.03 if resolution < 8 else 1e-6
    )


def test_split_is_deterministic_disjoint_and_complete():
    labels = load_digits().target
    train_a, test_a = split_indices(labels, 0.2, seed=0)
    train_b, test_b = split_indices(labels, 0.2, seed=0)
    np.testing.assert_array_equal(train_a, train_b)
    np.testing.assert_array_equal(test_a, test_b)
    assert np.intersect1d(train_a, test_a).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_a, test_a])), np.arange(len(labels)))
    _, test_other_seed = split_indices(labels, 0.2, seed=1)
    assert not np.array_equal(test_a, test_other_seed)


def test_split_images_are_the_indexed_images_and_do_not_overlap():
    all_images, _ = load_digits_images(8, split="all")
    train, _ = load_digits_images(8, split="train")
    test, _ = load_digits_images(8, split="test")
    train_index, test_index = split_indices(load_digits().target, 0.2, seed=0)
    assert torch.equal(train, all_images[train_index])
    assert torch.equal(test, all_images[test_index])
    # The digits contain no duplicate images, so no held-out image is at distance 0 from a training image.
    assert torch.cdist(test.flatten(1), train.flatten(1)).min() > 0


def test_split_is_stratified():
    _, all_labels = load_digits_images(8, split="all")
    _, test_labels = load_digits_images(8, split="test", test_fraction=0.2)
    per_class = torch.bincount(all_labels, minlength=10).double()
    held_out = torch.bincount(test_labels, minlength=10).double()
    assert len(test_labels) == 360  # ceil(0.2 * 1797)
    assert torch.all((held_out - 0.2 * per_class).abs() <= 1.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"resolution": 0}, "resolution"),
        ({"resolution": 8.0}, "resolution"),
        ({"split": "validation"}, "split"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_digits_images(**kwargs)
