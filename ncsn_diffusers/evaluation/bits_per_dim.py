"""`--metric bpd`: bits/dim of the held-out digits under a saved pipeline, with its standard error, beside reference
densities fitted to the training digits and scored on the same dequantised images with the same offset.

The digits are 8x8 with 17 levels; the default run trains on bilinear 16x16 upsamplings of them, which fill only a
64-dimensional subspace of the 256 pixels: their density there is degenerate (-log p unbounded below). What is
measured is therefore the density of the dequantised 16x16 images: each of the 256 pixels gets uniform noise over one
bin of the digits' own depth (width Delta = 1 / 16 in [0, 1]), so y = upsample(x) + Delta (u - 1/2) has a proper density on
R^256, and bits/dim = -log p(y) / (256 ln 2) - log2 Delta is >= 0 for any model whose cross-entropy is at least the
entropy of y, which is at least that of the noise: 0 is the floor, log2 17 = 4.09 the uniform density's value.
"""

import math

import torch

from ..digits import load_digits_images
from ..likelihood import UNIT_RANGE, bits_per_dim_offset, dequantize, log_likelihood
from .progress import overall_progress

DIGIT_LEVELS = 17  # the 8x8 digits take the values 0..16


def held_out_digits(resolution: int, split: str = "test") -> torch.Tensor:
    """The digits of `split` at `resolution`, in [0, 1]: (N, 1, R, R)."""
    images, _ = load_digits_images(resolution=resolution, split=split)
    return images


def gaussian_bits_per_dim(train: torch.Tensor, test: torch.Tensor, offset: float, diagonal: bool) -> torch.Tensor:
    """Per-image bits/dim of `test` under the Gaussian (full or diagonal covariance) fitted to `train` by maximum
    likelihood; both dequantised already, so the covariance has full rank."""
    flat_train, flat_test = train.flatten(1).double(), test.flatten(1).double()
    mean = flat_train.mean(0)
    centred = flat_train - mean
    cov = centred.T @ centred / len(flat_train)
    if diagonal:
        cov = torch.diag(cov.diagonal())
    distribution = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return -distribution.log_prob(flat_test) / (flat_test.shape[1] * math.log(2)) + offset


def mean_and_standard_error(values: torch.Tensor) -> dict:
    values = values.double()
    return {"bits_per_dim": values.mean().item(), "standard_error": (values.std() / math.sqrt(len(values))).item()}


def digits_bits_per_dim(
    pipeline,
    num_images: int | None = None,
    batch_size: int = 64,
    trace: str = "hutchinson",
    solver: str = "rk45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    seed: int = 0,
) -> dict:
    """
    Bits/dim of the held-out digits under `pipeline` (a loaded `NCSNPipeline` or DDPM pipeline) and under the
    reference densities, each with its standard error over the images.

    Args:
        pipeline: holds `unet` and `scheduler`; its scheduler's data range (and sigma range or DDPM schedule) is used.
        num_images (`int`, *optional*): the first `num_images` held-out digits (all 360 by default).
        batch_size (`int`, defaults to 64): images per ODE solve (they share the solver's steps).
        trace, solver, rtol, atol: as in [`log_likelihood`].
        sigma_min, sigma_max (`float`, *optional*): override the scheduler's sigma range (VE).
        seed (`int`, defaults to 0): seeds the dequantisation noise and the probes.
    """
    resolution = pipeline.unet.config.sample_size
    resolution = resolution if isinstance(resolution, int) else resolution[0]
    generator = torch.Generator().manual_seed(seed)
    test = dequantize(held_out_digits(resolution)[:num_images], UNIT_RANGE, DIGIT_LEVELS, generator)
    train = dequantize(held_out_digits(resolution, "train"), UNIT_RANGE, DIGIT_LEVELS, generator)
    offset = bits_per_dim_offset(UNIT_RANGE, DIGIT_LEVELS)

    per_image, nfe = [], []
    desc = f"bits/dim of {len(test)} held-out digits"
    with overall_progress(len(test), desc, pipeline.unet) as bar:  # an RK45 solve of a batch can take minutes
        for batch in test.split(batch_size):
            out = log_likelihood(
                pipeline,
                batch.to(pipeline.device),
                sigma_min,
                sigma_max,
                num_levels=DIGIT_LEVELS,
                dequantization=None,  # dequantised above, with the references' noise
                trace=trace,
                solver=solver,
                rtol=rtol,
                atol=atol,
                generator=generator,
            )
            per_image.append(out.bits_per_dim.cpu())
            nfe.append(out.nfe)
            bar.update(len(batch))
    return {
        "num_images": len(test),
        "resolution": resolution,
        "offset": offset,
        "model": {**mean_and_standard_error(torch.cat(per_image)), "nfe_per_batch": nfe},
        "gaussian": mean_and_standard_error(gaussian_bits_per_dim(train, test, offset, diagonal=False)),
        "diagonal_gaussian": mean_and_standard_error(gaussian_bits_per_dim(train, test, offset, diagonal=True)),
        "uniform": {"bits_per_dim": math.log2(DIGIT_LEVELS), "standard_error": 0.0},
    }


def format_bits_per_dim(results: dict) -> str:
    """One row per density: bits/dim +- standard error."""
    lines = [
        f"bits/dim of {results['num_images']} held-out digits at {results['resolution']}x{results['resolution']} "
        f"(dequantised to {DIGIT_LEVELS} levels, offset {results['offset']:.3f} bits)"
    ]
    for name in ("model", "gaussian", "diagonal_gaussian", "uniform"):
        row = results[name]
        lines.append(f"  {name:<18} {row['bits_per_dim']:.4f} +- {row['standard_error']:.4f}")
    lines.append(f"  model NFE per batch: {results['model']['nfe_per_batch']}")
    return "\n".join(lines)
