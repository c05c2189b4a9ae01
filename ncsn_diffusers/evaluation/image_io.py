"""Reading images to evaluate: a folder of image files, or a `.npy` array in [0, 1]."""

import os

import numpy as np
import torch

from ..image_reading import read_image_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _read_image(path: str, mode: str) -> np.ndarray:
    """One image file as float32 in [0, 1] (the package's one reading, `read_image_file`): `(H, W)` for `mode="L"`,
    `(H, W, 3)` for `mode="RGB"`; 16-bit files are divided by 65535, float files taken as they are."""
    from PIL import Image

    try:
        array = read_image_file(path, mode)
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{path} is too large to score ({error}); sample files are the model's resolution: resize it, or remove it "
            "from the folder."
        ) from error
    except ValueError as error:
        raise ValueError(f"{path} cannot be scored: {error}") from error
    return array[..., 0] if mode == "L" else array


def load_image_folder(path: str, mode: str = "L") -> torch.Tensor:
    """Every image file in `path`, sorted by name, as `(N, C, H, W)` float32 in [0, 1]; `mode` is PIL's "L"/"RGB".

    8-bit files are divided by 255, 16-bit grayscale files by 65535.
    """
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found in {path!r}.")
    arrays = [_read_image(os.path.join(path, name), mode) for name in names]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"Images in {path!r} must share one size, found {sorted(sizes)}; resize them first.")
    images = torch.from_numpy(np.stack(arrays))  # (N, H, W) or (N, H, W, 3)
    return images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()


def images_from_array(array: np.ndarray) -> torch.Tensor:
    """An array of images in [0, 1] (or uint8) shaped `(N, H, W)`, `(N, H, W, C)` or `(N, C, H, W)`, as `(N, C, H, W)`.

    A 4-d array whose last axis has 1 or 3 entries is read as channels-last, the layout of `output_type="np"`.
    """
    array = np.asarray(array)
    images = torch.from_numpy(
        array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    )
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise ValueError(
            f"Image arrays must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, got {array.shape}."
        )
    return images.contiguous()


def rgb_to_luma(images: torch.Tensor) -> torch.Tensor:
    """`(N, 3, H, W)` -> `(N, 1, H, W)` with ITU-R 601 weights, as PIL's "L" conversion."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def load_images(path: str, mode: str = "L") -> torch.Tensor:
    """Images from a folder of image files or a `.npy` file, as `(N, C, H, W)` float32 in [0, 1].

    A `.npy` file is read without pickle; `mode="L"` turns RGB arrays into luma as PIL does.
    """
    if os.path.isdir(path):
        return load_image_folder(path, mode)
    if path.endswith(".npy") and os.path.isfile(path):
        images = images_from_array(np.load(path, allow_pickle=False))
        if mode == "L" and images.shape[1] == 3:
            images = rgb_to_luma(images)
        elif mode == "RGB" and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        return images
    raise ValueError(f"`--samples`/`--reference_dir` must be a folder of images or a .npy file, got {path!r}.")
