"""Standard FID and Inception Score on any image dataset, with torch-fidelity's Inception-v3.

torch-fidelity is the library used here because its Inception-v3 is a port of the TensorFlow graph the published FID
and IS numbers come from, checked against it, including TensorFlow's bilinear resize to 299x299; it gives both FID and
IS from one forward pass; it is also what torchmetrics' FID and IS load under the hood. clean-fid has no IS.

It is imported lazily and is not a dependency of this package; its weights download on first use. The Fréchet and IS
formulas are this package's own (`metrics.py`, the same as torch-fidelity's), so any feature function can be plugged
in: the offline tests use the digits classifier in place of Inception.
"""

from collections.abc import Callable

import torch

from .classifier import DigitsClassifier, classifier_outputs
from .feature_metrics import evaluate_features
from .image_io import rgb_to_luma
from .metrics import check_finite, inception_score

# images (N, C, H, W) in [0, 1] -> (features (N, D), logits (N, K))
FeatureFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def inception_feature_function(device: str | torch.device = "cpu", batch_size: int = 64) -> FeatureFunction:
    """torch-fidelity's Inception-v3: the 2048-d pool features for FID and the unbiased logits for IS, as it uses."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as error:
        raise ImportError(
            "`--metric fid` computes FID and IS with torch-fidelity's Inception-v3, which is not installed. Install "
            "it with `pip install torch-fidelity` (the weights download on first use), or use `--metric digits`, "
            "which works offline."
        ) from error

    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).to(device)

    @torch.no_grad()
    def features_and_logits(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = [], []
        for batch in images.split(batch_size):
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch  # grayscale -> RGB
            pool, logit = extractor((batch * 255).round().clamp(0, 255).to(device, torch.uint8))
            features.append(pool.cpu())
            logits.append(logit.cpu())
        return torch.cat(features), torch.cat(logits)

    return features_and_logits


def digits_feature_function(classifier: DigitsClassifier) -> FeatureFunction:
    """The digits classifier as a feature function: penultimate features and logits of single-channel images."""

    def features_and_logits(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return classifier_outputs(classifier, rgb_to_luma(images) if images.shape[1] == 3 else images)

    return features_and_logits


def compute_fid_metrics(
    samples: torch.Tensor,
    reference: torch.Tensor,
    feature_function: FeatureFunction | None = None,
    device: str | torch.device = "cpu",
    isc_splits: int = 10,
    nearest_k: int = 5,
    kid_subset_size: int = 1000,
) -> dict:
    """FID of `samples` against `reference`, the Inception Score of `samples`, and the metrics of `evaluate_features`
    (precision, recall, density, coverage, KID) in the same features.

    Args:
        samples (`torch.Tensor` of shape `(N, C, H, W)`): generated images in [0, 1], C of 1 or 3.
        reference (`torch.Tensor` of shape `(M, C, H', W')`): real images in [0, 1].
        feature_function (`Callable`, *optional*): images -> (features, logits); defaults to torch-fidelity's
            Inception-v3.
        device (`str` or `torch.device`, defaults to `"cpu"`): where the default Inception runs.
        isc_splits (`int`, defaults to 10): the chunks the Inception Score is averaged over.
        nearest_k (`int`, defaults to 5): k of precision, recall, density and coverage.
        kid_subset_size (`int`, defaults to 1000): KID subset size, capped at the smaller set's size.

    Returns:
        `dict`: `fid`, `inception_score_mean`, `inception_score_std`, `precision`, `recall`, `density`, `coverage`,
        `kid_mean`, `kid_std`, `num_samples`, `num_reference`.
    """
    check_finite(samples)
    check_finite(reference, "reference images")
    if feature_function is None:
        feature_function = inception_feature_function(device)
    sample_features, sample_logits = feature_function(samples)
    reference_features, _ = feature_function(reference)
    is_mean, is_std = inception_score(sample_logits, splits=isc_splits)
    scores = evaluate_features(
        reference_features, sample_features, nearest_k=nearest_k, kid_subset_size=kid_subset_size, device=device
    )
    return {
        "fid": scores.pop("frechet_distance"),
        "inception_score_mean": is_mean,
        "inception_score_std": is_std,
        **scores,
        "num_samples": samples.shape[0],
        "num_reference": reference.shape[0],
    }
