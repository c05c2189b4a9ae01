"""The log-likelihood of images under a score model, through its probability-flow ODE, in nats and bits/dim.

log p_sigma_min(x) = log N(x(sigma_max); prior) - int_{sigma_min}^{sigma_max} sigma div_x s(x(sigma), sigma) dsigma
along the ODE started at x (Song et al., ICLR 2021, App. D.2). Images come in [0, 1], as the pipelines return them and
`pipe.encode` takes them, and are mapped to the model's data coordinates x = low + (high - low) u, which adds
D log(high - low) to log p. For discrete data on K levels of [0, 1] (spacing Delta = 1 / (K - 1)), uniform
dequantisation y = u + Delta (v - 1/2) gives, by Jensen's inequality, log P(u) >= E_v log p(y) + D log Delta, so
bits/dim = -log p(y) / (D ln 2) - log2 Delta bounds the model's discrete negative log-likelihood per dimension from
above (docs/likelihood.md); it is the same in any coordinates.
"""

import math
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

from .probability_flow import FlowField, draw_probes, flow_for, integrate

UNIT_RANGE = (0.0, 1.0)  # the images' own coordinates, as the pipelines return them


@dataclass
class LikelihoodOutput(BaseOutput):
    """
    Args:
        log_prob (`torch.Tensor` of shape `(B,)`): log p(y) in nats, of the model's continuous density at each
            (dequantised) image, as a density on [0, 1]^D (the images' own coordinates).
        bits_per_dim (`torch.Tensor` of shape `(B,)`): -log p(y) / (D ln 2) plus the offset -log2 Delta of
            [`bits_per_dim_offset`] when the data are discrete (`num_levels`), else without it.
        nfe (`int`): evaluations of the ODE's right-hand side (each is one forward and one backward pass with
            Hutchinson's estimator, one forward and D vector-Jacobian products with the exact trace).
        latents (`torch.Tensor`): where the images land at sigma_max, in the sampler's coordinates.
    """

    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int
    latents: torch.Tensor


def bits_per_dim_offset(data_range: tuple[float, float], num_levels: int) -> float:
    """-log2 Delta, with Delta = (high - low) / (num_levels - 1) the spacing of `num_levels` levels spanning
    `data_range` (both ends included, as `k / 255` for 8-bit images in [0, 1]): 8 - log2(256 / 255) bits for 8-bit
    images in [0, 1], 7 - log2(256 / 255) in [-1, 1]; 4 for the 17 levels of the 8x8 digits in [0, 1]."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels={num_levels!r} must be an integer >= 2 (256 for 8-bit images).")
    low, high = data_range
    return -math.log2((high - low) / (num_levels - 1))


def dequantize(
    images: torch.Tensor, data_range: tuple[float, float], num_levels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform dequantisation y = x + Delta (u - 1/2), u ~ U[0, 1)^D from `generator`: each level's bin of width
    Delta, centred on the level (so the bins of the two end levels reach Delta / 2 beyond `data_range`)."""
    low, high = data_range
    delta = (high - low) / (num_levels - 1)
    u = torch.rand(images.shape, generator=generator, device=generator.device if generator else "cpu")
    return images + delta * (u.to(images.device, images.dtype) - 0.5)


def log_likelihood(
    model,
    images: torch.Tensor,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    *,
    data_range: tuple[float, float] | None = None,
    num_levels: int | None = None,
    dequantization: str | None = "uniform",
    trace: str = "hutchinson",
    probe: str = "rademacher",
    solver: str = "rk45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int = 100,
    alphas_cumprod: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LikelihoodOutput:
    """
    Log-likelihood of `images` under a score model, by the probability-flow ODE and the instantaneous change of
    variables.

    Args:
        model:
            A score network (`model(x, sigma).sample` = s(x, sigma), continuous sigma: [`NCSNUNet2DModel`],
            [`NCSNv2Model`]), a DDPM epsilon [`~diffusers.UNet2DModel`] (with `alphas_cumprod`), or a pipeline holding
            `unet` and `scheduler` (whose sigma range, data range or DDPM schedule are then the defaults).
            [`NCSNRefineNet`] is refused: it knows only its ladder's levels.
        images (`torch.Tensor` of shape `(B, C, H, W)`): in [0, 1], as the pipelines return them (`output_type="pt"`)
            and [`NCSNPipeline.encode`] takes them, whatever the model's `data_range` (8-bit pixels: `pixels / 255`).
            With `num_levels`, or a pipeline, images outside [0, 1] are refused (by more than Delta / 2 when
            `dequantization=None`), and with `num_levels` and uniform dequantisation so are images off its K levels
            k / (K - 1).
        sigma_min (`float`, *optional*): the noise level the data are evaluated at (score networks).
        sigma_max (`float`, *optional*): where the prior N(centre of `data_range`, sigma_max**2 I) sits.
        data_range (`tuple[float, float]`, *optional*):
            The model's data coordinates, where [0, 1] is mapped before the solve; defaults to the pipeline
            scheduler's `data_range`, else (0, 1) for score networks and (-1, 1) for DDPM U-Nets. Its centre is the
            VE prior's mean.
        num_levels (`int`, *optional*):
            K, the images' levels over [0, 1] (256 for 8-bit images); `None` for continuous data (no dequantisation,
            no offset).
        dequantization (`str`, *optional*, defaults to `"uniform"`):
            `"uniform"` adds U(-Delta/2, Delta/2) noise from `generator`; `None` evaluates the images as given (when
            they are dequantised already); either way the offset of [`bits_per_dim_offset`] is added.
        trace (`str`, defaults to `"hutchinson"`):
            `"exact"`: div s by D vector-Jacobian products per evaluation (small images, tests); `"hutchinson"`:
            v^T (ds/dx) v with one probe v per image held through the solve (Hutchinson-Skilling, as score_sde).
        probe (`str`, defaults to `"rademacher"`): Hutchinson's probes, `"rademacher"` or `"gaussian"`.
        solver (`str`, defaults to `"rk45"`): scipy's adaptive RK45 at `rtol` / `atol`, or `"heun"` with
            `num_steps` steps evenly spaced in log sigma.
        rtol, atol (`float`, default to 1e-5): RK45's tolerances (score_sde's).
        num_steps (`int`, defaults to 100): Heun steps (2 x `num_steps` evaluations).
        alphas_cumprod (`torch.Tensor`, *optional*): abar_t of a DDPM epsilon model.
        generator (`torch.Generator`, *optional*): for the dequantisation noise and the probes.

    Returns:
        [`LikelihoodOutput`]: log p in nats and bits/dim per image, the NFE, the latents at sigma_max.
    """
    flow, data_range = flow_for(model, sigma_min, sigma_max, data_range, alphas_cumprod)
    if dequantization not in ("uniform", None):
        raise ValueError(f"dequantization={dequantization!r} is not supported; choose 'uniform' or None.")
    check_images(images)
    if num_levels is not None or hasattr(model, "scheduler"):  # image data: in [0, 1]
        check_images_in_range(images, UNIT_RANGE, num_levels, on_levels=dequantization == "uniform")
    offset = bits_per_dim_offset(UNIT_RANGE, num_levels) if num_levels is not None else 0.0
    if num_levels is not None and dequantization == "uniform":
        images = dequantize(images, UNIT_RANGE, num_levels, generator)

    probes = draw_probes(images.shape, probe, generator, images.device) if trace == "hutchinson" else None
    field = FlowField(flow, trace, probes)
    low, high = data_range
    x_ve = (low + (high - low) * images.float()) * flow.data_scale
    x_end, delta = integrate(field, x_ve, flow.sigma_min, flow.sigma_max, solver, rtol, atol, num_steps)
    dim = images[0].numel()
    # log p_VE(x_VE) = log prior - int sigma**2 div s du; the images' coordinates add D log((high - low) data_scale),
    # the Jacobian of u -> x_VE = (low + (high - low) u) data_scale (VP: data_scale = 1 / sqrt(abar_t_min))
    log_prob = flow.prior_log_prob(x_end) - delta + dim * math.log((high - low) * flow.data_scale)
    bits_per_dim = -log_prob / (dim * math.log(2)) + offset
    return LikelihoodOutput(
        log_prob=log_prob, bits_per_dim=bits_per_dim, nfe=field.nfe, latents=x_end * flow.latent_scale
    )


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or not torch.isfinite(images).all():
        raise ValueError(
            "`images` must be a finite tensor (B, C, H, W) in [0, 1]; convert PIL or numpy images with "
            "torch.from_numpy(array).permute(0, 3, 1, 2)."
        )


def check_images_in_range(images: torch.Tensor, data_range, num_levels: int | None, on_levels: bool) -> None:
    """Refuses images outside `data_range` (by more than half a level when they are dequantised already) and, when
    `on_levels`, images that are not on the `num_levels` levels of `data_range`."""
    low, high = data_range
    delta = (high - low) / (num_levels - 1) if num_levels is not None else 0.0
    slack = (0.0 if on_levels else delta / 2) + 1e-5 * (high - low)
    lowest, highest = images.min().item(), images.max().item()
    if lowest < low - slack or highest > high + slack:
        raise ValueError(
            f"`images` span [{lowest:.4g}, {highest:.4g}], outside [{low}, {high}]: pass images in [0, 1], as the "
            f"pipelines return them (8-bit pixels: pixels / 255; images in [-1, 1]: (x + 1) / 2), whatever the "
            f"model's data range."
        )
    if on_levels:
        k = (images.double() - low) / delta
        if (k - k.round()).abs().max() > 1e-3:
            raise ValueError(
                f"`images` are not on the {num_levels} levels k / {num_levels - 1} of [{low}, {high}] that "
                f"num_levels={num_levels} says they take; images dequantised already take dequantization=None."
            )
