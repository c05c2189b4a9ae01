"""The one reading of an image's pixel values for the whole package: the training set, the pipelines' image inputs
and the evaluator map a PIL image (or file) to [0, 1] alike, by the white of its bit depth, never stretched per
image."""

import os

import numpy as np
import PIL.Image

# PIL modes of more than 8 bits, and the value of white in each: PIL's conversion to "L" clips them instead.
# 16-bit PNGs open as "I;16*" or "I"; "F" holds floats, read as values in [0, 1].
HIGH_BIT_WHITE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def read_pixels(image: PIL.Image.Image, mode: str) -> PIL.Image.Image:
    """
    `image` as PIL mode `mode` ("L" or "RGB") when it has 8 bits per channel, else (16-bit, 32-bit, float) as a
    grayscale "F" image in [0, 1]: its values divided by the white of its mode (`HIGH_BIT_WHITE`).

    Palette and alpha images are flattened via RGBA (transparent pixels keep their colour values, as
    `convert("RGB")` does).

    Raises:
        `ValueError`: for a high-bit-depth image with values outside [0, white] (or not finite), naming the range.
    """
    if image.mode in HIGH_BIT_WHITE:
        white = HIGH_BIT_WHITE[image.mode]
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > white:
            raise ValueError(
                f"its {image.mode} pixels span [{values.min():g}, {values.max():g}], outside [0, {white:g}] (black to "
                "white at its bit depth); rescale it to that range."
            )
        return PIL.Image.fromarray((values / white).astype(np.float32))
    if image.mode in ("P", "PA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert(mode)


def unit_array(image: PIL.Image.Image, mode: str) -> np.ndarray:
    """A PIL image as a float32 array (H, W, C) in [0, 1] in `mode` ("L": C = 1, "RGB": C = 3); see [`read_pixels`]."""
    pixels = read_pixels(image, mode)
    if pixels.mode == "F":
        gray = np.asarray(pixels, dtype=np.float32)  # (H, W)
        return np.repeat(gray[..., None], 1 if mode == "L" else 3, axis=-1)
    return np.asarray(pixels, dtype=np.float32).reshape(pixels.height, pixels.width, -1) / 255.0


def read_image_file(path: str | os.PathLike, mode: str) -> np.ndarray:
    """An image file as [`unit_array`] reads it: float32 (H, W, C) in [0, 1]."""
    with PIL.Image.open(path) as image:
        return unit_array(image, mode)
