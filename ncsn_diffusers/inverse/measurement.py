"""The measurement y = A x + n, n ~ N(0, sigma_y**2 I), of a posterior sampling call: its checks, made before any model
call, and its expression in the model's coordinates."""

import math
from dataclasses import dataclass

import torch


@dataclass
class LinearMeasurement:
    """
    y = A x + n with n ~ N(0, sigma_y**2 I), x in the model's data coordinates.

    Args:
        y (`torch.Tensor` of shape `(B, ...)`): one measurement per chain.
        operator: an object with `A(x)` and `A_adjoint(y)` (deepinv's `LinearPhysics`, or `ncsn_diffusers.inverse`'s).
        noise_std (`float`): sigma_y.
    """

    y: torch.Tensor
    operator: object
    noise_std: float

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """y - A x."""
        return self.y - self.operator.A(x)


def check_operator(operator, image_shape: tuple[int, ...]) -> torch.Size:
    """
    Raises a ValueError unless `operator` has callable `A` and `A_adjoint` and `A_adjoint` is the adjoint of `A` on
    images of `image_shape` = (C, H, W) (<A x, v> = <x, A^T v> for random x, v); returns the shape of one measurement.
    """
    for name in ("A", "A_adjoint"):
        if not callable(getattr(operator, name, None)):
            raise ValueError(
                f"operator {type(operator).__name__} has no method {name}; posterior sampling needs a linear operator "
                "with A(x) and its adjoint A_adjoint(y), as deepinv's LinearPhysics or ncsn_diffusers.inverse's "
                "MaskOperator, AveragePoolOperator, GaussianBlurOperator, IdentityOperator or MatrixOperator."
            )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, *image_shape, generator=generator)
    with torch.no_grad():
        ax = operator.A(x)
        v = torch.randn(ax.shape, generator=generator)
        adjoint_v = operator.A_adjoint(v)
    if not isinstance(adjoint_v, torch.Tensor) or adjoint_v.shape != x.shape:
        shape = tuple(adjoint_v.shape) if isinstance(adjoint_v, torch.Tensor) else type(adjoint_v).__name__
        raise ValueError(
            f"operator.A_adjoint maps a measurement of shape {tuple(ax.shape)} to {shape}, not to the images' "
            f"{tuple(x.shape)}; it must be the adjoint of A."
        )
    left, right = (ax * v).sum().item(), (x * adjoint_v).sum().item()
    if abs(left - right) > 1e-3 * (ax.norm() * v.norm()).item() + 1e-6:
        raise ValueError(
            f"operator.A_adjoint is not the adjoint of operator.A: <A x, v> = {left:.6g} but <x, A_adjoint(v)> = "
            f"{right:.6g} for random x, v. The likelihood's gradient A^T (y - A x) needs the true adjoint."
        )
    return ax.shape[1:]


def check_measurement(measurement, measurement_shape: torch.Size, noise_std) -> tuple[torch.Tensor, float]:
    """
    The measurement as a float32 tensor `(N, *measurement_shape)` (one measurement may come without its batch axis)
    and sigma_y as a float; raises a ValueError naming what is wrong and how to fix it.
    """
    if (
        isinstance(noise_std, bool)
        or not isinstance(noise_std, (int, float, torch.Tensor))
        or (isinstance(noise_std, torch.Tensor) and noise_std.numel() != 1)
        or not math.isfinite(float(noise_std))
        or float(noise_std) < 0
    ):
        raise ValueError(
            f"noise_std={noise_std!r} must be a finite number >= 0: sigma_y, the standard deviation of the "
            "measurement noise n in y = A x + n, in the units of images in [0, 1]."
        )
    if not isinstance(measurement, torch.Tensor) or not (measurement.is_floating_point() or measurement.ndim == 0):
        raise ValueError(f"measurement must be a floating-point torch.Tensor y = A x + n, got {type(measurement)}.")
    y = measurement.float()
    if y.shape == measurement_shape:
        y = y[None]
    if y.ndim == 0 or y.shape[1:] != measurement_shape or len(y) == 0:
        raise ValueError(
            f"measurement has shape {tuple(measurement.shape)} but the operator maps one image to "
            f"{tuple(measurement_shape)}; pass y of shape (N, {', '.join(map(str, measurement_shape))}), one row per "
            "measured image, made with the same operator on images in [0, 1]."
        )
    if not torch.isfinite(y).all():
        raise ValueError("measurement holds NaN or infinite values; y must be finite.")
    return y, float(noise_std)


def measurement_in_data_range(
    y: torch.Tensor, operator, noise_std: float, data_range: tuple[float, float], image_shape: tuple[int, ...]
) -> tuple[torch.Tensor, float]:
    """
    y and sigma_y of images in [0, 1] expressed for the model's data x = low + (high - low) x_unit: since
    A x = (high - low) A x_unit + A(low 1), y' = (high - low) y + A(low 1) and sigma_y' = (high - low) sigma_y.
    """
    low, high = data_range
    offset = operator.A(torch.full((1, *image_shape), low, device=y.device))
    return (high - low) * y + offset, (high - low) * noise_std
