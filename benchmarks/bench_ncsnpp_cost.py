"""Cost per image of the celebahq-256 NCSN++ (score_sde, Song et al. 2021) at 4,000 and at 200 U-Net calls.

    python -m benchmarks.bench_ncsnpp_cost --config <score_sde>/configs/ve/celebahq_256_ncsnpp_continuous.py

The network is built with random weights from the authors' config (their `configs/` folder, read by the score_sde
converter's `ast` reader, never run): weights do not change the cost. 4,000 calls is diffusers' stock
`ScoreSdeVePipeline` default (2,000 steps x predictor + corrector); 200 is this package's predictor-corrector budget.
The cost per image is extrapolated: calls x the median seconds of one U-Net call (batch 1). The sampler's own
arithmetic is measured apart, as the same chain stepped around a model that costs nothing, to show it is negligible.
Next to `NCSNppModel`, diffusers' `UNet2DModel` is timed in the layout of the Hub's `google/ncsnpp-*` folders (Skip
blocks, Fourier embedding), reconstructed from the same config; it is not the Hub's config.json.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel

from ncsn_diffusers import PredictorCorrectorScheduler
from ncsn_diffusers.models.score_sde_ve_unet import score_sde_ve_unet
from ncsn_diffusers.models.unet_ncsnpp import NCSNppModel

from .timing import median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import convert_score_sde_to_diffusers as score_sde_converter  # noqa: E402

STOCK_CALLS = 4000  # diffusers' ScoreSdeVePipeline: num_inference_steps=2000, one corrector + one predictor call each
PC_CALLS = 200


def diffusers_ncsnpp_unet(config: dict) -> UNet2DModel:
    """diffusers' NCSN++ (the google/ncsnpp-* layout) with the sizes of a score_sde config: one Skip block per
    resolution, attention where the config puts it."""
    model, data = config["model"], config["data"]
    resolutions = [data["image_size"] >> level for level in range(len(model["ch_mult"]))]
    return score_sde_ve_unet(
        sample_size=data["image_size"],
        block_out_channels=tuple(model["nf"] * m for m in model["ch_mult"]),
        attention=tuple(r in tuple(model["attn_resolutions"]) for r in resolutions),
        layers_per_block=model["num_res_blocks"],
        in_channels=data["num_channels"],
    )


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_call(networks: dict, sample: torch.Tensor, sigma: torch.Tensor, repeats: int) -> dict:
    """Per network, the median wall time of one call (networks interleaved, so that a drifting load hits all alike)
    and the median CPU time of this process during one call (on the CPU: the load of other jobs barely moves it)."""
    cpu_times = {name: [] for name in networks}

    def caller(name):
        def call():
            start = time.process_time()
            with torch.no_grad():
                networks[name](sample, sigma)
            synchronize(str(sample.device))
            cpu_times[name].append(time.process_time() - start)

        return call

    wall = median_seconds({name: caller(name) for name in networks}, repeats=repeats)
    return {name: (wall[name], statistics.median(cpu_times[name][1:])) for name in networks}  # [0]: the warm-up


def sampler_seconds_per_call(scheduler: PredictorCorrectorScheduler, shape: tuple, calls: int, device: str) -> float:
    """The predictor-corrector chain stepped on a batch of `shape` around a model that costs nothing."""

    def chain():
        scheduler.set_timesteps(calls, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, generator=generator) * scheduler.init_noise_sigma
        for sigma in scheduler.timesteps:
            x = scheduler.step(-x / sigma**2, sigma, x, generator=generator).prev_sample
        synchronize(device)

    return median_seconds({"chain": chain}, repeats=3)["chain"] / calls


def run(config_path, device: str = "cpu", repeats: int = 3, include_diffusers: bool = True) -> dict:
    config = score_sde_converter.load_config(config_path)
    size, channels = config["data"]["image_size"], config["data"]["num_channels"]
    torch.manual_seed(0)
    networks = {"NCSNppModel": NCSNppModel(**score_sde_converter.network_kwargs(config))}
    if include_diffusers:
        networks["diffusers UNet2DModel (google/ncsnpp layout)"] = diffusers_ncsnpp_unet(config)
    sample = torch.rand(1, channels, size, size, device=device)
    sigma = torch.tensor([10.0], device=device)
    threads = torch.get_num_threads() if device == "cpu" else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = {"config": Path(config_path).name, "device": device, "threads": threads, "load_average_before": load}
    results["networks"] = {}
    print(
        f"\n{Path(config_path).name}: batch 1 at {size}x{size}, {device}"
        + (f", {threads} thread(s)" if threads else "")
    )
    if load:
        print(f"  load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    networks = {name: network.to(device).eval() for name, network in networks.items()}
    timings = seconds_per_call(networks, sample, sigma, repeats)
    for name, network in networks.items():
        parameters = sum(p.numel() for p in network.parameters())
        per_call, cpu_per_call = timings[name]
        costs = {calls: calls * per_call for calls in (STOCK_CALLS, PC_CALLS)}
        results["networks"][name] = {
            "parameters": parameters,
            "seconds_per_call": per_call,
            "cpu_seconds_per_call": cpu_per_call,
            "seconds_per_image": costs,
        }
        print(
            f"  {name}: {parameters / 1e6:.1f} M parameters, {per_call:.3f} s per call "
            f"(median of {repeats}; process CPU time {cpu_per_call:.3f} s)"
        )
        for calls, seconds in costs.items():
            print(f"    {calls:5d} calls: {seconds:8.0f} s = {seconds / 3600:5.2f} h per image, extrapolated")
    scheduler = score_sde_converter.build_scheduler(config, networks["NCSNppModel"])  # the config's PC sampler
    sampler = sampler_seconds_per_call(scheduler, (1, channels, size, size), PC_CALLS, device)
    reference = results["networks"]["NCSNppModel"]["seconds_per_call"]
    results["sampler_seconds_per_call"] = sampler
    print(
        f"  the PC sampler alone (model that costs nothing): {sampler * 1e3:.2f} ms per call = "
        f"{100 * sampler / reference:.3f}% of an NCSNppModel call"
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        results["load_average_after"] = load
        print(f"  load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="score_sde's configs/ve/celebahq_256_ncsnpp_continuous.py")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per network, after one warm-up call")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--no_diffusers", action="store_true", help="time NCSNppModel only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.config, device=args.device, repeats=args.repeats, include_diffusers=not args.no_diffusers)


if __name__ == "__main__":
    main()
