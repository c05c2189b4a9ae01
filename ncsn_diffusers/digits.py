"""scikit-learn's handwritten digits as the embedded default dataset: no download, 1,797 images of 8x8 pixels.

The images ship inside scikit-learn (`sklearn.datasets.load_digits`, the UCI optical digits test set) with integer
values 0..16. They are scaled to [0, 1], resized to the requested resolution, and split once, deterministically and
stratified by class, into a training and a held-out part.
"""

import numpy as np
import torch
import torch.nn.functional as F

NATIVE_RESOLUTION = 8
SPLITS = ("train", "test", "all")


def load_digits_images(
    resolution: int = 16, split: str = "train", test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loads the handwritten digits as images in [0, 1].

    Args:
        resolution (`int`, defaults to 16):
            Side length R of the returned images. Any positive integer: 8 is the native size, other sizes are
            bilinear resizes (antialiased when shrinking).
        split (`str`, defaults to `"train"`):
            `"train"`, `"test"` (the held-out part) or `"all"` (every image, in scikit-learn's order).
        test_fraction (`float`, defaults to 0.2):
            Fraction of each class held out in the `"test"` split, strictly between 0 and 1.
        seed (`int`, defaults to 0):
            Seed of the split; the same seed gives the same split.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: images of shape `(N, 1, R, R)`, float32 in [0, 1], and their labels of
        shape `(N,)`, int64 in 0..9.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(
            f"`resolution` must be a positive integer (8 is the native size, others are resized), got {resolution!r}."
        )
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must lie strictly between 0 and 1, got {test_fraction!r}.")

    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.from_numpy(digits.images.astype(np.float32) / 16.0)  # (N, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))

    if split != "all":
        train_index, test_index = split_indices(digits.target, test_fraction, seed)
        index = torch.from_numpy(train_index if split == "train" else test_index)
        pixels, labels = pixels[index], labels[index]

    images = pixels.unsqueeze(1)  # (N, 1, 8, 8)
    if resolution != NATIVE_RESOLUTION:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True)
        images = images.clamp(0.0, 1.0)
    return images.contiguous(), labels


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / held-out indices, each sorted; a pure function of (labels, test_fraction, seed)."""
    from sklearn.model_selection import train_test_split

    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train_index), np.sort(test_index)
