#!/usr/bin/env python
"""Scores the samplers of a trained pipeline on the digits, over several seeds, to choose the one it saves.

    python examples/choose_default_sampler.py --pipeline ncsn-digits --seeds 0 1 2 --num_samples 500
    python examples/choose_default_sampler.py --pipeline ncsn-eps --seeds 0 1 --num_samples 500   # epsilon model

Each row is a scheduler built from the saved scheduler's config (so it keeps sigma_max, sigma_min and data_range) with
the settings named in the row, run in `NCSNPipeline` at its number of U-Net calls. Every cell is scored by
`ncsn_diffusers.evaluation.evaluate_samples`: the Fréchet distance in the digits classifier's features, the smallest and
largest class share, and the share of samples rougher than any training digit. Prints a markdown table
(`evaluation.sampler_comparison.comparison_table`): FD mean ± its 95% t-interval over the seeds, the per-seed values,
each row's paired difference to the best row on the same seeds (± its interval, * where it excludes 0), and
CPU-seconds per 1,000 samples; writes `--json`. A difference counts only where its paired interval excludes 0.
"""

import argparse
import json

import torch

# name: (scheduler class, config overrides, U-Net calls)
HEUN_GAMMA_1 = {"s_churn": 1e6, "s_gamma_max": 1.0, "s_tmin": 0.0, "s_tmax": 1e6, "s_noise": 1.0}
SAMPLERS = {
    "saved": (None, {}, None),
    "PC k=1 r=0.25 @100": ("PredictorCorrectorScheduler", {"corrector_steps": 1, "snr": 0.25}, 100),
    "PC k=1 r=0.16 @50": ("PredictorCorrectorScheduler", {"corrector_steps": 1, "snr": 0.16}, 50),
    "Heun, gamma = 1 @19": ("StochasticHeunScheduler", HEUN_GAMMA_1, 19),
    "Heun, gamma = 1 @49": ("StochasticHeunScheduler", HEUN_GAMMA_1, 49),
    "Heun, gamma = 1 @99": ("StochasticHeunScheduler", HEUN_GAMMA_1, 99),
    "Heun, EDM churn @49": ("StochasticHeunScheduler", {}, 49),
    "EDM DPM-Solver @20": ("EDMDPMSolverMultistepScheduler", {}, 20),
    # Few calls: the teacher beside its 1-2 call consistency-distilled student (docs/distillation.md).
    **{f"Heun, gamma = 1 @{n}": ("StochasticHeunScheduler", HEUN_GAMMA_1, n) for n in (3, 9)},
    **{
        f"PC k=1 r=0.25 @{n}": ("PredictorCorrectorScheduler", {"corrector_steps": 1, "snr": 0.25}, n)
        for n in (2, 4, 10)
    },
    **{f"EDM DPM-Solver @{n}": ("EDMDPMSolverMultistepScheduler", {}, n) for n in (2, 4, 10)},
    # The multistep solver on D in log sigma (3rd order, UniPC's corrector), EDM's rho = 7 spacing
    **{f"log-sigma multistep @{n}": ("LogSigmaMultistepScheduler", {}, n) for n in (5, 10, 20)},
}
# The candidates for a DDPM epsilon model (`train_ncsn.py --objective epsilon`): diffusers' own schedulers, each
# `from_config` of the saved DDPM schedule, and annealed Langevin in VP coordinates with a step relative to sigma_L**2.
EPSILON_SAMPLERS = {
    "saved": (None, {}, None),
    "DDPM @1000": ("DDPMScheduler", {}, 1000),
    "DDPM @100": ("DDPMScheduler", {}, 100),
    "DDIM @100": ("DDIMScheduler", {}, 100),
    "DDIM @50": ("DDIMScheduler", {}, 50),
    "DDIM @20": ("DDIMScheduler", {}, 20),
    "DPM-Solver++ @50": ("DPMSolverMultistepScheduler", {}, 50),
    "DPM-Solver++ @20": ("DPMSolverMultistepScheduler", {}, 20),
    "DPM-Solver++ @10": ("DPMSolverMultistepScheduler", {}, 10),
    "VP ALS L=100 T=1 rel 0.2 + denoise @100": (
        "AnnealedLangevinScheduler",
        {"num_noise_levels": 99, "steps_per_level": 1, "relative_epsilon": 0.2, "final_denoise": True},
        100,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="A saved NCSNPipeline folder of a score model.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=500, help="Images per pipeline call (one generator).")
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        choices=sorted({*SAMPLERS, *EPSILON_SAMPLERS}),
        help="Default: every candidate for the pipeline's kind of model (score network or DDPM epsilon U-Net).",
    )
    parser.add_argument("--json", default=None, help="Write every cell here.")
    return parser.parse_args(argv)


def build_scheduler(pipe, class_name: str | None, overrides: dict):
    import diffusers

    import ncsn_diffusers

    if class_name is None:
        return pipe.scheduler
    config = pipe.scheduler.config
    if class_name.startswith("EDM"):
        return getattr(diffusers, class_name)(sigma_min=config.sigma_min, sigma_max=config.sigma_max)
    scheduler_class = getattr(ncsn_diffusers, class_name, None) or getattr(diffusers, class_name)
    return scheduler_class.from_config(config, **overrides)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    from diffusers import UNet2DModel

    from ncsn_diffusers import NCSNPipeline
    from ncsn_diffusers.evaluation.sampler_comparison import comparison_table, score_sampler

    pipe = NCSNPipeline.from_pretrained(args.pipeline)
    candidates = EPSILON_SAMPLERS if isinstance(pipe.unet, UNet2DModel) else SAMPLERS
    cells, calls_of = {}, {}
    for name in args.samplers or list(candidates):
        class_name, overrides, calls = {**SAMPLERS, **EPSILON_SAMPLERS}[name]
        scheduler = build_scheduler(pipe, class_name, overrides)
        cells[name] = [
            score_sampler(pipe.unet, scheduler, calls, seed, args.num_samples, args.batch_size) for seed in args.seeds
        ]
        calls_of[name] = calls or pipe.config.get("default_num_inference_steps") or len(scheduler)
        print(f"{name}: {[round(c['fd'], 2) for c in cells[name]]}", flush=True)
    print(f"\n{args.num_samples} samples per seed, seeds {args.seeds}, pipeline {args.pipeline}\n")
    print(comparison_table(cells, calls_of))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cells": cells}, f, indent=2)


if __name__ == "__main__":
    main()
