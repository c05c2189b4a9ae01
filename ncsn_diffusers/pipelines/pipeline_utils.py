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


def check_generator(generator) -> None:
    """Refuses a `generator` that is not None, a torch.Generator or a list of them (a seed such as 0, say)."""
    generators = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(
            f"generator={generator!r} must be a torch.Generator, a list of them or None; for a seed, pass "
            "generator=torch.Generator().manual_seed(seed)."
        )


def check_callback(callback_on_step_end) -> None:
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise ValueError(
            f"callback_on_step_end={callback_on_step_end!r} is not callable; pass a function "
            "callback(pipe, i, t, callback_kwargs) that returns a dict, or None."
        )


def run_callback(pipe, callback_on_step_end, i: int, t, sample: torch.Tensor) -> torch.Tensor:
    """The sample after `callback_on_step_end` (if any), which may replace it by one of the same shape."""
    if callback_on_step_end is None:
        return sample
    new_sample = callback_on_step_end(pipe, i, t, {"sample": sample}).pop("sample", sample)
    if not isinstance(new_sample, torch.Tensor) or new_sample.shape != sample.shape:
        shape = tuple(new_sample.shape) if isinstance(new_sample, torch.Tensor) else type(new_sample).__name__
        raise ValueError(
            f"callback_on_step_end returned a 'sample' of shape {shape} at step {i}; the chain's is "
            f"{tuple(sample.shape)}: return a tensor of that shape, or no 'sample' key to keep it."
        )
    return new_sample


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
