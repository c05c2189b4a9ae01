"""Likelihood of saved pipelines on the held-out digits: bits/dim with standard errors beside the reference densities,
the cost per image of the exact trace and Hutchinson's estimator, the encode / decode round trip, and an interpolation
figure between two digits' latents.

python -m benchmarks.bench_likelihood --pipeline ncsn-digits [--ddpm_pipeline ddpm-digits] [--figure docs/interpolation.png]
"""

import argparse
import math
import time

import torch

from ncsn_diffusers import load_digits_images, log_likelihood
from ncsn_diffusers.evaluation.bits_per_dim import (
    DIGIT_LEVELS,
    digits_bits_per_dim,
    format_bits_per_dim,
    held_out_digits,
)
from ncsn_diffusers.evaluation.sampling import load_pipeline
from ncsn_diffusers.likelihood import UNIT_RANGE, dequantize
from ncsn_diffusers.probability_flow import decode, encode, flow_for


def bits_per_dim_rows(name: str, pipeline, num_images: int, rtol: float) -> None:
    start = time.perf_counter()
    results = digits_bits_per_dim(pipeline, num_images, batch_size=64, rtol=rtol, atol=rtol)
    print(f"== {name}: Hutchinson, RK45 rtol = atol = {rtol:g}, {time.perf_counter() - start:.0f} s")
    print(format_bits_per_dim(results))
    flow, data_range = flow_for(pipeline)
    print(
        f"  prior: N({flow.prior_mean:g}, {flow.prior_std:.3g}^2 I) at sigma_max {flow.sigma_max:.4g}; "
        f"its KL from a Gaussian fit of the data there: {prior_kl_bits(pipeline, flow):.4f} bits/dim"
    )


def in_model_range(pipeline, images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images in the model's data coordinates, where `probability_flow.encode` / `decode` work."""
    low, high = getattr(pipeline.scheduler, "data_range", (-1.0, 1.0))
    return low + (high - low) * images


def prior_kl_bits(pipeline, flow) -> float:
    """KL(N(m, S + sigma_max^2 I) || prior) per dim in bits, with (m, S) the training digits' mean and covariance in
    VE coordinates: the order of the prior's bias in the bits/dim (what the ODE's endpoint is not)."""
    x = in_model_range(pipeline, held_out_digits(pipeline.unet.config.sample_size, "train"))
    x = x.flatten(1).double() * flow.data_scale
    mean, cov = x.mean(0), torch.cov(x.T)
    var_prior = flow.prior_std**2
    eigenvalues = torch.linalg.eigvalsh(cov) + flow.sigma_max**2
    dim = x.shape[1]
    kl = 0.5 * ((eigenvalues / var_prior).sum() - dim - torch.log(eigenvalues / var_prior).sum())
    kl = kl + 0.5 * ((mean - flow.prior_mean) ** 2).sum() / var_prior
    return (kl / (dim * math.log(2))).item()


def trace_cost(pipeline, num_images: int, rtol: float) -> None:
    images = held_out_digits(pipeline.unet.config.sample_size)[:num_images]
    images = dequantize(images, UNIT_RANGE, DIGIT_LEVELS, torch.Generator().manual_seed(0))
    print(f"== cost per image ({num_images} images in one solve, RK45 rtol = atol = {rtol:g})")
    rows = {}
    for trace in ("hutchinson", "exact"):
        start = time.perf_counter()
        out = log_likelihood(
            pipeline,
            images,
            num_levels=DIGIT_LEVELS,
            dequantization=None,
            trace=trace,
            rtol=rtol,
            atol=rtol,
            generator=torch.Generator().manual_seed(1),
        )
        seconds = (time.perf_counter() - start) / num_images
        rows[trace] = out.bits_per_dim
        print(f"  {trace:<10} NFE {out.nfe:4d}  {seconds:7.2f} s/image  bits/dim {out.bits_per_dim.mean():.4f}")
    error = (rows["hutchinson"] - rows["exact"]).abs()
    print(f"  Hutchinson - exact per image: mean |error| {error.mean():.4f}, max {error.max():.4f} bits/dim")


def round_trip(pipeline, num_images: int, rtol: float) -> torch.Tensor:
    data_range = tuple(pipeline.scheduler.data_range)
    images = in_model_range(pipeline, held_out_digits(pipeline.unet.config.sample_size)[:num_images])
    start = time.perf_counter()
    latents = encode(pipeline, images, rtol=rtol, atol=rtol)
    back = decode(pipeline, latents, rtol=rtol, atol=rtol)
    seconds = time.perf_counter() - start
    error = (back - images) / (data_range[1] - data_range[0])  # in units of the [0, 1] image range
    print(
        f"== encode / decode round trip, {num_images} held-out digits, RK45 rtol = atol = {rtol:g} ({seconds:.0f} s)"
    )
    print(f"  max |error| {error.abs().max():.2e}, RMS {error.pow(2).mean().sqrt():.2e} (image range = 1)")
    print(f"  latent std {latents.std():.3f} (prior {flow_for(pipeline)[0].prior_std:.3f})")
    return latents


def interpolation_figure(pipeline, path: str, steps: int = 9, rtol: float = 1e-4) -> None:
    """Decodes the spherical interpolation between two held-out digits' latents (centred on the prior's mean, where
    the prior's mass sits on a sphere) into one row of images."""
    from PIL import Image

    flow, data_range = flow_for(pipeline)
    images = in_model_range(pipeline, held_out_digits(pipeline.unet.config.sample_size))
    labels = load_digits_images(resolution=8, split="test")[1]
    pair = images[[int((labels == 0).nonzero()[0]), int((labels == 7).nonzero()[0])]]  # the first held-out 0 and 7
    centre = flow.prior_mean * flow.latent_scale
    a, b = (encode(pipeline, pair, rtol=rtol, atol=rtol) - centre).flatten(1)
    omega = torch.arccos((a @ b) / (a.norm() * b.norm()))
    weights = torch.linspace(0, 1, steps)
    path_latents = (
        torch.stack(
            [(torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega) for w in weights]
        ).reshape(steps, *pair.shape[1:])
        + centre
    )
    decoded = decode(pipeline, path_latents, rtol=rtol, atol=rtol)
    row = torch.cat([pair[:1], decoded, pair[1:]])  # the originals at both ends
    row = ((row - data_range[0]) / (data_range[1] - data_range[0])).clamp(0, 1)
    grid = torch.cat(list(row[:, 0]), dim=1)  # (H, steps * W)
    picture = Image.fromarray((grid.numpy() * 255).round().astype("uint8")).resize(
        (grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST
    )
    picture.save(path)
    print(f"== interpolation: {steps} decodes between a held-out 0 and 7 (originals at the ends) -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True, help="The default run's saved NCSNPipeline.")
    parser.add_argument("--ddpm_pipeline", help="A `train_ncsn.py --objective epsilon` run of equal training.")
    parser.add_argument("--num_images", type=int, default=360, help="Held-out digits for the bits/dim.")
    parser.add_argument("--rtol", type=float, default=1e-3, help="RK45's rtol = atol for the bits/dim.")
    parser.add_argument("--round_trip_rtol", type=float, default=1e-5, help="RK45's rtol = atol for encode / decode.")
    parser.add_argument("--cost_images", type=int, default=2)
    parser.add_argument("--figure", help="Where to write the interpolation figure (e.g. docs/interpolation.png).")
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipeline = load_pipeline(args.pipeline)
    bits_per_dim_rows("default run (" + args.pipeline + ")", pipeline, args.num_images, args.rtol)
    if args.ddpm_pipeline:
        bits_per_dim_rows(
            "DDPM epsilon (" + args.ddpm_pipeline + ")", load_pipeline(args.ddpm_pipeline), args.num_images, args.rtol
        )
    trace_cost(pipeline, args.cost_images, 1e-3)
    round_trip(pipeline, 8, args.round_trip_rtol)
    if args.figure:
        interpolation_figure(pipeline, args.figure)


if __name__ == "__main__":
    main()
