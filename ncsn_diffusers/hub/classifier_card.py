"""The model card (README.md) of a trained `NoiseConditionalClassifier`: what it is, how to guide with it, and the
table of how it was trained."""

from huggingface_hub import ModelCard, ModelCardData

CLASSIFIER_TAGS = ["ncsn", "score-based", "classifier-guidance", "noise-conditional-classifier", "pytorch"]


def render_classifier_card(training: dict, datasets: list[str] | None = None) -> str:
    """
    Renders the Hub model card of a noise-conditional classifier p_phi(y | x, sigma). Needs no network.

    Args:
        training (`dict`):
            The rows of the card's training table, by label (data, classes, noise, steps, final loss, ...).
        datasets (`list[str]`, *optional*):
            Training data set names for the metadata, e.g. `["sklearn-digits"]`.

    Returns:
        `str`: the card, Markdown with a YAML metadata header.
    """
    metadata = ModelCardData(license="apache-2.0", library_name="diffusers", tags=CLASSIFIER_TAGS, datasets=datasets)
    table = "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in training.items())])
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
