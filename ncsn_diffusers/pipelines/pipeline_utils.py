"""What the NCSN pipelines share: per-call sampler settings, input images and masks -> tensors, and chain samples ->
images in [0, 1] -> output type."""

import inspect

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor

from ..image_reading import unit_array

OUTPUT_TYPES = ("pil", "np", "pt")
# diffusers keeps `_`-prefixed config entries through save, load and `from_config` and passes them to no `__init__`,
# so a stock `DDPMPipeline` loads a folder that carries one without a warning about unexpected attributes.
SAVED_CALLS_KEY = "_default_num_inference_steps"


def saved_num_inference_steps(scheduler) -> int | None:
    """The U-Net calls of a call without `num_inference_steps`, when the sampler was saved with a count
    (`NCSNPipeline(default_num_inference_steps=...)`): it lives in the scheduler's config."""
    return scheduler.config.get(SAVED_CALLS_KEY)


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


def check_generator_per_output(generator, num_inputs: int, batch_size: int, inputs: str) -> int:
    """The number of outputs, `num_inputs * batch_size`; refuses a generator list of another length (`inputs` names
    what the pipeline takes several of, e.g. "image(s)")."""
    num_outputs = num_inputs * batch_size
    if isinstance(generator, list) and len(generator) != num_outputs:
        raise ValueError(
            f"generator is a list of {len(generator)} generators but {num_inputs} {inputs} x batch_size="
            f"{batch_size} gives {num_outputs} outputs; pass one generator, or one per output."
        )
    return num_outputs


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


def check_latents(latents: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Refuses `latents` that are not a finite floating-point tensor of the chain's shape."""
    if latents is None:
        return None
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise ValueError(f"latents must be a floating-point torch.Tensor of shape {shape}, got {type(latents)}.")
    if tuple(latents.shape) != shape:
        raise ValueError(
            f"latents has shape {tuple(latents.shape)} but batch_size and the U-Net's config give {shape} "
            "(batch_size, num_channels, height, width); pass latents of that shape or change batch_size."
        )
    if not torch.isfinite(latents).all():
        raise ValueError("latents holds NaN or infinite values; pass standard normal noise.")
    return latents


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


def prepare_images(image, channels: int, sample_size, name: str = "image") -> torch.Tensor:
    """
    Images in diffusers' forms (PIL, `(H, W, C)` / `(B, H, W, C)` arrays, `(C, H, W)` / `(B, C, H, W)` tensors, or
    lists of them) as a float32 tensor `(B, C, H, W)` in [0, 1], checked against the model's `channels` and
    `sample_size`; PIL images take the model's mode. Raises a ValueError naming `name` and the fix.
    """
    if image is None:
        raise ValueError(f"`{name}` is required: PIL images, arrays or tensors in [0, 1].")
    if isinstance(image, list) and not image:
        raise ValueError(f"{name}=[] holds no image; pass at least one (PIL image, array or tensor).")
    images = image if isinstance(image, list) else [image]
    for item in images:
        if isinstance(item, torch.Tensor) and item.ndim < 3:  # (an (H, W) array is one grayscale image)
            raise ValueError(
                f"{name} has shape {tuple(item.shape)}; pass (C, H, W) or (B, C, H, W) tensors: add the channel axis "
                "with image[None]."
            )
    if channels in (1, 3):  # PIL images take the model's mode; arrays and tensors keep their channel axis
        if all(isinstance(i, PIL.Image.Image) for i in images):
            mode = "L" if channels == 1 else "RGB"
            image = np.stack([unit_array(i, mode) for i in images])  # (B, H, W, C) in [0, 1]
    values = VaeImageProcessor(do_resize=False, do_normalize=False).preprocess(image).float()
    check_unit_range(name, values)
    if values.shape[1] != channels:
        raise ValueError(
            f"{name} has {values.shape[1]} channel(s) but the model takes {channels}; pass images with {channels} "
            "channel(s)."
        )
    size = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    if size is not None and tuple(values.shape[-2:]) != tuple(size):
        raise ValueError(
            f"{name} is {tuple(values.shape[-2:])} pixels (H, W) but the model samples {tuple(size)}; resize it to "
            f"{tuple(size)}."
        )
    return values


def prepare_mask(mask_image, images: torch.Tensor) -> torch.Tensor:
    """
    A mask in diffusers' inpainting forms (PIL, `(H, W)`, `(B, H, W)` or `(B, 1, H, W)`) as a boolean tensor
    `(B, 1, H, W)`, True where pixels are generated (white, >= 0.5); one mask for all `images` or one per image.
    """
    if isinstance(mask_image, list) and not mask_image:
        raise ValueError("mask_image=[] holds no image; pass at least one (PIL image, array or tensor).")
    processor = VaeImageProcessor(do_resize=False, do_normalize=False, do_convert_grayscale=True)
    mask = processor.preprocess(mask_image).float()
    check_unit_range("mask_image", mask)
    if mask.shape[1] != 1 or mask.shape[-2:] != images.shape[-2:] or len(mask) not in (1, len(images)):
        raise ValueError(
            f"mask_image of shape {tuple(mask.shape)} does not fit image of shape {tuple(images.shape)}: pass one "
            "single-channel mask of the image's height and width, or one per image."
        )
    return (mask >= 0.5).expand(len(images), -1, -1, -1)


def check_unit_range(name: str, values: torch.Tensor):
    if values.numel() == 0:
        raise ValueError(f"{name} is empty; pass at least one image.")
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError(
            f"{name} has values in [{values.min().item():.3g}, {values.max().item():.3g}]; it must lie in [0, 1] "
            "(PIL images are converted; scale arrays and tensors, e.g. (x + 1) / 2 for [-1, 1])."
        )
