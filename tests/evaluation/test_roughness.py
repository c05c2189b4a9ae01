"""The share of rough samples: none among real digits, every one of a noisy half, at 16x16 and 8x8."""

import pytest
import torch

from ncsn_diffusers import load_digits_images
from ncsn_diffusers.evaluation.roughness import high_frequency_energy, rough_fraction


@pytest.mark.parametrize("resolution", [16, 32])
def test_real_digits_are_smooth_and_noisy_ones_rough(resolution):
    train, _ = load_digits_images(resolution, split="train")
    test, _ = load_digits_images(resolution, split="test")
    assert rough_fraction(train, train)["rough_fraction"] == 0.0  # the threshold is the training maximum itself
    assert rough_fraction(test, train)["rough_fraction"] <= 0.02  # fresh real digits: (almost) never rougher
    generator = torch.Generator().manual_seed(0)
    salt_and_pepper = (torch.rand(test.shape, generator=generator) < 0.1).float()
    noisy = test.clone()
    noisy[::2] = torch.maximum(noisy[::2], salt_and_pepper[::2])  # one pixel in ten set white, in every other image
    share = rough_fraction(noisy, train)["rough_fraction"]
    assert share == pytest.approx(0.5, abs=0.02)


def test_at_the_native_size_real_digits_are_never_rough():
    train, _ = load_digits_images(8, split="train")
    test, _ = load_digits_images(8, split="test")
    assert rough_fraction(train, train)["rough_fraction"] == 0.0
    assert rough_fraction(test, train)["rough_fraction"] <= 0.02


def test_energy_is_zero_for_a_low_resolution_image_and_matches_a_hand_computation():
    smooth = torch.ones(1, 1, 16, 16) * 0.3
    assert high_frequency_energy(smooth, 8).item() == pytest.approx(0.0, abs=1e-12)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2  # pixel-level checkerboard of 0 and 1
    # area-downsampling by 2 averages every 2x2 block to 0.5, so the residual is +-0.5 everywhere: energy 0.25
    assert high_frequency_energy(checker.float()[None, None], 8).item() == pytest.approx(0.25)


def test_evaluate_samples_reports_the_share(tmp_path):
    from ncsn_diffusers.evaluation import evaluate_samples

    test, _ = load_digits_images(16, split="test")
    noisy = (test + 0.1 * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    results = evaluate_samples(noisy, cache_dir=str(tmp_path))
    assert results["rough_fraction"] == 1.0
