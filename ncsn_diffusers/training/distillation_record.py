"""The record of a distilled student (`distillation.json`, which its model card renders): the teacher, N, the calls
and the quality measured."""

from pathlib import Path

import torch

from ..evaluation.digits_metrics import evaluate_samples
from ..evaluation.progress import overall_progress

# Written beside the pipeline by `ConsistencyDistillation.save`; benchmarks/bench_distillation.py reads it.
DISTILLATION_RECORD = "distillation.json"

# The second level of a 2-call sample, as a fraction of the grid: timesteps [round(TWO_CALL_RAMP (N - 1)), 0], i.e.
# [2, 0] at N = 18 (t_2 = 5.2 on the default run's grid). Measured on the default run's network over 3 seeds against
# diffusers' default [N // 2, 0] and [4, 0], [6, 0], [12, 0] (docs/distillation.md).
TWO_CALL_RAMP = 2 / 17


def public_model_name(model: str) -> str:
    """A model as a card names it: a Hub repo id as given, a local folder by its name only (its path would publish
    the trainer's file system)."""
    return Path(model).resolve().name if Path(model).exists() else model


def two_call_timesteps(num_scales: int) -> list[int]:
    """The `timesteps` of the measured 2-call sampler for a grid of N = `num_scales` levels."""
    return [max(1, round(TWO_CALL_RAMP * (num_scales - 1))), 0]


def quality_samplers(num_scales: int) -> dict:
    """The pipeline arguments of each measured row: 1 call, diffusers' default 2 calls, the chosen 2 calls."""
    return {
        "1 call": {"num_inference_steps": 1},
        "2 calls": {"num_inference_steps": 2},
        f"2 calls, timesteps {two_call_timesteps(num_scales)}": {
            "num_inference_steps": None,
            "timesteps": two_call_timesteps(num_scales),
        },
    }


def measure_quality(pipeline, num_samples: int, seed: int, batch_size: int = 100) -> dict:
    """FD with the project's digits evaluator (held-out split), the share of samples rougher than any training digit
    and the smallest and largest class share, of `num_samples` samples of each of `quality_samplers` (`{}` for 0)."""
    if num_samples == 0:
        return {}
    quality, samplers = {}, quality_samplers(pipeline.scheduler.config.num_train_timesteps)
    for label, call in samplers.items():
        generator = torch.Generator(pipeline.device).manual_seed(seed)
        shards = []
        with overall_progress(num_samples, f"student samples for the FD at {label}", pipeline.unet) as bar:
            for i in range(0, num_samples, batch_size):
                count = min(batch_size, num_samples - i)
                shards.append(pipeline(batch_size=count, generator=generator, output_type="pt", **call).images.cpu())
                bar.update(count)
        images = torch.cat(shards)
        result = evaluate_samples(images.float())
        counts = result["class_counts"]
        quality[label] = {
            "frechet_distance": round(float(result["frechet_distance"]), 3),
            "rough_fraction": round(float(result["rough_fraction"]), 4),
            "class_share_min": min(counts) / num_samples,
            "class_share_max": max(counts) / num_samples,
            "num_samples": num_samples,
        }
    return quality


def quality_summary(quality: dict) -> str:
    """One line for the end of the run: the FD at each number of calls measured (and the rough share)."""
    if not quality:
        return "Quality not measured (--quality_samples 0, or data other than the digits)."
    parts = [
        f"{label}: FD {q['frechet_distance']:.2f} ({100 * q['rough_fraction']:.1f}% rough)"
        for label, q in quality.items()
    ]
    samples = next(iter(quality.values()))["num_samples"]
    return f"Student quality, {samples} samples each (digits evaluator, lower FD is better): " + "; ".join(parts)
