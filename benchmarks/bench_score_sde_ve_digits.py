#!/usr/bin/env python
"""FD per call of a digits NCSN++ saved as a ScoreSdeVePipeline folder (`train_ncsn.py --model_type ncsnpp`):
diffusers' stock `ScoreSdeVePipeline` at its default 2,000 steps (4,000 U-Net calls) against this package's samplers
at <= 200 calls, on the same folder, seeds and sample counts. Prints one row per sampler with calls, FD ± 95% CI over
seeds, the per-seed FDs, the paired difference to the best row, class range, rough share and CPU-seconds per 1,000
samples (docs/pretrained.md, "Training one").

    python -m benchmarks.bench_score_sde_ve_digits --pipeline ncsnpp-digits --seeds 0 1 2 3 4 --num_samples 100 \\
        --results ncsnpp-fd.jsonl

The cells of docs/pretrained.md's table are in benchmarks/results/ncsnpp_digits_fd.jsonl (print them with the same
command, `--results` that file and `--table_only`).

Samples are RGB (the digits repeated over 3 channels) and scored by their channel mean with the digits evaluator
(`evaluate_samples`: FD in the digits classifier's features against the held-out split). Every (row, seed) cell is
appended to `--results` as one JSON line as soon as it is measured, and cells already there are not measured again,
so a long measurement runs in pieces (`--rows`, `--seeds`); `--table_only` prints the table of the file.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import ScoreSdeVePipeline

from ncsn_diffusers import NCSNPipeline, PredictorCorrectorScheduler, StochasticHeunScheduler
from ncsn_diffusers.evaluation.sampler_comparison import comparison_table, score_images

STOCK_STEPS = 2000  # ScoreSdeVePipeline's default num_inference_steps: one corrector and one predictor call each
HEUN_GAMMA_1 = {"s_churn": 1e6, "s_gamma_max": 1.0, "s_tmin": 0.0, "s_tmax": 1e6, "s_noise": 1.0}


def package_rows(pipe: NCSNPipeline) -> dict:
    """name -> (scheduler, U-Net calls): the folder's own chain as the package loads it (score SDE's reverse-diffusion
    predictor, batch-mean corrector norms), the same chain with the ancestral predictor and per-sample norms (what
    `train_ncsn.py` saves for its own models), and EDM's stochastic Heun sampler (gamma = 1, the best on the default
    digits model, docs/sampling.md) on its sigma range."""
    ancestral = PredictorCorrectorScheduler.from_config(
        pipe.scheduler.config, predictor="ancestral", corrector_norms="per_sample"
    )
    heun = StochasticHeunScheduler.from_config(pipe.scheduler.config, **HEUN_GAMMA_1)
    return {
        "package PC as loaded @200": (pipe.scheduler, 200),
        "package PC as loaded @100": (pipe.scheduler, 100),
        "package PC, ancestral @200": (ancestral, 200),
        "package PC, ancestral @100": (ancestral, 100),
        "package Heun, gamma = 1 @49": (heun, 49),
        "package Heun, gamma = 1 @199": (heun, 199),
    }


def sample_stock(stock: ScoreSdeVePipeline, steps: int, seed: int, num_samples: int) -> torch.Tensor:
    output = stock(
        batch_size=num_samples,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return torch.as_tensor(output.images).permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)


def sample_package(pipe: NCSNPipeline, scheduler, calls: int, seed: int, num_samples: int) -> torch.Tensor:
    pipe.scheduler = scheduler
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=num_samples, num_inference_steps=calls, generator=generator, output_type="pt").images


def measure(sample, *args) -> dict:
    """`sample(*args)`, timed and scored (`score_images`)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        images = sample(*args).float().cpu()
    return score_images(images, time.process_time() - start_cpu, time.perf_counter() - start)


def read_cells(path: Path, num_samples: int) -> dict:
    """(row, seed) -> cell of the results file, for this sample count."""
    cells = {}
    if path is not None and path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["num_samples"] == num_samples:
                cells[record["row"], record["seed"]] = record
    return cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="A ScoreSdeVePipeline folder of digits (3 channels).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num_samples", type=int, default=24, help="Samples per seed and row, drawn as one batch.")
    parser.add_argument(
        "--rows", nargs="*", default=None, help="Measure only rows whose name starts with one of these."
    )
    parser.add_argument("--results", type=Path, default=None, help="JSON-lines file of measured cells (appended).")
    parser.add_argument("--table_only", action="store_true")
    parser.add_argument("--stock_steps", type=int, default=STOCK_STEPS, help="Steps of the stock pipeline's row.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    stock = ScoreSdeVePipeline.from_pretrained(args.pipeline)
    pipe = NCSNPipeline.from_pretrained(args.pipeline)
    for p in (stock, pipe):
        p.set_progress_bar_config(disable=True)
    stock_row = f"diffusers ScoreSdeVePipeline, {args.stock_steps} steps"
    rows = {stock_row: (None, 2 * args.stock_steps), **package_rows(pipe)}
    cells = read_cells(args.results, args.num_samples)
    for name, (scheduler, calls) in rows.items():
        if args.table_only or (args.rows and not any(name.startswith(prefix) for prefix in args.rows)):
            continue
        for seed in args.seeds:
            if (name, seed) in cells:
                continue
            if scheduler is None:
                cell = measure(sample_stock, stock, args.stock_steps, seed, args.num_samples)
            else:
                cell = measure(sample_package, pipe, scheduler, calls, seed, args.num_samples)
            cells[name, seed] = cell = {"row": name, "seed": seed, "calls": calls, **cell}
            print(json.dumps(cell), flush=True)
            if args.results is not None:
                with args.results.open("a") as f:
                    f.write(json.dumps(cell) + "\n")

    complete = {
        name: [cells[name, seed] for seed in args.seeds]
        for name in rows
        if all((name, seed) in cells for seed in args.seeds)
    }
    print(f"\n{args.num_samples} samples per seed and row, seeds {args.seeds}, pipeline {args.pipeline}\n")
    if complete:
        print(comparison_table(complete, {name: rows[name][1] for name in complete}))


if __name__ == "__main__":
    main()
