"""FD_DINOv2: sample quality in the features of DINOv2 ViT-L/14, through `transformers`.

Stein et al. (NeurIPS 2023, "Exposing flaws of generative model evaluation metrics") found that the Fréchet distance
in the CLS embedding of DINOv2 ViT-L/14 ranks generative models the way people do, where Inception-v3's FID does not.
The images go through the model's own image processor (resize, center crop, ImageNet normalisation), grayscale
replicated to RGB; the features are the final layer-normalised CLS token (`pooler_output`), as in that paper.
Precision, recall, density, coverage and KID are computed in the same space.

`transformers` is an optional dependency (`pip install -e ".[eval]"` in the clone, or `pip install "transformers>=5.24"`), imported here only when called; the
weights (1.2 GB) download from the Hub on first use, or come from a local folder.
"""

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .feature_metrics import evaluate_features
from .metrics import check_finite

DEFAULT_FEATURE_MODEL = "facebook/dinov2-large"


def load_dinov2(feature_model: str = DEFAULT_FEATURE_MODEL, device: str | torch.device | None = None):
    """`transformers.Dinov2Model` and its `AutoImageProcessor` from a Hub id or a local folder, in float32 eval mode.

    Args:
        feature_model (`str`, defaults to `"facebook/dinov2-large"`): a Hub id or a folder saved with
            `save_pretrained` (config, weights and `preprocessor_config.json`).
        device (`str` or `torch.device`, *optional*): where the model runs; the GPU when there is one.

    Returns:
        `tuple`: the model and its image processor.
    """
    try:
        from transformers import AutoImageProcessor, Dinov2Model
    except ImportError as error:
        raise ImportError(
            "`--metric fd_dinov2` computes DINOv2 features with `transformers`, which is not installed. Install it "
            'with `pip install -e ".[eval]"` in the clone, or `pip install "transformers>=5.24"`, or use `--metric digits`, which needs nothing more.'
        ) from error
    try:
        processor = AutoImageProcessor.from_pretrained(feature_model)
        model = Dinov2Model.from_pretrained(feature_model)
    except OSError as error:
        raise OSError(
            f"Could not load the DINOv2 model `--feature_model {feature_model}`: it is neither a local folder holding "
            "a DINOv2 model and its preprocessor_config.json nor a Hub model available here (no network, or "
            "HF_HUB_OFFLINE=1, and not in the Hugging Face cache). Download it once where there is a network "
            f"(`hf download {DEFAULT_FEATURE_MODEL}`), or pass `--feature_model` a local folder saved with "
            "`save_pretrained`."
        ) from error
    device = device if device is not None else "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device, torch.float32).eval(), processor


@torch.no_grad()
def dinov2_features(
    images: torch.Tensor, model, processor, batch_size: int = 64, progress: bool = True
) -> torch.Tensor:
    """CLS embeddings of shape `(N, D)`, float32 on the CPU, of images `(N, C, H, W)` in [0, 1] with C of 1 or 3.

    The images are quantised to 8 bits, as image files are, and passed to `processor` as it expects them.
    """
    check_finite(images, "images")
    device = next(model.parameters()).device
    features = []
    for batch in tqdm(images.split(batch_size), desc="DINOv2 features", unit="batch", disable=not progress):
        batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch  # grayscale -> RGB
        pixels = (batch * 255).round().clamp(0, 255).to(torch.uint8)
        inputs = processor(images=list(pixels), input_data_format="channels_first", return_tensors="pt")
        output = model(pixel_values=inputs["pixel_values"].to(device, torch.float32))
        features.append(output.pooler_output.float().cpu())
    return torch.cat(features)


def dinov2_feature_function(
    feature_model: str = DEFAULT_FEATURE_MODEL,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Loads DINOv2 once and returns images `(N, C, H, W)` in [0, 1] -> CLS features `(N, D)`."""
    model, processor = load_dinov2(feature_model, device)
    return lambda images: dinov2_features(images, model, processor, batch_size=batch_size, progress=progress)


def compute_dinov2_metrics(
    samples: torch.Tensor,
    reference: torch.Tensor,
    feature_model: str = DEFAULT_FEATURE_MODEL,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    nearest_k: int = 5,
    kid_subset_size: int = 1000,
    progress: bool = True,
) -> dict:
    """FD_DINOv2, precision, recall, density, coverage and KID of `samples` against `reference` in DINOv2 features.

    Args:
        samples (`torch.Tensor` of shape `(N, C, H, W)`): generated images in [0, 1], C of 1 or 3.
        reference (`torch.Tensor` of shape `(M, C, H', W')`): real images in [0, 1].
        feature_model (`str`, defaults to `"facebook/dinov2-large"`): the DINOv2 model, a Hub id or a local folder.
        device (`str` or `torch.device`, *optional*): where the model and the metrics run; the GPU when there is one.
        batch_size (`int`, defaults to 64): images per forward pass; the results do not depend on it.
        nearest_k (`int`, defaults to 5): k of precision, recall, density and coverage.
        kid_subset_size (`int`, defaults to 1000): KID subset size, capped at the smaller set's size.
        progress (`bool`, defaults to `True`): show a progress bar over batches.

    Returns:
        `dict`: `fd_dinov2`, `precision`, `recall`, `density`, `coverage`, `kid_mean`, `kid_std`, `num_samples`,
        `num_reference`, `feature_model`.
    """
    check_finite(samples)
    check_finite(reference, "reference images")
    model, processor = load_dinov2(feature_model, device)
    real, fake = (dinov2_features(x, model, processor, batch_size, progress) for x in (reference, samples))
    scores = evaluate_features(real, fake, nearest_k=nearest_k, kid_subset_size=kid_subset_size, device=model.device)
    return {
        "fd_dinov2": scores.pop("frechet_distance"),
        **scores,
        "num_samples": samples.shape[0],
        "num_reference": reference.shape[0],
        "feature_model": feature_model,
    }
