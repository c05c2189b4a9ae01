"""Training images/s of `train_ncsn.py` against the bare DSM step of `bench_training_step` (same U-Net and batch).

The script's library runs in this process (`train(TrainingConfig(...))`, what `train_ncsn.py` calls); the bare loop is `bench_training_step.run`; all runs are
interleaved. Two readings per step:
- wall time: the script's own log (`logs/train_log.jsonl`, images/s per logging interval, each run's first interval
  dropped) and the bare loop's own median;
- CPU time: the difference of a run of N2 and one of N1 steps over N2 - N1 (start-up, first-step warm-up, final
  sampling and saving cancel), for the script and the bare loop alike. On a shared machine a 1-thread run also waits
  for a core, which only the wall clock counts, so this is the steadier figure.
The script runs without EMA, like the bare loop; one more run with its default EMA prices the EMA update.
"""

import contextlib
import io
import json
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training import train as train_run

from . import bench_training_step
from .timing import median_seconds

# One call of bench_training_step.run makes a warm-up and 3 timed repeats of `steps` steps (after building the model).
BARE_CALLS = 4


def run(
    preset: str = "tiny",
    batch_size: int = 64,
    resolution: int = 16,
    short_steps: int = 10,
    long_steps: int = 40,
    logging_steps: int = 10,
    bare_steps: int = 6,
    threads: int = 1,
) -> dict:
    common = dict(
        model_preset=preset, resolution=resolution, train_batch_size=batch_size, logging_steps=logging_steps,
        num_sample_images=4, steps_per_level=1,  # keep the final sampling (a constant) short
        sampler="annealed_langevin", sigma_sampling="discrete",  # the bare step's draws and a short chain
    )  # fmt: skip
    cpu, wall = defaultdict(list), defaultdict(list)  # per run: CPU seconds; per step: wall seconds

    def script(name: str, steps: int, **settings):
        def train():
            with tempfile.TemporaryDirectory() as output_dir:
                config = TrainingConfig(**common, max_train_steps=steps, output_dir=output_dir, **settings)
                start = time.process_time()
                quietly(train_run, config)
                cpu[name].append(time.process_time() - start)
                log = read_log(Path(output_dir) / "logs" / "train_log.jsonl")
                wall[name].extend(batch_size / record["images_per_s"] for record in log[1:])

        return train

    def bare(name: str, steps: int):
        def train():
            start = time.process_time()
            with contextlib.redirect_stdout(io.StringIO()):
                result = bench_training_step.run(preset=preset, batch_size=batch_size, steps=steps)
            cpu[name].append(time.process_time() - start)
            wall["bare"].append(result["seconds_per_step"])

        return train

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        median_seconds(
            {
                "script": script("script", short_steps, use_ema=False),
                "script, long": script("script, long", long_steps, use_ema=False),
                "script, EMA, long": script("script, EMA, long", long_steps),
                "bare": bare("bare, short", bare_steps),
                "bare, long": bare("bare, long", 2 * bare_steps),
            },
            repeats=5,
        )
    finally:
        torch.set_num_threads(previous_threads)
    # Other processes only ever add CPU time (through shared caches): the least of the repeats ([0]: the warm-up).
    cpu = {name: min(times[1:]) for name, times in cpu.items()}
    extra = long_steps - short_steps
    cpu_step = {
        "script": (cpu["script, long"] - cpu["script"]) / extra,
        "bare": (cpu["bare, long"] - cpu["bare, short"]) / (BARE_CALLS * bare_steps),
    }
    cpu_step["script, EMA"] = cpu_step["script"] + (cpu["script, EMA, long"] - cpu["script, long"]) / long_steps
    wall_step = {
        "script": statistics.median(wall["script, long"]),
        "bare": statistics.median(wall["bare"]),
        "script, EMA": statistics.median(wall["script, EMA, long"]),
    }

    print(
        f"\ntrain_ncsn.py vs the bare DSM step of bench_training_step, preset {preset!r} at {resolution}x{resolution}, "
        f"batch {batch_size} (cpu, {threads} threads; script without EMA unless said)"
    )
    print(f"  {'':12s} {'wall ms/step':>12s} {'images/s':>9s} {'vs bare':>8s}   {'CPU ms/step':>11s} {'vs bare':>8s}")
    for name in ("script", "bare", "script, EMA"):
        w, c = wall_step[name], cpu_step[name]
        print(
            f"  {name:12s} {w * 1e3:12.1f} {batch_size / w:9.1f} {100 * (w / wall_step['bare'] - 1):+7.1f}%   "
            f"{c * 1e3:11.1f} {100 * (c / cpu_step['bare'] - 1):+7.1f}%"
        )
    return {
        **{f"{name}_seconds_per_step": s for name, s in wall_step.items()},
        **{f"{name}_cpu_seconds_per_step": s for name, s in cpu_step.items()},
    }


def quietly(fn, *args):
    """Calls `fn` with stdout, stderr (tqdm) and new logging handlers silenced, accelerate's state reset first."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            fn(*args)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]
