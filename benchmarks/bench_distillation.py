"""FD (the project's digits evaluator) of a distilled ConsistencyModelPipeline at 1, 2, 4 calls, beside its teacher.

python benchmarks/bench_distillation.py --student OUT --teacher ncsn-digits --teacher_ode_levels 10 --seeds 0 1 2

OUT is the folder of `train_ncsn.py --objective consistency_distillation`. Rows: the student at each `--calls`
(diffusers' default timesteps); at 2 calls with the second level chosen (`--two_call_indices K ...`: timesteps
[K, 0], the second sigma t_K of the N-level grid); with `--weights target|raw`, the target network theta^- or the raw
student of `--checkpoint` instead of the saved weights; with `--teacher`, the teacher's saved sampler
(`--teacher_saved_sampler`) and its probability-flow ODE by deterministic Heun (`--teacher_ode_levels L`, S_churn = 0,
2L - 1 calls).
Each row: FD mean and spread over the seeds, the share of samples rougher than any training digit, the smallest and
largest class share; the header gives the distillation's CPU-minutes from OUT/distillation.json.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from diffusers import ConsistencyModelPipeline

from ncsn_diffusers import NCSNPipeline, StochasticHeunScheduler
from ncsn_diffusers.evaluation.digits_metrics import evaluate_samples


def student_pipeline(folder: str, weights: str = "saved", checkpoint: str | None = None):
    """The saved pipeline, or with the target network theta^- (`"target"`) or the raw student (`"raw"`) of
    `checkpoint` (a `checkpoint-<step>` folder of the run) loaded into its U-Net."""
    pipe = ConsistencyModelPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if weights != "saved":
        from safetensors.torch import load_file

        path = Path(folder) / checkpoint
        if weights == "target":
            prefix = "state.target."
            state = {k[len(prefix) :]: v for k, v in load_file(path / "objective.safetensors").items()}
        else:
            state = load_file(path / "model.safetensors")
        pipe.unet.load_state_dict(state)
    return pipe


def student_sampler(pipe, calls: int = 1, timesteps: list[int] | None = None):
    if timesteps is not None:
        return lambda n, g: (
            pipe(batch_size=n, num_inference_steps=None, timesteps=timesteps, generator=g, output_type="pt").images
        )
    return lambda n, g: pipe(batch_size=n, num_inference_steps=calls, generator=g, output_type="pt").images


def teacher_sampler(folder: str, ode_levels: int = 0):
    pipe = NCSNPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if ode_levels:
        config = pipe.scheduler.config
        pipe.scheduler = StochasticHeunScheduler(
            sigma_max=config.sigma_max, sigma_min=config.sigma_min, data_range=(-1.0, 1.0), s_churn=0.0
        )
        return lambda n, g: pipe(batch_size=n, num_inference_steps=ode_levels, generator=g, output_type="pt").images
    return lambda n, g: pipe(batch_size=n, generator=g, output_type="pt").images


def score(sample, num_samples: int, seeds: list[int], batch_size: int = 100) -> dict:
    fds, rough, shares = [], [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        images = torch.cat(
            [sample(min(batch_size, num_samples - i), generator) for i in range(0, num_samples, batch_size)]
        )
        result = evaluate_samples(images.float())
        fds.append(result["frechet_distance"])
        rough.append(result["rough_fraction"])
        shares += [min(result["class_counts"]) / num_samples, max(result["class_counts"]) / num_samples]
    spread = statistics.stdev(fds) if len(fds) > 1 else 0.0
    return {"fd": statistics.mean(fds), "fd_std": spread, "fds": fds, "rough": statistics.mean(rough),
            "class_min": min(shares), "class_max": max(shares)}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--two_call_indices", type=int, nargs="*", default=[], help="2 calls at timesteps [K, 0].")
    parser.add_argument("--weights", choices=("saved", "target", "raw"), default="saved")
    parser.add_argument("--checkpoint", default=None, help="checkpoint-<step> of --student, for --weights.")
    parser.add_argument("--teacher_saved_sampler", action="store_true", help="Also the teacher's saved sampler.")
    parser.add_argument("--teacher_ode_levels", type=int, default=0)
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    record = json.loads((Path(args.student) / "distillation.json").read_text())
    print(f"student {args.student} ({args.weights} weights): {record['cpu_minutes']} CPU-minutes of distillation, "
          f"{record['max_train_steps']} steps x batch {record['train_batch_size']}, N = {record['num_scales']}")  # fmt: skip
    pipe = student_pipeline(args.student, args.weights, args.checkpoint)
    rows = {f"student, {calls} call(s)": student_sampler(pipe, calls) for calls in args.calls}
    for k in args.two_call_indices:
        rows[f"student, 2 calls, timesteps [{k}, 0]"] = student_sampler(pipe, timesteps=[k, 0])
    if args.teacher:
        if args.teacher_saved_sampler:
            rows["teacher, saved sampler"] = teacher_sampler(args.teacher)
        if args.teacher_ode_levels:
            label = f"teacher ODE, deterministic Heun, {2 * args.teacher_ode_levels - 1} calls"
            rows[label] = teacher_sampler(args.teacher, args.teacher_ode_levels)
    results = {}
    for label, sample in rows.items():
        results[label] = score(sample, args.num_samples, args.seeds)
        r = results[label]
        print(f"{label:48s} FD {r['fd']:6.2f} +- {r['fd_std']:.2f}  rough {100 * r['rough']:5.1f}%  classes "
              f"{100 * r['class_min']:.1f}-{100 * r['class_max']:.1f}%", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
