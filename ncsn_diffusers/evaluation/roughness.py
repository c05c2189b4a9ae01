"""The share of samples rougher than any real digit: what a person sees first in a grid of samples.

A digit of the embedded data set is an 8x8 image, so at any larger resolution its high-frequency energy — the mean
square of the image minus its 8x8 down-and-up-sampled version — is small. Samples with leftover noise (salt and pepper,
grain) have more of it than every training digit: `rough_fraction` counts them.
"""

import torch
import torch.nn.functional as F

NATIVE_SIZE = 8  # the digits' own side length


def high_frequency_energy(images: torch.Tensor, low_size: int) -> torch.Tensor:
    """Mean square of `images` `(N, C, H, W)` minus their `low_size` x `low_size` version upsampled back: `(N,)`."""
    images = images.to(torch.float64)
    low = F.interpolate(images, size=(low_size, low_size), mode="area")
    low = F.interpolate(low, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return (images - low).square().flatten(1).mean(1)


def rough_fraction(images: torch.Tensor, training_images: torch.Tensor) -> dict:
    """
    The share of `images` with more high-frequency energy than the roughest of `training_images` (same resolution).

    The low-pass size is the digits' native 8 at resolutions above 8, and half the side at 8 or below, where real
    digits carry high frequencies of their own and only heavy noise stands out.

    Returns:
        `dict`: `rough_fraction` (share of `images` rougher than every training image) and `rough_threshold` (the
        training images' largest energy).
    """
    if images.shape[-2:] != training_images.shape[-2:]:
        raise ValueError(f"`images` {tuple(images.shape[-2:])} and `training_images` "
                         f"{tuple(training_images.shape[-2:])} must have one resolution.")  # fmt: skip
    side = images.shape[-1]
    low_size = NATIVE_SIZE if side > NATIVE_SIZE else max(1, side // 2)
    threshold = high_frequency_energy(training_images, low_size).max()
    rough = high_frequency_energy(images, low_size) > threshold
    return {"rough_fraction": rough.double().mean().item(), "rough_threshold": threshold.item()}
