"""noise_classifier_loss: the cross-entropy of data perturbed at the score model's sigmas, and what it learns."""

import math

import pytest
import torch
from analytic_classifier import MixturePosteriorClassifier

from ncsn_diffusers import NoiseConditionalClassifier
from ncsn_diffusers.training.noise_classifier import noise_classifier_loss

TINY = dict(sample_size=4, block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"))


def two_class_images(n=256):
    """Constant 1x4x4 images at -0.5 (class 0) and +0.5 (class 1), pixel std 0.1."""
    labels = torch.arange(n) % 2
    images = (labels.float() - 0.5).reshape(-1, 1, 1, 1) + 0.1 * torch.randn(n, 1, 4, 4)
    return images, labels


def test_loss_is_the_cross_entropy_of_the_perturbed_sample():
    # The exact posterior of the mixture N(-/+0.5, 0.1^2) per pixel, by hand at sigma = 0.3 for one point
    means = [[-0.5] * 16, [0.5] * 16]
    classifier = MixturePosteriorClassifier(means, [0.5, 0.5], std=0.1)
    clean, noise = torch.full((1, 1, 4, 4), 0.1), torch.full((1, 1, 4, 4), -0.5)
    sigma = torch.tensor([0.3])  # x~ = 0.1 - 0.15 = -0.05 in every pixel
    var = 0.1**2 + 0.3**2
    logit_0, logit_1 = -16 * 0.45**2 / (2 * var), -16 * 0.55**2 / (2 * var)
    expected = -(logit_1 - math.log(math.exp(logit_0) + math.exp(logit_1)))
    loss = noise_classifier_loss(classifier, clean, torch.tensor([1]), sigma, noise)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_training_on_the_loss_learns_the_classes():
    torch.manual_seed(0)
    classifier = NoiseConditionalClassifier(**TINY, num_classes=2)
    images, labels = two_class_images()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        sigma = 0.01 * 1000 ** torch.rand(64, generator=generator)  # log-uniform in [0.01, 10]
        index = torch.randint(0, len(images), (64,), generator=generator)
        noise = torch.randn(64, 1, 4, 4, generator=generator)
        loss = noise_classifier_loss(classifier, images[index], labels[index], sigma, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    test_images, test_labels = two_class_images(128)
    with torch.no_grad():
        accuracy = (classifier(test_images, 0.05).logits.argmax(1) == test_labels).float().mean()
    assert accuracy > 0.95  # classes 10 pixel stds apart are separable at sigma = 0.05; a loss ignoring labels fails
