"""Training a noise-conditional classifier p_phi(y | x, sigma) for classifier guidance (Song et al., 2021, App. I).

`train_ncsn.py --objective noise_classifier` trains it by cross-entropy on labelled data perturbed as the score
model's data were: x~ = x + sigma z, sigma drawn from the score model's training distribution (log-uniform over
[sigma_L, sigma_1] for the default run), so that at every sigma a sampler visits, grad_x log p_phi(y | x~, sigma) is
the gradient of a classifier that has seen data at that noise level. The run ends with the classifier saved by
`save_pretrained` (no pipeline, no sample grid) and its model card.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger

from ..hub.card_file import write_card
from ..hub.classifier_card import render_classifier_card
from ..models import NoiseConditionalClassifier
from ..parameterization import append_dims
from .data import card_datasets, dataset_label

logger = get_logger(__name__, log_level="INFO")


def noise_classifier_logits(
    classifier: torch.nn.Module, clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """(B, K) float32 logits of p_phi(. | x + sigma z, sigma)."""
    noisy = clean + append_dims(sigma.to(clean.dtype), clean.ndim) * noise
    return classifier(noisy, sigma).logits.float()  # fp32 under autocast


def noise_classifier_loss(
    classifier: torch.nn.Module, clean: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """
    Cross-entropy -log p_phi(y | x + sigma z, sigma), the mean over the batch.

    Args:
        classifier (`torch.nn.Module`): maps `(x~, sigma)` to an output with `.logits` of shape `(B, K)`.
        clean (`torch.Tensor` of shape `(B, C, H, W)`): x, in the score model's data range.
        labels (`torch.Tensor` of shape `(B,)`): y, integer classes.
        sigma (`torch.Tensor` of shape `(B,)`): the noise level of each sample.
        noise (`torch.Tensor` of shape `(B, C, H, W)`): z ~ N(0, I).
    """
    return F.cross_entropy(noise_classifier_logits(classifier, clean, sigma, noise), labels)


def noise_classifier_losses(classifier, clean, labels, sigma, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy to optimise, error rate on the perturbed batch), both scalars; see [`noise_classifier_loss`]."""
    logits = noise_classifier_logits(classifier, clean, sigma, noise)
    return F.cross_entropy(logits, labels), (logits.argmax(dim=1) != labels).float().mean()


def build_classifier(args, class_names: list[str]) -> NoiseConditionalClassifier:
    """The classifier `--objective noise_classifier` trains: [`NoiseConditionalClassifier`]'s default size."""
    classifier = NoiseConditionalClassifier(
        sample_size=args.resolution, in_channels=args.channels, num_classes=len(class_names), class_names=class_names
    )
    factor = 2 ** (len(classifier.config.block_out_channels) - 1)
    if args.resolution % factor:
        raise ValueError(
            f"--resolution {args.resolution}: the classifier halves the image {factor // 2} times; use a multiple "
            f"of {factor}."
        )
    return classifier


def save_classifier(args, classifier, num_images: int, max_train_steps, train_time, last):
    """Saves the trained classifier to --output_dir with `save_pretrained` and writes its model card."""
    classifier.save_pretrained(args.output_dir)
    rows = classifier_card_rows(args, classifier, num_images, max_train_steps, train_time, last)
    write_card(args.output_dir, render_classifier_card(rows, card_datasets(args)))
    logger.info(f"Saved the classifier and its model card to {args.output_dir}")


def classifier_card_rows(args, classifier, num_images: int, max_train_steps: int, train_time: float, last: dict):
    """The training table of a trained classifier's model card (`render_classifier_card`): its data, classes,
    noise, schedule and final figures."""
    names = ", ".join(classifier.config.class_names or [])
    sigma = "log-uniform in [σ_L, σ_1]" if args.sigma_sampling == "log_uniform" else f"`{args.sigma_sampling}`"
    return {
        "data": dataset_label(args),
        "images": num_images,
        "classes": f"{classifier.config.num_classes} ({names})",
        "resolution": f"{args.resolution}×{args.resolution}, {args.channels} channel(s)",
        "noise": f"x + σ z, σ {sigma}, ladder `{args.noise_ladder}`"
        + (f" of the score model `{Path(args.score_model).resolve().name}`" if args.score_model else ""),
        "steps × batch": f"{max_train_steps} × {args.train_batch_size}",
        "learning rate": f"{args.learning_rate:g} ({args.lr_scheduler})",
        "EMA": f"{args.ema_max_decay:g}" if args.use_ema else "no",
        "final cross-entropy (last logging interval)": _rounded(last.get("loss_noise_classifier")),
        "final error rate (noisy training batches)": _rounded(last.get("error_rate")),
        "training time (s)": round(train_time, 1),
    }


def _rounded(value):
    return None if value is None else round(value, 4)
