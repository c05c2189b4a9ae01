"""What the NCSN pipelines share: per-call sampler settings, and chain samples -> images in [0, 1] -> output type."""

import inspect

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline

OUTPUT_TYPES = ("pil", "np", "pt")


def samples_to_unit_range(sample: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """Maps samples from the model's `data_range` to [0, 1], clamped: the chain itself is never clamped."""
    low, high = data_range
    return ((sample - low) / (high - low)).clamp(0, 1)


def format_images(image: torch.Tensor, output_type: str) -> torch.Tensor | np.ndarray | list[PIL.Image.Image]:
    """(B, C, H, W) images in [0, 1] as `"pt"` (unchanged), `"np"` ((B, H, W, C) arrays) or `"pil"`."""
    if output_type == "pt":
        return image
    image = image.cpu().permute(0, 2, 3, 1).numpy()
    return DiffusionPipeline.numpy_to_pil(image) if output_type == "pil" else image


def scheduler_overrides(scheduler, **settings) -> dict:
    """The per-call settings that are given (not None), checked against what `scheduler.set_timesteps` accepts."""
    overrides = {name: value for name, value in settings.items() if value is not None}
    accepted = inspect.signature(scheduler.set_timesteps).parameters
    unknown = [name for name in overrides if name not in accepted]
    if unknown:
        raise ValueError(
            f"{type(scheduler).__name__} takes no per-call {', '.join(unknown)}; it accepts "
            f"{[n for n in accepted if n not in ('num_inference_steps', 'device')]}."
        )
    return overrides
