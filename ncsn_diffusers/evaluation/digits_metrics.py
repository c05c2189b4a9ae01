"""Sample quality on the embedded digits: everything `evaluate_samples` reports, and the floor real data reaches.

The annealing of NCSN exists to fix the mixing of Langevin dynamics between modes (Section 3.2 of the paper); when it
fails, whole digits go missing or are over-represented, which `class_entropy`, `class_counts` and `classes_missing`
show directly, while the Fréchet distance mixes it with image quality.
"""

import torch
import torch.nn.functional as F

from ..digits import load_digits_images
from .classifier import DigitsClassifier, classifier_outputs, load_digits_classifier
from .feature_metrics import evaluate_features
from .metrics import check_finite, class_coverage, classifier_confidence, nearest_neighbour_memorisation
from .roughness import rough_fraction


def prepare_images(images, resolution: int | None = None) -> torch.Tensor:
    """Checks images of shape `(N, 1, H, H)` in [0, 1] and resizes them to `resolution` (defaults to H)."""
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(
            f"`images` must be square single-channel images of shape (N, 1, H, H), got {tuple(images.shape)}; "
            "convert colour images to grayscale first."
        )
    check_finite(images)
    if images.shape[0] < 2:
        raise ValueError(f"`images` must hold at least 2 images for a covariance, got {images.shape[0]}.")
    if images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(
            f"`images` must lie in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]; clamp them, or map "
            "[-1, 1] data with (x + 1) / 2."
        )
    if resolution is not None and resolution != images.shape[-1]:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True).clamp(0, 1)
    return images


def _metrics(
    images: torch.Tensor,
    reference: torch.Tensor,
    classifier: DigitsClassifier,
    threshold: float,
    nearest_k: int,
    kid_subset_size: int,
) -> dict:
    train_images, _ = load_digits_images(images.shape[-1], split="train")
    features, logits = classifier_outputs(classifier, images)
    reference_features, _ = classifier_outputs(classifier, reference)
    return {
        "num_samples": images.shape[0],
        "num_reference": reference.shape[0],
        **evaluate_features(reference_features, features, nearest_k=nearest_k, kid_subset_size=kid_subset_size),
        "classifier_confidence": classifier_confidence(logits.softmax(dim=1)),
        **class_coverage(logits.argmax(dim=1)),
        **nearest_neighbour_memorisation(images, train_images, threshold=threshold),
        **rough_fraction(images, train_images),
    }


def evaluate_samples(
    images,
    resolution: int | None = None,
    classifier_seed: int = 0,
    cache_dir: str | None = None,
    memorisation_threshold: float = 0.1,
    nearest_k: int = 5,
    kid_subset_size: int = 1000,
) -> dict:
    """Scores generated digits against the held-out digits split.

    Args:
        images (`torch.Tensor` of shape `(N, 1, H, H)`): generated images in [0, 1].
        resolution (`int`, *optional*): side length to evaluate at; defaults to H (other sizes are resized).
        classifier_seed (`int`, defaults to 0): training seed of the feature classifier.
        cache_dir (`str`, *optional*): classifier cache; defaults to `$NCSN_DIFFUSERS_CACHE` or
            `~/.cache/ncsn_diffusers`.
        memorisation_threshold (`float`, defaults to 0.1): nearest-neighbour ratio below which a sample is a copy.
        nearest_k (`int`, defaults to 5): k of precision, recall, density and coverage.
        kid_subset_size (`int`, defaults to 1000): KID subset size, capped at the smaller set's size (360 here).

    Returns:
        `dict`: `resolution`, `classifier_test_accuracy`, `num_samples`, `num_reference`; in the classifier's features,
        against the held-out split, `frechet_distance`, `precision`, `recall`, `density`, `coverage`, `kid_mean`,
        `kid_std` (see `evaluate_features`); `classifier_confidence`, `class_entropy`, `class_counts`,
        `classes_missing`, `memorisation_fraction`, `memorisation_median_ratio`, `memorisation_threshold`,
        `train_nn_distance`; `rough_fraction`, the share of samples rougher than every training digit, and
        `rough_threshold` (see `roughness.py`).
    """
    images = prepare_images(images, resolution)
    resolution = images.shape[-1]
    classifier, info = load_digits_classifier(resolution, seed=classifier_seed, cache_dir=cache_dir)
    test_images, _ = load_digits_images(resolution, split="test")
    return {
        "resolution": resolution,
        "classifier_test_accuracy": info["test_accuracy"],
        **_metrics(images, test_images, classifier, memorisation_threshold, nearest_k, kid_subset_size),
    }


def reference_floor(
    resolution: int,
    classifier_seed: int = 0,
    cache_dir: str | None = None,
    memorisation_threshold: float = 0.1,
    nearest_k: int = 5,
    kid_subset_size: int = 1000,
) -> dict:
    """The same metrics for the real held-out images, with the training split as the Fréchet reference.

    This is what a perfect sampler scores: fresh real digits, no copies. Its Fréchet distance uses the 360 held-out
    images, so compare it with samples of about that size (the estimate grows as N shrinks).

    Args:
        resolution (`int`): side length to evaluate at.
        classifier_seed, cache_dir, memorisation_threshold, nearest_k, kid_subset_size: as in `evaluate_samples`.

    Returns:
        `dict`: the keys of `evaluate_samples`.
    """
    classifier, info = load_digits_classifier(resolution, seed=classifier_seed, cache_dir=cache_dir)
    test_images, _ = load_digits_images(resolution, split="test")
    train_images, _ = load_digits_images(resolution, split="train")
    return {
        "resolution": resolution,
        "classifier_test_accuracy": info["test_accuracy"],
        **_metrics(test_images, train_images, classifier, memorisation_threshold, nearest_k, kid_subset_size),
    }
