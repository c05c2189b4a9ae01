"""azula's DPS and MMPS and deepinv's DPS and DiffPIR on this package's trained prior, on the digits tasks of
bench_inverse_problems, at equal network calls. azula: the score network wrapped as azula's denoiser,
D(x_t, t) = x_t + sigma_t**2 s(x_t, sigma_t) on azula's VESchedule over the saved noise range (VE: alpha_t = 1), sampled
by azula's DDPM (ancestral) sampler. deepinv: the same D as a deepinv denoiser on images in [0, 1]
(`benchmarks/deepinv_samplers.py`).

azula and deepinv are benchmark-only dependencies (pip install azula; deepinv: see deepinv_samplers.INSTALL_HINT);
without one, the script says so and exits before any work.

python -m benchmarks.bench_inverse_libraries --pipeline ncsn-digits [--num_images 8] [--seeds 0 1] [--tasks 0 2] \\
    [--output results.jsonl]
"""

import argparse
import math
import time

import torch

from benchmarks import deepinv_samplers  # first: it declares torchvision's ops before diffusers imports torchvision
from benchmarks import inverse_tasks as protocol
from ncsn_diffusers import NCSNPosteriorPipeline
from ncsn_diffusers.evaluation import load_digits_classifier
from ncsn_diffusers.inverse import measurement_in_data_range
from ncsn_diffusers.parameterization import score_from_model_output

try:
    from azula.denoise import Denoiser as AzulaDenoiser
    from azula.denoise import DiracPosterior
    from azula.guidance import DPSSampler, MMPSDenoiser
    from azula.linalg.covariance import IsotropicCovariance
    from azula.noise import VESchedule
    from azula.sample import DDPMSampler
except ImportError:
    AzulaDenoiser = None


METHODS = ("azula-dps", "azula-mmps", "deepinv-dps", "deepinv-diffpir")
# Chosen on seed 0's first two digits of the box mask (docs/inverse_problems.md, "On the digits").
DEEPINV_DPS_WEIGHT = 100.0
DIFFPIR_LAMBDA = 3.0
DIFFPIR_ZETA = 1.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol.add_protocol_args(parser)
    parser.add_argument("--steps", type=int, default=101, help="Sampler steps = network calls per chain.")
    parser.add_argument(
        "--methods", nargs="+", default=["azula-dps", "azula-mmps", "deepinv-dps", "deepinv-diffpir"], choices=METHODS
    )
    parser.add_argument("--dps_zeta", type=float, default=2.0, help="DPS's zeta per chain (the pipeline's default).")
    parser.add_argument("--deepinv_dps_weight", type=float, default=DEEPINV_DPS_WEIGHT, help="deepinv DPS's weight.")
    parser.add_argument("--diffpir_lambda", type=float, default=DIFFPIR_LAMBDA, help="deepinv DiffPIR's lambda.")
    parser.add_argument("--diffpir_zeta", type=float, default=DIFFPIR_ZETA, help="deepinv DiffPIR's zeta.")
    return parser.parse_args(argv)


def score_denoiser(pipe):
    """The pipeline's score network as azula's denoiser, in VE coordinates over the saved noise range."""
    config = pipe.scheduler.config

    class ScoreNetworkDenoiser(AzulaDenoiser):
        def __init__(self):
            super().__init__()
            self.schedule = VESchedule(sigma_min=config.sigma_min, sigma_max=config.sigma_max)

        def forward(self, x_t, t, **kwargs):
            sigma = self.schedule.sigma(t)
            output = pipe.unet(x_t, sigma).sample
            score = score_from_model_output(output, x_t, sigma, 1.0, config.prediction_type)
            return DiracPosterior(mean=x_t + sigma**2 * score)

    return ScoreNetworkDenoiser()


def sample_azula(method, denoiser, operator, y, noise_std, num_samples, steps, zeta, generator_seed):
    """Posterior samples `(N * num_samples, C, H, W)` in the model's data coordinates."""
    torch.manual_seed(generator_seed)  # azula draws with the global generator
    y = y.repeat_interleave(num_samples, dim=0).flatten(1)  # azula's observations are (*, D)
    shape = (len(y), *protocol.IMAGE_SHAPE)

    def A(x):
        return operator.A(x).flatten(1)

    if method == "azula-dps":
        # azula normalises by the residual's norm over the whole batch; sqrt(batch) gives each chain Chung et al.'s
        # per-image zeta / ||y - A D||
        sampler = DPSSampler(denoiser, y=y, A=A, zeta=zeta * math.sqrt(len(y)), steps=steps, silent=True)
    elif method == "azula-mmps":
        guided = MMPSDenoiser(denoiser, y=y, A=A, cov_y=IsotropicCovariance(noise_std**2), solver="cg")
        sampler = DDPMSampler(guided, steps=steps, silent=True)
    else:
        raise ValueError(f"method={method!r}; choose azula-dps or azula-mmps.")
    return sampler(sampler.init(shape))


def posterior_samples(method, args, pipe, denoiser, operator, y, noise_std, seed) -> torch.Tensor:
    """`(N * num_samples, C, H, W)` in the units of images in [0, 1], from y in those units."""
    if method.startswith("deepinv-"):
        settings = dict(
            dps_weight=args.deepinv_dps_weight, diffpir_lambda=args.diffpir_lambda, diffpir_zeta=args.diffpir_zeta
        )
        return deepinv_samplers.sample_deepinv(
            method, pipe, operator, y, noise_std, protocol.IMAGE_SHAPE, args.num_samples, args.steps, settings, seed
        )
    low, high = pipe.data_range
    y_data, noise_std_data = measurement_in_data_range(y, operator, noise_std, (low, high), protocol.IMAGE_SHAPE)
    x = sample_azula(
        method, denoiser, operator, y_data, noise_std_data, args.num_samples, args.steps, args.dps_zeta, seed
    )
    return (x - low) / (high - low)


def main(argv=None):
    args = parse_args(argv)
    if AzulaDenoiser is None and any(method.startswith("azula-") for method in args.methods):
        raise SystemExit("azula is not installed (pip install azula), or leave the azula-* methods out of --methods.")
    if any(method.startswith("deepinv-") for method in args.methods):
        deepinv_samplers.require_deepinv()
    torch.set_num_threads(1)
    pipe = NCSNPosteriorPipeline.from_pretrained(args.pipeline)
    classifier, _ = load_digits_classifier(protocol.RESOLUTION)
    denoiser = score_denoiser(pipe) if AzulaDenoiser is not None else None
    print(
        f"{args.num_images} held-out digits per seed x {args.num_samples} posterior samples, {args.steps} network "
        f"calls, azula's DDPM sampler on VESchedule({pipe.scheduler.config.sigma_min}, "
        f"{pipe.scheduler.config.sigma_max:.3g}) (MMPS: 1 CG step; DPS zeta {args.dps_zeta}); deepinv DPS weight "
        f"{args.deepinv_dps_weight}, DiffPIR lambda {args.diffpir_lambda}, zeta {args.diffpir_zeta}"
    )
    print(protocol.RUN_HEADER)
    for seed, digits, images, labels, name, operator, noise_std, y in protocol.problems(
        args
    ):  # bench_inverse_problems' y
        for method in args.methods:
            start = time.perf_counter()
            x = posterior_samples(method, args, pipe, denoiser, operator, y, noise_std, seed)
            seconds = time.perf_counter() - start
            if not torch.isfinite(x).all():
                print(f"| {name} | {method} | {seed} | non-finite | | | | {seconds:.0f} |", flush=True)
                continue
            samples = x.clamp(0, 1).view(len(images), args.num_samples, *protocol.IMAGE_SHAPE)
            metrics = protocol.posterior_metrics(samples, images, labels, classifier)
            protocol.report_run(
                dict(task=name, method=method, seed=seed, digits=digits, seconds=seconds, **metrics), args.output
            )


if __name__ == "__main__":
    main()
