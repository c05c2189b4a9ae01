"""Linear measurement operators y = A x for inverse problems, with deepinv's method names `A(x)` and `A_adjoint(y)`, so
that deepinv's `LinearPhysics` objects and these are interchangeable. Each acts on images `(B, C, H, W)` in [0, 1]
and on every image of a batch alike."""

import math

import torch
import torch.nn.functional as F


class MatrixOperator:
    """
    A dense matrix M of shape `(m, C * H * W)` acting on flattened images: A(x) = M vec(x), of shape `(B, m)`.

    Args:
        matrix (`torch.Tensor` of shape `(m, d)`): M.
        image_shape (`tuple[int, int, int]`): `(C, H, W)`, with C * H * W = d.
    """

    def __init__(self, matrix: torch.Tensor, image_shape: tuple[int, int, int]):
        if matrix.ndim != 2 or matrix.shape[1] != math.prod(image_shape):
            raise ValueError(f"matrix of shape {tuple(matrix.shape)} does not act on images of shape {image_shape}.")
        self.matrix = matrix.float()
        self.image_shape = tuple(image_shape)

    @classmethod
    def random(cls, num_rows: int, image_shape: tuple[int, int, int], generator: torch.Generator | None = None):
        """A Gaussian matrix rescaled to spectral norm 1 (its largest singular value)."""
        matrix = torch.randn(num_rows, math.prod(image_shape), generator=generator)
        return cls(matrix / torch.linalg.matrix_norm(matrix, ord=2), image_shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.matrix.to(x).T  # (B, m)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.matrix.to(y)).reshape(len(y), *self.image_shape)  # (B, C, H, W)


class MaskOperator:
    """
    Inpainting: A(x) = mask * x, keeping the observed pixels (mask 1) and zeroing the others, as deepinv's
    `Inpainting`; self-adjoint.

    Args:
        mask (`torch.Tensor` of shape `(C, H, W)` or `(1, H, W)`): 1 where a pixel is observed, 0 where it is missing.
    """

    def __init__(self, mask: torch.Tensor):
        self.mask = mask.float()

    @classmethod
    def box(cls, image_shape: tuple[int, int, int], top: int, left: int, height: int, width: int):
        """Every pixel observed but a `height` x `width` box whose top-left corner is (`top`, `left`)."""
        mask = torch.ones(1, *image_shape[1:])
        mask[:, top : top + height, left : left + width] = 0
        return cls(mask)

    @classmethod
    def random(cls, image_shape: tuple[int, int, int], observed: float, generator: torch.Generator | None = None):
        """Each pixel observed independently with probability `observed`."""
        return cls((torch.rand(1, *image_shape[1:], generator=generator) < observed).float())

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x) * x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(y) * y


class AveragePoolOperator:
    """
    Super-resolution's forward model: the mean of each `factor` x `factor` block, (B, C, H, W) -> (B, C, H / f, W / f).

    Args:
        factor (`int`): f, the downsampling factor (4 takes 16 x 16 images to 4 x 4).
    """

    def __init__(self, factor: int):
        self.factor = factor

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        # each block's mean weighs its f**2 pixels by 1 / f**2
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / f**2


class GaussianBlurOperator:
    """
    Circular convolution with a Gaussian kernel of standard deviation `std` pixels, by FFT. The kernel is symmetric, so
    its Fourier transform is real and A is self-adjoint.

    Args:
        std (`float`): the kernel's standard deviation, in pixels.
        image_size (`tuple[int, int]`): (H, W) of the images.
    """

    def __init__(self, std: float, image_size: tuple[int, int]):
        self.std = std
        h, w = image_size
        # circular distances to pixel (0, 0): the kernel centred at the origin of the periodic grid
        dy = torch.minimum(torch.arange(h), h - torch.arange(h)).float()
        dx = torch.minimum(torch.arange(w), w - torch.arange(w)).float()
        kernel = torch.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * std**2))
        self.kernel_fft = torch.fft.rfft2(kernel / kernel.sum()).real  # (H, W // 2 + 1)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * self.kernel_fft.to(x.device), s=(h, w))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.A(y)


class IdentityOperator:
    """Denoising: A = I, y = x + n."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y
