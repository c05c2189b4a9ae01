#!/usr/bin/env python
"""Few-call sampling of a saved VE score pipeline: the log-sigma multistep solver beside the package's other samplers
at the same U-Net calls, and the saved sampler itself at lower budgets. Prints one row per sampler and budget with
calls, CPU-seconds per 1,000 samples, FD ± 95% CI over seeds, the paired difference to the best row, rough share and
class range (docs/sampling.md, "Few calls").

    python benchmarks/bench_few_step.py --pipeline ncsn-digits --calls 5 10 20 --seeds 0 1 2 --num_samples 500
    python benchmarks/bench_few_step.py --pipeline ncsn-digits --search 10     # find a schedule_shape for 10 calls

`--search N` runs `search_schedule_shape` (coordinate descent on the log-sigmas of an N-call schedule against a
100-call reference trajectory of the same solver, from `--search_batch` starting samples) and prints the shape to
pass as `schedule_shape`; the rows use `--schedule_shape` when given.
"""

import argparse
import json
import time

import torch

from ncsn_diffusers import (
    LogSigmaMultistepScheduler,
    NCSNPipeline,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)
from ncsn_diffusers.evaluation.sampler_comparison import comparison_table, score_sampler
from ncsn_diffusers.schedulers.schedule_search import search_schedule_shape

HEUN_GAMMA_1 = {"s_churn": 1e6, "s_gamma_max": 1.0, "s_tmin": 0.0, "s_tmax": 1e6, "s_noise": 1.0}


def candidates(config, calls: int, shape, etas) -> dict:
    """name -> (scheduler, U-Net calls) for one budget; each scheduler keeps the saved config's sigma range."""
    rows = {
        f"saved sampler @{calls}": (None, calls),
        f"log-sigma multistep (p=3, UniC, rho=7) @{calls}": (LogSigmaMultistepScheduler.from_config(config), calls),
    }
    if shape is not None:
        rows[f"log-sigma multistep, searched schedule @{calls}"] = (
            LogSigmaMultistepScheduler.from_config(config, schedule_shape=shape),
            calls,
        )
    for eta in etas:
        rows[f"log-sigma multistep, eta = {eta} @{calls}"] = (
            LogSigmaMultistepScheduler.from_config(config, schedule_shape=shape, eta=eta),
            calls,
        )
    heun_calls = calls - 1 + calls % 2  # 2L - 1: the odd count at or below
    rows[f"Heun, gamma = 1 @{heun_calls}"] = (StochasticHeunScheduler.from_config(config, **HEUN_GAMMA_1), heun_calls)
    for predictor in ("reverse_diffusion", "ancestral"):
        rows[f"PC k=1 r=0.25 {predictor} @{calls}"] = (
            PredictorCorrectorScheduler.from_config(
                config, corrector_steps=1, snr=0.25, final_denoise=True, predictor=predictor
            ),
            calls,
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--calls", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--etas", type=float, nargs="*", default=[])
    parser.add_argument("--schedule_shape", type=float, nargs="+", default=None)
    parser.add_argument("--rows", nargs="*", default=None, help="Keep only rows whose name starts with one of these.")
    parser.add_argument("--search", type=int, default=None, help="Search a schedule_shape for this many calls.")
    parser.add_argument("--search_batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = NCSNPipeline.from_pretrained(args.pipeline)
    config = pipe.scheduler.config

    if args.search is not None:
        generator = torch.Generator().manual_seed(0)
        shape = (args.search_batch, pipe.unet.config.in_channels, *(2 * [pipe.unet.config.sample_size]))
        start = LogSigmaMultistepScheduler.from_config(config).initial_sample(shape, generator)
        cpu = time.process_time()
        with torch.no_grad():
            found, info = search_schedule_shape(
                lambda x, sigma: pipe.unet(x, sigma).sample,
                start,
                LogSigmaMultistepScheduler.from_config(config).config,
                args.search,
                reference_calls=100,
            )
        print(f"schedule_shape for {args.search} calls: {found}")
        print(f"end-point mean square error {info['initial_error']:.4g} (rho = 7) -> {info['error']:.4g}; "
              f"{info['model_calls']} batch calls of {args.search_batch}, {time.process_time() - cpu:.0f} CPU-s")  # fmt: skip
        return

    cells, calls_of = {}, {}
    for calls in args.calls:
        for name, (scheduler, n) in candidates(config, calls, args.schedule_shape, args.etas).items():
            if args.rows and not any(name.startswith(prefix) for prefix in args.rows):
                continue
            scheduler = scheduler or pipe.scheduler
            cells[name] = [
                score_sampler(pipe.unet, scheduler, n, seed, args.num_samples, args.batch_size) for seed in args.seeds
            ]
            calls_of[name] = n
            print(f"{name}: {json.dumps(cells[name])}", flush=True)
    print(f"\n{args.num_samples} samples per seed, seeds {args.seeds}, pipeline {args.pipeline}\n")
    print(comparison_table(cells, calls_of))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cells": cells, "calls": calls_of}, f, indent=2)


if __name__ == "__main__":
    main()
