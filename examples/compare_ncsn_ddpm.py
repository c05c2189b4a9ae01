#!/usr/bin/env python
"""NCSN v1, NCSNv2 and DDPM trained alike on the digits and compared at equal numbers of model evaluations.

    python examples/compare_ncsn_ddpm.py --output_dir outputs/compare    # ~40 min on 2 shared CPU cores

Three U-Nets of one size preset are trained by `ncsn_diffusers.training.train` on the same digits, batch, seed and
number of optimizer steps (all runs share every other setting of `TrainingConfig`):

- `ncsn_v1`: denoising score matching on NCSN v1's ladder, sigma 1 -> 0.01 for [0, 1] data, i.e. 2 -> 0.02 on the
  [-1, 1] data the script trains on, L = 10; sampled with T = 100 steps per level and epsilon = 4 x 2e-5; no EMA and no
  final denoising (as in the paper).
- `ncsn_v2`: denoising score matching on the NCSNv2 ladder computed from the data (Techniques 1 and 2: sigma_1 = the
  largest pairwise distance, gamma from the overlap condition), an EMA of the weights (Technique 5), the final
  denoising step, and epsilon from Technique 4 for the T that the sampling budget allows.
- `ddpm`: DDPM's epsilon objective (1000 linear-beta timesteps, the same EMA as `ncsn_v2`), sampled by diffusers'
  `DDPMPipeline` (`DDPMScheduler`, ancestral), and, as a fourth sampler, by `AnnealedLangevinScheduler` built
  `from_config` of the DDPM scheduler (VP coordinates, score = -eps / sqrt(1 - abar_t), L = 100, T = 10).

Every sampler runs at `--num_inference_steps` model calls (1000), and at `--few_steps` (100: the NCSN samplers, and
DDPM for reference), for 3 sampling seeds, scored by `ncsn_diffusers.evaluation.evaluate_samples` against the
held-out digits: the Fréchet distance, precision / recall / density / coverage (k = 5) and KID in the digits
classifier's features, beside confidence, class coverage and memorisation (per-seed means in the tables, every value
in results.json). A Langevin chain always ends with one denoising call and the image just before it is kept too, so one
chain gives the "with" and the "without final denoise" rows (they differ by one call). The paper's other ablation:
NCSNv2 without annealing (Langevin at sigma_L only, from uniform noise, as in Song & Ermon 2019, Section 3.2).
`--sweep` adds what moves NCSNv2: its raw weights (no EMA, from the last checkpoint), ladders cut from the trained one
(top levels dropped, every second or third level), a ladder of untrained sigmas, and 0.25x / 4x the step size. The real
training digits, subsampled to the same size, give the floor.

Writes `results.json`, `results.md` (the tables), `grids/<row>.png` and `grids.png` (seed 0) under `--output_dir`.
Trained models and drawn samples stay there too: a rerun resumes, and `--overwrite` starts afresh, deleting only
what an earlier run of this script wrote (`OWN_FILES`, and in each model folder what `train_ncsn.py` owns:
docs/security.md, "Ownership"); any other file in --output_dir is kept.
"""

import argparse
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ncsn_diffusers.training import TrainingConfig, train
from ncsn_diffusers.training.log_dir import remove_owned_files

MODEL_NAMES = ("ncsn_v1", "ncsn_v2", "ddpm")
V1_EPSILON = 4 * 2e-5  # the paper's epsilon = 2e-5 for [0, 1] data; [-1, 1] data doubles distances, so 4x
V1_LEVELS = 10
SIGMA_MIN = 0.02  # NCSN's sigma_L = 0.01 for [0, 1] data, rescaled to [-1, 1]
V2_TRAIN_STEPS_PER_LEVEL = 5  # Technique 4's T in the paper; only the saved default, the budget sets T when sampling
# The files this script writes in --output_dir, beside the model folders (relative paths); --overwrite deletes these.
OWN_FILES = re.compile(
    r"^(results\.json|results\.md|grids\.png|train_times\.json|samples/[^/]+_seed-?\d+_n\d+(\.tmp)?\.npz|"
    r"grids/[^/]+\.png)$"
)
METRIC_KEYS = (
    "frechet_distance",
    "precision",
    "recall",
    "density",
    "coverage",
    "kid_mean",
    "classifier_confidence",
    "class_entropy",
    "classes_missing",
    "memorisation_fraction",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--output_dir", required=True, help="Models, samples, results.json, results.md and the grids go here.")
    add(
        "--overwrite",
        action="store_true",
        help="Start afresh: delete what an earlier run of this script wrote in --output_dir (its results, grids and "
        "samples) and retrain the models over their folders; any other file is kept.",
    )
    add("--model_preset", default="digits", help="U-Net size preset of all three models.")
    add("--resolution", type=int, default=8, help="Image side; 8 is the digits' native size.")
    add("--max_train_steps", type=int, default=1000, help="Optimizer steps of each model.")
    add("--train_batch_size", type=int, default=128)
    add("--num_samples", type=int, default=120, help="Images per sampling seed.")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Sampling seeds.")
    add("--num_inference_steps", type=int, default=1000, help="Model calls of every sampler (DDPM's 1000).")
    add("--few_steps", type=int, default=100, help="The smaller budget in model calls, for every sampler.")
    add("--sweep", action=argparse.BooleanOptionalAction, default=True, help="Also run the NCSNv2 sweep rows.")
    add("--num_threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine).")
    add("--seed", type=int, default=0, help="Training seed of all three models.")
    args = parser.parse_args(argv)
    for name in ("resolution", "max_train_steps", "train_batch_size", "num_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}.")
    if args.num_samples < 2:
        parser.error(f"--num_samples must be at least 2 (a covariance needs two images), got {args.num_samples}.")
    if not 2 <= args.few_steps <= args.num_inference_steps:
        parser.error("Need 2 <= --few_steps <= --num_inference_steps (a chain needs a Langevin and a denoising call).")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}.")
    return args


# ---------------------------------------------------------------------------------------------------------------------
# Training: three calls of `train` that differ only in the objective, the ladder and EMA
# ---------------------------------------------------------------------------------------------------------------------


def training_config(name: str, args: argparse.Namespace, output_dir: Path) -> TrainingConfig:
    """The resolved `TrainingConfig` of model `name` (one of `MODEL_NAMES`)."""
    common = dict(
        model_preset=args.model_preset, resolution=args.resolution, train_batch_size=args.train_batch_size,
        max_train_steps=args.max_train_steps, seed=args.seed, output_dir=str(output_dir), report_to="none",
        num_sample_images=min(16, args.num_samples), checkpointing_steps=max(args.max_train_steps // 4, 1),
        checkpoints_total_limit=1, sigma_sampling="discrete", sampler="annealed_langevin",
        # --overwrite: train_ncsn's own --overwrite_output_dir, which deletes only the files its runs own
        **(dict(overwrite_output_dir=True) if args.overwrite else dict(resume_from_checkpoint="latest")),
    )  # fmt: skip
    v1_steps_per_level = max(args.num_inference_steps // V1_LEVELS, 1)
    specific = {
        "ncsn_v1": dict(
            objective="dsm", noise_ladder="explicit", sigma_max=2.0, sigma_min=SIGMA_MIN,
            num_noise_levels=V1_LEVELS, steps_per_level=v1_steps_per_level, langevin_epsilon=V1_EPSILON,
            final_denoise=False, use_ema=False,
        ),
        "ncsn_v2": dict(
            objective="dsm", noise_ladder="ncsnv2", sigma_min=SIGMA_MIN, steps_per_level=V2_TRAIN_STEPS_PER_LEVEL,
            final_denoise=True, use_ema=True,
        ),
        "ddpm": dict(objective="epsilon", use_ema=True),
    }[name]  # fmt: skip
    return TrainingConfig(**common, **specific).resolve()


REUSE_KEYS = ("objective", "noise_ladder", "model_preset", "resolution", "max_train_steps", "train_batch_size", "seed")


def check_reusable(model_dir: Path, wanted: TrainingConfig):
    """Refuses to reuse a model trained with other settings than this run asks for."""
    saved = json.loads((model_dir / "training_args.json").read_text())
    differ = [
        f"{k}: {saved.get(k)!r} there, {getattr(wanted, k)!r} now"
        for k in REUSE_KEYS
        if saved.get(k) != getattr(wanted, k)
    ]
    if differ:
        raise ValueError(
            f"{model_dir} holds a model trained with other settings ({'; '.join(differ)}); pass --overwrite to "
            "retrain, or another --output_dir."
        )


def train_models(args: argparse.Namespace, root: Path) -> dict:
    """Trains each model unless `root/<name>` already holds its saved pipeline; returns per-model facts."""
    from accelerate.state import AcceleratorState, GradientState

    times_path = root / "train_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for name in MODEL_NAMES:
        model_dir = root / name
        if not args.overwrite and (model_dir / "model_index.json").exists():
            check_reusable(model_dir, training_config(name, args, model_dir))
            continue
        AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per run, as in a fresh process
        GradientState._reset_state()
        start = time.perf_counter()
        train(training_config(name, args, model_dir))
        times[name] = time.perf_counter() - start
        times_path.write_text(json.dumps(times, indent=2))
        torch.set_num_threads(args.num_threads)  # accelerate may change it

    facts = {}
    for name in MODEL_NAMES:
        log = (root / name / "logs" / "train_log.jsonl").read_text().splitlines()
        last = json.loads(log[-1])
        unet_config = json.loads((root / name / "unet" / "config.json").read_text())
        facts[name] = {
            "train_time_s": times.get(name),
            "final_loss": last.get("loss_dsm" if name != "ddpm" else "loss_epsilon"),
            "unet_class": unet_config["_class_name"],
            "num_parameters": None,
        }
    return facts


# ---------------------------------------------------------------------------------------------------------------------
# Samplers: a chain is one sampling configuration, run for every seed; it gives one or two rows of the table
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """One sampling configuration of one trained model.

    `kind="langevin"`: annealed Langevin dynamics through `NCSNPipeline`, `langevin_steps` Langevin steps and then one
    denoising call; `rows` maps a row id to (`"langevin"`, the image before the denoising call, or `"denoised"`; the
    table it belongs in). `kind="ddpm"`: diffusers' `DDPMPipeline` with `langevin_steps` ancestral steps, output
    `"ddpm"`. `scheduler_overrides` change the model's annealed Langevin scheduler (e.g. one level: no annealing).
    """

    id: str
    model: str
    kind: str
    langevin_steps: int
    rows: dict
    description: str
    epsilon: float | None = None
    scheduler_overrides: dict = field(default_factory=dict)


def technique4_epsilon(sigma_max: float, sigma_min: float, num_levels: int, langevin_steps: int) -> tuple[float, int]:
    """Technique 4's epsilon for the geometric ladder of `num_levels` from sigma_max to sigma_min and the T that
    `langevin_steps` calls allow (the scheduler shortens the ladder to one level per call when calls are scarce)."""
    from ncsn_diffusers.schedulers.ncsnv2_ladder_design import solve_epsilon

    num_levels = min(num_levels, langevin_steps)
    gamma = (sigma_max / sigma_min) ** (1.0 / max(num_levels - 1, 1))
    steps_per_level = langevin_steps // num_levels
    return solve_epsilon(sigma_min, gamma, steps_per_level), steps_per_level


def v2_chain(chain_id: str, n: int, v2_sigmas: list[float], group: str, model: str = "ncsn_v2", **options) -> Chain:
    """NCSNv2 sampling with n - 1 Langevin steps and the denoising call on the trained ladder `v2_sigmas`, or on
    `sigma_max` / `num_noise_levels` overrides; epsilon from Technique 4 unless scaled by `epsilon_factor`."""
    sigma_max = options.get("sigma_max", v2_sigmas[0])
    num_levels = options.get("num_noise_levels", len(v2_sigmas))
    eps, T = technique4_epsilon(sigma_max, v2_sigmas[-1], num_levels, n - 1)
    factor = options.pop("epsilon_factor", 1.0)
    label = f"{factor:g}x Technique 4" if factor != 1.0 else "Technique 4"
    description = options.pop(
        "description",
        f"annealed Langevin, sigma {sigma_max:.3g} -> {v2_sigmas[-1]:.3g}, L={min(num_levels, n - 1)}, T={T}, "
        f"eps={factor * eps:.2e} ({label})",
    )
    rows = {chain_id: ("denoised", group)}
    if group != "sweep":
        rows[chain_id.replace(f"@{n}", f"-denoise@{n - 1}")] = ("langevin", "ablation")
    return Chain(chain_id, model, "langevin", n - 1, rows, description, factor * eps, options)


def build_chains(args: argparse.Namespace, v2_sigmas: list[float], has_raw_weights: bool) -> list[Chain]:
    """The samplers of the comparison; a row id reads `<sampler>@<model calls>`."""
    chains = []
    for n in dict.fromkeys((args.num_inference_steps, args.few_steps)):
        L1 = min(V1_LEVELS, n)
        # NCSN v1 as published: n Langevin steps, L = 10 levels of T = n / 10, no denoising; denoising is the ablation.
        chains.append(Chain(
            f"ncsn_v1@{n}", "ncsn_v1", "langevin", n,
            {f"ncsn_v1@{n}": ("langevin", "main"), f"ncsn_v1+denoise@{n + 1}": ("denoised", "ablation")},
            f"annealed Langevin, sigma 2 -> {SIGMA_MIN}, L={L1}, T={n // L1}, eps={V1_EPSILON:.1e}",
        ))  # fmt: skip
        # NCSNv2: n - 1 Langevin steps on the trained ladder and the denoising call, epsilon from Technique 4.
        chains.append(v2_chain(f"ncsn_v2@{n}", n, v2_sigmas, "main"))
        # No annealing (the paper's ablation): the same calls and epsilon, all at sigma_L, from uniform noise.
        eps = chains[-1].epsilon
        chains.append(Chain(
            f"ncsn_v2_no_anneal@{n}", "ncsn_v2", "langevin", n - 1,
            {f"ncsn_v2_no_anneal@{n}": ("denoised", "ablation"), f"ncsn_v2_no_anneal-denoise@{n - 1}": ("langevin", "ablation")},
            f"Langevin at sigma_L only, uniform start, T={n - 1}, eps={eps:.2e}", eps,
            {"num_noise_levels": 1, "initial_distribution": "uniform"},
        ))  # fmt: skip
        # The DDPM model under annealed Langevin dynamics: VP levels of the DDPM schedule, L = 100, T = n / 100.
        chains.append(Chain(
            f"ddpm_als@{n}", "ddpm", "langevin", n,
            {f"ddpm_als@{n}": ("langevin", "main"), f"ddpm_als+denoise@{n + 1}": ("denoised", "ablation")},
            f"annealed Langevin (VP), L={min(100, n)}, T={n // min(100, n)}, eps=2e-5 (from_config of DDPMScheduler)",
        ))  # fmt: skip
        chains.append(
            Chain(f"ddpm@{n}", "ddpm", "ddpm", n, {f"ddpm@{n}": ("ddpm", "main")}, f"DDPMScheduler, {n} steps")
        )
    if args.sweep:
        chains += sweep_chains(args, v2_sigmas, has_raw_weights)
    return chains


def sweep_chains(args: argparse.Namespace, v2_sigmas: list[float], has_raw_weights: bool) -> list[Chain]:
    """What moves NCSNv2 towards DDPM: EMA, the top of the ladder, its density, the step size.

    Ladders other than the trained one are built from trained levels only (dropping the top k, or every third
    level), except the one row that samples on untrained sigmas (v1's ladder), which measures what that costs.
    """
    n, few, L = args.num_inference_steps, args.few_steps, len(v2_sigmas)
    chains = []
    for budget in dict.fromkeys((n, few)):
        if has_raw_weights:  # the last checkpoint's raw weights: the same run without EMA
            chains.append(v2_chain(f"ncsn_v2_no_ema@{budget}", budget, v2_sigmas, "sweep", model="ncsn_v2_no_ema"))
        for k in (5,) if budget == n and n != few else (3, 5, 8):
            if k < L - 1:
                top = {"sigma_max": v2_sigmas[k], "num_noise_levels": L - k}
                chains.append(v2_chain(f"ncsn_v2_drop{k}@{budget}", budget, v2_sigmas, "sweep", **top))
    for factor in (0.25, 4.0):
        chain = v2_chain(f"ncsn_v2_eps{factor:g}x@{few}", few, v2_sigmas, "sweep", epsilon_factor=factor)
        if chain.epsilon < 2 * v2_sigmas[-1] ** 2:  # beyond it the chain diverges (the scheduler refuses it)
            chains.append(chain)
    every_third = {"sigma_max": v2_sigmas[(L - 1) % 3], "num_noise_levels": (L - 1) // 3 + 1}
    chains.append(v2_chain(f"ncsn_v2_every3rd@{few}", few, v2_sigmas, "sweep", **every_third))
    # NCSN v1's ladder (untrained sigmas) against the trained ladder closest to it: from level 5 on, every second.
    untrained = {"sigma_max": 2.0, "num_noise_levels": V1_LEVELS}
    chains.append(v2_chain(f"ncsn_v2_v1ladder@{few}", few, v2_sigmas, "sweep", **untrained))
    if L > 7:
        start = 5 + (L - 6) % 2
        every_second = {"sigma_max": v2_sigmas[start], "num_noise_levels": (L - 1 - start) // 2 + 1}
        chains.append(v2_chain(f"ncsn_v2_drop5_every2nd@{few}", few, v2_sigmas, "sweep", **every_second))
    return chains


def load_pipelines(root: Path) -> dict:
    """The trained models with their base samplers: `NCSNPipeline`s, and `DDPMPipeline` for the DDPM model; also
    NCSNv2 without EMA when its last checkpoint is there."""
    from diffusers import DDPMPipeline, DDPMScheduler
    from safetensors.torch import load_file

    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline
    from ncsn_diffusers.models.unet_ncsn import NCSNUNet2DModel
    from ncsn_diffusers.training.checkpointing import latest_checkpoint

    pipes = {name: NCSNPipeline.from_pretrained(root / name) for name in ("ncsn_v1", "ncsn_v2")}
    trained = NCSNPipeline.from_pretrained(root / "ddpm")  # the DDPM U-Net; its saved sampler is not used
    vp = trained.scheduler.config
    ddpm_scheduler = DDPMScheduler(
        num_train_timesteps=vp.num_train_timesteps,
        beta_start=vp.beta_start,
        beta_end=vp.beta_end,
        beta_schedule=vp.beta_schedule,
    )
    # What a diffusers user does: the DDPM scheduler's config, read as annealed Langevin dynamics.
    pipes["ddpm"] = NCSNPipeline(
        unet=trained.unet, scheduler=AnnealedLangevinScheduler.from_config(ddpm_scheduler.config)
    )
    pipes["ddpm_ancestral"] = DDPMPipeline(unet=trained.unet, scheduler=ddpm_scheduler)
    checkpoint = latest_checkpoint(root / "ncsn_v2")
    if checkpoint is not None and (checkpoint / "model.safetensors").is_file():
        # accelerate's checkpoint holds the raw (non-EMA) weights of the same training run.
        raw = NCSNUNet2DModel.from_config(pipes["ncsn_v2"].unet.config)
        raw.load_state_dict(load_file(checkpoint / "model.safetensors"))
        pipes["ncsn_v2_no_ema"] = NCSNPipeline(unet=raw.eval(), scheduler=pipes["ncsn_v2"].scheduler)
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def run_chain(chain: Chain, pipes: dict, num_samples: int, seed: int) -> tuple[dict, float]:
    """Draws `num_samples` images (N, H, W, 1) in [0, 1] per output of the chain; returns them and the wall time."""
    from ncsn_diffusers import NCSNPipeline

    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    if chain.kind == "ddpm":
        images = pipes["ddpm_ancestral"](
            batch_size=num_samples, generator=generator, num_inference_steps=chain.langevin_steps, output_type="np"
        ).images
        return {"ddpm": np.asarray(images, dtype=np.float32)}, time.perf_counter() - start

    base = pipes[chain.model]
    pipe = base
    if chain.scheduler_overrides:
        scheduler = type(base.scheduler).from_config(base.scheduler.config, **chain.scheduler_overrides)
        pipe = NCSNPipeline(unet=base.unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
    captured = {}

    def keep_langevin_sample(pipeline, i, t, callback_kwargs):
        if i == pipeline.scheduler.num_inference_steps - 2:  # the step before the final denoising call
            captured["sample"] = callback_kwargs["sample"].clone()
        return callback_kwargs

    denoised = pipe(
        batch_size=num_samples,
        generator=generator,
        num_inference_steps=chain.langevin_steps + 1,
        epsilon=chain.epsilon,
        final_denoise=True,
        output_type="np",
        callback_on_step_end=keep_langevin_sample,
    ).images
    elapsed = time.perf_counter() - start
    low, high = pipe.scheduler.data_range
    langevin = ((captured["sample"] - low) / (high - low)).clamp(0, 1).permute(0, 2, 3, 1)  # as the pipeline maps
    return {"denoised": np.asarray(denoised, dtype=np.float32), "langevin": langevin.numpy()}, elapsed


def draw_samples(chains: list[Chain], pipes: dict, args: argparse.Namespace, root: Path) -> dict:
    """Runs every chain for every seed, or reads what an earlier run saved; {(chain id, seed): (outputs, seconds)}."""
    samples_dir = root / "samples"
    samples_dir.mkdir(exist_ok=True)
    drawn = {}
    for chain in chains:
        for seed in args.seeds:
            path = samples_dir / f"{chain.id}_seed{seed}_n{args.num_samples}.npz"
            if path.exists():
                with np.load(path, allow_pickle=False) as saved:
                    outputs = {k: saved[k] for k in saved.files if k != "wall_time_s"}
                    elapsed = float(saved["wall_time_s"])
            else:
                outputs, elapsed = run_chain(chain, pipes, args.num_samples, seed)
                np.savez(path.with_suffix(".tmp.npz"), wall_time_s=elapsed, **outputs)
                path.with_suffix(".tmp.npz").replace(path)
                print(f"{chain.id} seed {seed}: {elapsed:.1f} s", flush=True)
            drawn[chain.id, seed] = outputs, elapsed
    return drawn


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation, tables, grids
# ---------------------------------------------------------------------------------------------------------------------


def to_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, H, W, 1) -> (N, 1, H, W)


def score(per_seed_images: list[np.ndarray], seeds: list[int], wall_times: list[float]) -> dict:
    """Metrics per seed, their mean and spread (sample std over seeds), and the Fréchet distance of all seeds pooled."""
    from ncsn_diffusers.evaluation import evaluate_samples

    per_seed = []
    for seed, images, seconds in zip(seeds, per_seed_images, wall_times):
        metrics = evaluate_samples(to_nchw(images))
        per_seed.append({"seed": seed, **{k: metrics[k] for k in METRIC_KEYS}, "wall_time_s": seconds})
    result = {"per_seed": per_seed}
    for key in (*METRIC_KEYS, "wall_time_s"):
        values = np.array([entry[key] for entry in per_seed], dtype=np.float64)
        result[f"{key}_mean"] = float(values.mean())
        result[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    pooled = evaluate_samples(to_nchw(np.concatenate(per_seed_images)))
    result["frechet_distance_pooled"] = pooled["frechet_distance"]
    result["class_entropy_pooled"] = pooled["class_entropy"]
    result["class_counts_pooled"] = pooled["class_counts"]
    return result


def evaluate_rows(chains: list[Chain], drawn: dict, args: argparse.Namespace) -> tuple[list[dict], dict]:
    rows, images_seed0 = [], {}
    for chain in chains:
        chain_calls = chain.langevin_steps + (chain.kind == "langevin")
        for row_id, (output, group) in chain.rows.items():
            calls = chain.langevin_steps + (output == "denoised")
            images = [drawn[chain.id, seed][0][output] for seed in args.seeds]
            # Both rows of a chain come from one run: each is charged its share of the calls.
            wall = [drawn[chain.id, seed][1] * calls / chain_calls for seed in args.seeds]
            row = {
                "id": row_id,
                "group": group,
                "model": chain.model,
                "sampler": "ddpm_ancestral" if chain.kind == "ddpm" else "annealed_langevin",
                "description": chain.description,
                "calls": calls,
                "final_denoise": output == "denoised",
                "annealing": chain.kind == "langevin" and chain.scheduler_overrides.get("num_noise_levels") != 1,
                "epsilon": chain.epsilon,
                "chain": chain.id,
                **score(images, args.seeds, wall),
            }
            rows.append(row)
            images_seed0[row_id] = images[0]
            print(f"{row_id}: FD {row['frechet_distance_mean']:.3f} +- {row['frechet_distance_std']:.3f}", flush=True)
    return rows, images_seed0


def real_data_rows(args: argparse.Namespace) -> tuple[dict, np.ndarray, dict]:
    """The floor: random training digits, `--num_samples` per seed, scored like samples (they are training images,
    so `memorisation_fraction` is 1 by construction); and `reference_floor` (the 360 held-out digits vs the training
    split)."""
    from ncsn_diffusers.digits import load_digits_images
    from ncsn_diffusers.evaluation import reference_floor

    train, _ = load_digits_images(args.resolution, split="train")
    per_seed = []
    for seed in args.seeds:
        index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: args.num_samples]
        per_seed.append(train[index].permute(0, 2, 3, 1).numpy())
    row = {
        "id": "real_train_digits",
        "group": "main",
        "model": "data",
        "sampler": "none",
        "description": f"{args.num_samples} random training digits per seed",
        "calls": 0,
        "final_denoise": False,
        "annealing": False,
        "epsilon": None,
        "chain": None,
        **score(per_seed, args.seeds, [0.0] * len(args.seeds)),
    }
    floor = {k: v for k, v in reference_floor(args.resolution).items() if k != "class_counts"}
    return row, per_seed[0], floor


def image_grid(images: np.ndarray, columns: int = 8, scale: int = 3):
    """The first `columns`**2 images (N, H, W, 1) as a PIL grid with 1-pixel white gutters, enlarged `scale` times."""
    from PIL import Image

    images = images[: columns * columns, ..., 0]
    n, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = image
    picture = Image.fromarray((grid.clip(0, 1) * 255).round().astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), resample=Image.Resampling.NEAREST)


def save_grids(images_seed0: dict, rows: list[dict], root: Path, args: argparse.Namespace, per_line: int = 4):
    """grids/<row>.png for every row, and grids.png: the headline rows, `per_line` to a line, each under its id and
    pooled Fréchet distance."""
    from PIL import Image, ImageDraw

    grids_dir = root / "grids"
    grids_dir.mkdir(exist_ok=True)
    for row_id, images in images_seed0.items():
        image_grid(images).save(grids_dir / f"{row_id}.png")
    n, few = args.num_inference_steps, args.few_steps
    headline = [f"ncsn_v1@{n}", f"ncsn_v2@{n}", f"ddpm@{n}", f"ddpm_als@{n}"]
    headline += [f"ncsn_v2@{few}", f"ddpm@{few}", f"ncsn_v2_no_anneal@{n}", "real_train_digits"]
    by_id = {row["id"]: row for row in rows}
    tiles = [(row_id, image_grid(images_seed0[row_id])) for row_id in dict.fromkeys(headline) if row_id in by_id]
    width, height = tiles[0][1].size[0] + 10, tiles[0][1].size[1] + 30
    lines = math.ceil(len(tiles) / per_line)
    sheet = Image.new("L", (min(len(tiles), per_line) * width, lines * height), 255)
    draw = ImageDraw.Draw(sheet)
    for k, (row_id, tile) in enumerate(tiles):
        x, y = (k % per_line) * width, (k // per_line) * height
        sheet.paste(tile, (x, y + 28))
        draw.text((x + 2, y + 2), row_id, fill=0)
        draw.text((x + 2, y + 14), f"FD pooled {by_id[row_id]['frechet_distance_pooled']:.1f}", fill=0)
    sheet.save(root / "grids.png")


MODEL_LABELS = {
    "ncsn_v1": "NCSN v1 (DSM, 2 -> 0.02, L=10, no EMA)",
    "ncsn_v2": "NCSNv2 (DSM, Techniques 1-2 ladder, EMA)",
    "ncsn_v2_no_ema": "NCSNv2, raw weights (no EMA)",
    "ddpm": "DDPM (epsilon, 1000 linear betas, EMA)",
    "data": "real data",
}


GROUP_TITLES = {
    "main": "Main comparison: equal training, equal model calls",
    "ablation": "Ablations of the papers' claims: final denoising, annealing",
    "sweep": "What moves NCSNv2: EMA, the ladder's top and density, the step size",
}
ROW_HEADER = [
    "| row | model | sampler | calls | FD ↓ | FD pooled ↓ | precision ↑ | recall ↑ | density ↑ | coverage ↑ "
    "| KID ↓ | confidence ↑ | class entropy ↑ | missing classes | memorised | s / seed |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def markdown_row(row: dict) -> str:
    denoise = " + denoise" if row["final_denoise"] else ""
    return (
        f"| `{row['id']}` | {MODEL_LABELS[row['model']]} | {row['description']}{denoise} | {row['calls']} "
        f"| {row['frechet_distance_mean']:.2f} ± {row['frechet_distance_std']:.2f} "
        f"| {row['frechet_distance_pooled']:.2f} "
        f"| {row['precision_mean']:.3f} | {row['recall_mean']:.3f} | {row['density_mean']:.3f} "
        f"| {row['coverage_mean']:.3f} | {row['kid_mean_mean']:.1f} "
        f"| {row['classifier_confidence_mean']:.3f} ± {row['classifier_confidence_std']:.3f} "
        f"| {row['class_entropy_mean']:.3f} ± {row['class_entropy_std']:.3f} | {row['classes_missing_mean']:.1f} "
        f"| {row['memorisation_fraction_mean']:.2f} | {row['wall_time_s_mean']:.1f} ± {row['wall_time_s_std']:.1f} |"
    )


def markdown(results: dict) -> str:
    """results.md: the settings, the training table, and one table per group of rows."""
    s = results["settings"]
    lines = [
        f"Digits {s['resolution']}x{s['resolution']}, U-Net preset `{s['model_preset']}`, {s['max_train_steps']} "
        f"optimizer steps of batch {s['train_batch_size']} per model; {s['num_samples']} samples per seed, seeds "
        f"{s['seeds']}: mean ± std (sample std) over seeds; FD pooled: the {s['num_samples'] * len(s['seeds'])} "
        f"samples of all seeds together. Wall time {results['total_wall_time_s'] / 60:.1f} min (training, sampling, "
        f"evaluation) on {s['num_threads']} CPU thread(s).",
        "",
        "| model | U-Net | parameters | train time (s) | final loss |",
        "|---|---|---:|---:|---:|",
    ]
    for name, facts in results["models"].items():
        train_time = "—" if facts["train_time_s"] is None else f"{facts['train_time_s']:.0f}"
        lines.append(
            f"| {MODEL_LABELS[name]} | `{facts['unet_class']}` | {facts['num_parameters']:,} | {train_time} | "
            f"{facts['final_loss']:.4f} |"
        )
    for group, title in GROUP_TITLES.items():
        rows = [row for row in results["rows"] if row["group"] == group]
        if rows:
            lines += ["", f"**{title}**", "", *ROW_HEADER, *map(markdown_row, rows)]
    floor = results["reference_floor"]
    lines += [
        "",
        f"Reference floor (the {floor['num_samples']} held-out digits against the training split): FD "
        f"{floor['frechet_distance']:.3f}, precision {floor['precision']:.3f}, recall {floor['recall']:.3f}, "
        f"density {floor['density']:.3f}, coverage {floor['coverage']:.3f}, KID {floor['kid_mean']:.1f} ± "
        f"{floor['kid_std']:.1f}, confidence {floor['classifier_confidence']:.3f}, class entropy "
        f"{floor['class_entropy']:.3f}; feature classifier held-out accuracy {floor['classifier_test_accuracy']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    root = Path(args.output_dir)
    if args.overwrite:
        remove_owned_files(root, OWN_FILES)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    models = train_models(args, root)
    pipes = load_pipelines(root)
    for name in MODEL_NAMES:
        models[name]["num_parameters"] = sum(p.numel() for p in pipes[name].unet.parameters())
    v2_config = dict(pipes["ncsn_v2"].scheduler.config)
    chains = build_chains(args, pipes["ncsn_v2"].scheduler.sigmas.tolist(), "ncsn_v2_no_ema" in pipes)
    drawn = draw_samples(chains, pipes, args, root)

    evaluation_start = time.perf_counter()
    rows, images_seed0 = evaluate_rows(chains, drawn, args)
    real_row, real_images, floor = real_data_rows(args)
    rows.append(real_row)
    images_seed0[real_row["id"]] = real_images
    save_grids(images_seed0, rows, root, args)

    train_time = sum(t for t in (m["train_time_s"] for m in models.values()) if t is not None)
    sample_time = sum(seconds for _, seconds in drawn.values())
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "overwrite"},
        "ncsn_v2_ladder": {k: v2_config[k] for k in ("sigma_max", "sigma_min", "num_noise_levels", "epsilon")},
        "models": models,
        "rows": rows,
        "reference_floor": floor,
        "wall_time_this_run_s": time.perf_counter() - start,
        # Training and sampling as measured when they ran (a resumed run reuses them), plus this run's evaluation.
        "total_wall_time_s": train_time + sample_time + (time.perf_counter() - evaluation_start),
    }
    (root / "results.json").write_text(json.dumps(results, indent=2))
    (root / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
