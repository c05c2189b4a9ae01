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
from huggingface_hub import ModelCard, ModelCardData

from ..models import NoiseConditionalClassifier
from ..parameterization import append_dims
from .data import dataset_label
from .hub import SINGLE_MODEL_FILES, push_to_hub

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


def save_classifier(args, accelerator, classifier, ema, num_images: int, max_train_steps, train_time, last):
    """Saves the classifier (EMA weights) to --output_dir with `save_pretrained`, writes its model card, pushes."""
    classifier = accelerator.unwrap_model(classifier)
    if ema is not None:
        ema.copy_to(classifier.parameters())  # training is over: the EMA weights are the model
    classifier.eval().save_pretrained(args.output_dir)
    card_path = Path(args.output_dir) / "README.md"
    card_path.write_text(classifier_card(args, classifier, num_images, max_train_steps, train_time, last))
    logger.info(f"Saved the classifier and its model card to {args.output_dir}")
    if args.push_to_hub:
        repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
        repo_id = push_to_hub(args, repo_id, allow_patterns=SINGLE_MODEL_FILES)  # what this run wrote, only
        logger.info(f"Pushed {args.output_dir} to {repo_id}")


def classifier_card(args, classifier, num_images: int, max_train_steps: int, train_time: float, last: dict) -> str:
    """The model card (README.md) of a trained classifier: what it is, how to guide with it, how it was trained."""
    digits = args.dataset_name is None and args.train_data_dir is None
    hub_dataset = args.dataset_name is not None and not Path(args.dataset_name).exists()
    metadata = ModelCardData(
        license="apache-2.0",
        library_name="diffusers",
        tags=["ncsn", "score-based", "classifier-guidance", "noise-conditional-classifier", "pytorch"],
        datasets=["sklearn-digits"] if digits else ([args.dataset_name] if hub_dataset else None),
    )
    names = ", ".join(classifier.config.class_names or [])
    sigma = "log-uniform in [σ_L, σ_1]" if args.sigma_sampling == "log_uniform" else f"`{args.sigma_sampling}`"
    rows = {
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
    table = "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows.items())])
    content = f"""---
{metadata.to_yaml()}
---

# Noise-conditional classifier p_φ(y | x, σ)

A `NoiseConditionalClassifier` trained with `train_ncsn.py --objective noise_classifier` of ncsn-diffusers: the
class of an image perturbed by Gaussian noise of level σ, for **classifier guidance** of a score model (Song et
al., ICLR 2021, Sec. 5 and App. I). Each sampler step uses s_θ(x, σ) + w ∇_x log p_φ(y | x, σ).

```python
from ncsn_diffusers import NCSNPipeline, NoiseConditionalClassifier

classifier = NoiseConditionalClassifier.from_pretrained("path/to/this/folder")
pipe = NCSNPipeline.from_pretrained("path/to/score-model", classifier=classifier)
images = pipe(batch_size=4, class_labels=[0, 1, 2, 3], guidance_scale=4.0).images
```

It was trained on data in [-1, 1] perturbed as the score model's data were; guide a score model trained on the
same data with the same noise ladder.

## Training

{table}
"""
    return str(ModelCard(content))


def _rounded(value):
    return None if value is None else round(value, 4)
