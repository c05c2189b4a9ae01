#!/usr/bin/env python
"""Few-call sampling of a saved VE score pipeline: the log-sigma multistep solver beside the package's other samplers
at the same U-Net calls, and the saved sampler itself at lower budgets. Prints one row per sampler and budget with
calls, CPU-seconds per 1,000 samples, FD ± 95% CI over seeds, the paired difference to the best row, rough share and
class range (docs/sampling.md, "Few calls").

    python benchmarks/bench_few_step.py --pipeline ncsn-digits --calls 5 10 20 --seeds 0 1 2 --num_samples 500
    python benchmarks/bench_few_step.py --pipeline ncsn-digits --search 10     # find a schedule_shape for 10 calls

`--goals` prints the issue's goals table instead: the saved pipeline at each of `--calls` (5 10 20 50 100 by default)
with (a) its saved scheduler, (b) the same predictor-corrector with `predictor="ancestral"` (a saved predictor-corrector
only) and (c) the log-sigma multistep solver (`--solver_order`, the first of `--etas`, `--schedule_shape`), then
whether each family meets the few-call goals (`few_call_goals`). `--families` runs some of them (one job each under
a CPU lock, with `--json`); `--merge a.json b.json ...` prints the table of jobs run so.

    python benchmarks/bench_few_step.py --pipeline ncsn-digits --goals --etas 0.5 --num_samples 500
    python benchmarks/bench_few_step.py --merge saved.json ancestral.json multistep.json

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
from ncsn_diffusers.evaluation.sampler_comparison import comparison_table, few_call_goals, score_sampler
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
    rows[f"Heun, s_churn = 0 (ODE) @{heun_calls}"] = (
        StochasticHeunScheduler.from_config(config, s_churn=0.0),
        heun_calls,
    )
    for predictor in ("reverse_diffusion", "ancestral"):
        rows[f"PC k=1 r=0.25 {predictor} @{calls}"] = (
            PredictorCorrectorScheduler.from_config(
                config, corrector_steps=1, snr=0.25, final_denoise=True, predictor=predictor
            ),
            calls,
        )
    return rows


FAMILIES = ("saved", "ancestral", "multistep")


def family_rows(pipe, calls: int, family: str, multistep: dict):
    """(name, scheduler) of one goals-table family at `calls` U-Net calls; `None` where the family does not apply."""
    saved = pipe.scheduler
    if family == "saved":
        return f"saved sampler ({type(saved).__name__}) @{calls}", saved
    if family == "ancestral":
        if not isinstance(saved, PredictorCorrectorScheduler):
            return None
        return f"saved PC, predictor = ancestral @{calls}", PredictorCorrectorScheduler.from_config(
            saved.config, predictor="ancestral"
        )
    schedule = "rho = 7" if multistep["schedule_shape"] is None else "searched schedule"
    settings = f"p = {multistep['solver_order']}, eta = {multistep['eta']}, {schedule}"
    scheduler = LogSigmaMultistepScheduler.from_config(saved.config, **multistep)
    return f"log-sigma multistep ({settings}) @{calls}", scheduler


def print_goals(cells: dict, calls_of: dict, families: dict):
    print(comparison_table(cells, calls_of))
    print(
        "\nGoals (no more than 2% rough from 10 calls up, every class 5-15%, the fewest calls within 1.3x the best FD):"
    )
    for line in few_call_goals(cells, calls_of, {k: v for k, v in families.items() if v}):
        print(f"- {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=None)
    parser.add_argument("--calls", type=int, nargs="+", default=None, help="5 10 20 (with --goals: 5 10 20 50 100)")
    parser.add_argument("--goals", action="store_true", help="The goals table: saved, ancestral PC, multistep.")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--solver_order", type=int, default=3)
    parser.add_argument("--merge", nargs="+", default=None, help="Print the goals table of these --json files.")
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
    if args.merge:
        cells, calls_of, families = {}, {}, {}
        for path in args.merge:
            with open(path) as f:
                run = json.load(f)
            cells.update(run["cells"])
            calls_of.update(run["calls"])
            for family, names in run.get("families", {}).items():
                families.setdefault(family, []).extend(names)
        print_goals(cells, calls_of, families)
        return
    if args.pipeline is None:
        parser.error("--pipeline is required (a saved folder or Hub id), unless --merge prints saved results.")
    args.calls = args.calls or ([5, 10, 20, 50, 100] if args.goals else [5, 10, 20])
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
    if args.goals:
        multistep = {
            "solver_order": args.solver_order,
            "eta": args.etas[0] if args.etas else 0.0,
            "schedule_shape": args.schedule_shape,
        }
        families = {family: [] for family in args.families}
        for family in args.families:
            for calls in args.calls:
                row = family_rows(pipe, calls, family, multistep)
                if row is None:
                    continue
                name, scheduler = row
                cells[name] = [
                    score_sampler(pipe.unet, scheduler, calls, seed, args.num_samples, args.batch_size)
                    for seed in args.seeds
                ]
                calls_of[name] = calls
                families[family].append(name)
                print(f"{name}: {json.dumps(cells[name])}", flush=True)
        print(f"\n{args.num_samples} samples per seed, seeds {args.seeds}, pipeline {args.pipeline}\n")
        print_goals(cells, calls_of, families)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "cells": cells, "calls": calls_of, "families": families}, f, indent=2)
        return

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
