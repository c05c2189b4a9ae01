#!/usr/bin/env python
"""Sample quality against the number of U-Net calls (NFE) for score models and a DDPM model trained alike.

    python examples/compare_samplers.py --output_dir outputs/samplers       # resumable; every cell is cached
    python examples/compare_samplers.py --output_dir outputs/samplers --plot docs/fd_vs_nfe.png

Four U-Nets of one size preset are trained by `ncsn_diffusers.training.train` on the same digits, batch, seed,
number of optimizer steps and EMA:

- `ncsn_discrete`: denoising score matching on the NCSNv2 ladder computed from the data (Techniques 1 and 2), sigma a
  level of the ladder (`--sigma_sampling discrete`, the paper);
- `ncsn_log_uniform`: the same with sigma log-uniform in [sigma_L, sigma_1] (`--sigma_sampling log_uniform`);
- `ncsn_log_normal`: the same with log sigma ~ N(-1.2, 1.2^2) truncated to it (`--sigma_sampling log_normal`, EDM's);
- `ddpm`: DDPM's epsilon objective, 1000 linear betas, diffusers' `UNet2DModel` with the same blocks.

Each score model is sampled by every score sampler of `SAMPLERS`, the DDPM model by diffusers' `DDPMScheduler`,
`DDIMScheduler`, `DPMSolverMultistepScheduler` and by annealed Langevin dynamics in VP coordinates, at each NFE of
`--nfe` (1000 only for the samplers in `--nfe_1000`), for each seed of `--seeds`, `--num_samples` images per seed.
A cell (model, sampler, NFE, seed) is scored by `ncsn_diffusers.evaluation.evaluate_samples` (Fréchet distance in a
digits classifier's features against the held-out digits, and class counts) and cached under `--output_dir/cells/`,
so an interrupted run loses at most one cell; the cheap cells run first. Writes `results.json`, `results.md` and,
with `--plot`, the FD-against-NFE figure. The floor: random training digits, `--num_samples` per seed, scored like
samples, and the held-out digits against the training split.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ncsn_diffusers.training import TrainingConfig, train

# The score models save their training ladder's annealed Langevin chain, which the `als` sampler runs.
SCORE_SETTINGS = dict(objective="dsm", noise_ladder="ncsnv2", sampler="annealed_langevin")
MODELS = {
    "ncsn_discrete": dict(**SCORE_SETTINGS, sigma_sampling="discrete"),
    "ncsn_log_uniform": dict(**SCORE_SETTINGS, sigma_sampling="log_uniform"),
    "ncsn_log_normal": dict(**SCORE_SETTINGS, sigma_sampling="log_normal"),
    "ddpm": dict(objective="epsilon"),
}
SIGMA_MIN = 0.02  # NCSN's sigma_L = 0.01 for [0, 1] data, on the script's [-1, 1] data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--output_dir", required=True, help="Models, cells, results.json and results.md go here.")
    add("--model_preset", default="digits", help="U-Net size preset of all three models.")
    add("--resolution", type=int, default=8, help="Image side; 8 is the digits' native size.")
    add("--max_train_steps", type=int, default=1000, help="Optimizer steps of each model.")
    add("--train_batch_size", type=int, default=128)
    add("--num_samples", type=int, default=200, help="Images per sampling seed.")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Sampling seeds.")
    add("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 200, 1000], help="U-Net calls per sample.")
    add(
        "--nfe_1000",
        nargs="*",
        default=["ncsn_discrete/als", "ncsn_log_uniform/als", "ncsn_log_normal/als", "ddpm/ddpm"],
        help="model/sampler pairs that also run at NFE 1000 (the rest stop at 200).",
    )
    add("--only", nargs="*", default=None, help="Run only these model/sampler pairs (default: all).")
    add("--samplers_only", action="store_true", help="Skip training; use the models already in --output_dir.")
    add("--report_only", action="store_true", help="Only rebuild the table and figure from the cached cells.")
    add("--plot", default=None, help="Write the FD-against-NFE figure to this path.")
    add("--num_threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine).")
    add("--seed", type=int, default=0, help="Training seed of all three models.")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


def train_models(args: argparse.Namespace, root: Path):
    """Trains each model of `MODELS` unless `root/<name>` already holds its saved pipeline."""
    from accelerate.state import AcceleratorState, GradientState

    times_path = root / "train_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for name, settings in MODELS.items():
        model_dir = root / name
        if (model_dir / "model_index.json").exists():
            continue
        config = TrainingConfig(
            model_preset=args.model_preset, resolution=args.resolution, train_batch_size=args.train_batch_size,
            max_train_steps=args.max_train_steps, seed=args.seed, output_dir=str(model_dir), report_to="none",
            num_sample_images=16, steps_per_level=1, checkpointing_steps=max(args.max_train_steps // 4, 1),
            checkpoints_total_limit=1, resume_from_checkpoint="latest", use_ema=True, **settings,
            **({} if name == "ddpm" else {"sigma_min": SIGMA_MIN}),
        )  # fmt: skip
        AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per run, as in a fresh process
        GradientState._reset_state()
        start = time.perf_counter()
        train(config)
        times[name] = time.perf_counter() - start
        times_path.write_text(json.dumps(times, indent=2))
        torch.set_num_threads(args.num_threads)  # accelerate may change it
    return times


# ---------------------------------------------------------------------------------------------------------------------
# Samplers: each takes (model, nfe, num_samples, generator) and returns (N, 1, H, W) images in [0, 1] after exactly
# `nfe` U-Net calls.
# ---------------------------------------------------------------------------------------------------------------------


def technique4_epsilon(sigmas: list[float], langevin_steps: int) -> float:
    """Technique 4's epsilon for the geometric ladder from sigma_1 to sigma_L of min(L, `langevin_steps`) levels and
    the T those steps allow (the scheduler shortens the ladder to one level per call when calls are scarce)."""
    from ncsn_diffusers.schedulers.ncsnv2_ladder_design import solve_epsilon

    num_levels = min(len(sigmas), langevin_steps)
    gamma = (sigmas[0] / sigmas[-1]) ** (1.0 / max(num_levels - 1, 1))
    return solve_epsilon(sigmas[-1], gamma, langevin_steps // num_levels)


def annealed_langevin(model, nfe, num_samples, generator):
    """NCSNv2 sampling: nfe - 1 annealed Langevin steps on the trained ladder, Technique 4's epsilon, one denoising
    call."""
    pipe = model["pipe"]
    epsilon = technique4_epsilon(pipe.scheduler.sigmas.tolist(), nfe - 1)
    images = pipe(
        batch_size=num_samples,
        generator=generator,
        num_inference_steps=nfe,
        epsilon=epsilon,
        final_denoise=True,
        output_type="pt",
    ).images
    return images


def annealed_langevin_vp(model, nfe, num_samples, generator):
    """The DDPM network under `AnnealedLangevinScheduler.from_config(DDPMScheduler().config)`: VP levels."""
    return model["als_vp"](
        batch_size=num_samples, generator=generator, num_inference_steps=nfe, output_type="pt"
    ).images


def diffusers_ddpm_family(scheduler_class_name: str):
    def sample(model, nfe, num_samples, generator):
        import diffusers
        from diffusers import DDPMPipeline

        scheduler = getattr(diffusers, scheduler_class_name).from_config(model["ddpm_scheduler"].config)
        pipe = DDPMPipeline(unet=model["unet"], scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(batch_size=num_samples, generator=generator, num_inference_steps=nfe, output_type="np").images
        return torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2)

    sample.__doc__ = f"diffusers' DDPMPipeline with {scheduler_class_name}.from_config of the training schedule."
    return sample


def edm_solver(scheduler_class_name: str):
    """diffusers' EDM solver as it is, on the trained sigma range, inside `NCSNPipeline` (which drives it through the
    denoiser D(x, sigma) = x + sigma^2 s(x, sigma))."""

    def sample(model, nfe, num_samples, generator):
        import diffusers

        from ncsn_diffusers import NCSNPipeline

        sigmas = model["pipe"].scheduler.sigmas
        scheduler = getattr(diffusers, scheduler_class_name)(sigma_min=float(sigmas[-1]), sigma_max=float(sigmas[0]))
        pipe = NCSNPipeline(unet=model["unet"], scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=num_samples, generator=generator, num_inference_steps=nfe, output_type="pt").images

    sample.__doc__ = f"diffusers' {scheduler_class_name} (Karras sigmas, rho = 7, to sigma = 0) on D(x, sigma)."
    return sample


def score_scheduler(class_name: str, **options):
    """One of the package's schedulers for score models, on the trained ladder's range, inside `NCSNPipeline`."""

    def sample(model, nfe, num_samples, generator):
        import ncsn_diffusers
        from ncsn_diffusers import NCSNPipeline

        sigmas = model["pipe"].scheduler.sigmas
        scheduler = getattr(ncsn_diffusers, class_name)(
            sigma_max=float(sigmas[0]), sigma_min=float(sigmas[-1]), data_range=(-1.0, 1.0), **options
        )
        pipe = NCSNPipeline(unet=model["unet"], scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=num_samples, generator=generator, num_inference_steps=nfe, output_type="pt").images

    sample.__doc__ = f"{class_name}({options}) from sigma_1 to sigma_L of the trained ladder."
    sample.scheduler_class = class_name
    return sample


# sampler name -> (kind of model it samples, function, label)
SAMPLERS = {
    "als": ("score", annealed_langevin, "annealed Langevin (Technique 4 epsilon, final denoise)"),
    "pc": ("score", score_scheduler("PredictorCorrectorScheduler"), "predictor-corrector (k = 1, r = 0.16)"),
    "ancestral": (
        "score",
        score_scheduler("PredictorCorrectorScheduler", corrector_steps=0),
        "reverse diffusion (ancestral, PC with k = 0)",
    ),
    "cas": ("score", score_scheduler("ConsistentAnnealedSamplingScheduler"), "consistent annealed sampling"),
    "heun": (
        "score",
        score_scheduler("StochasticHeunScheduler"),
        "EDM stochastic Heun (S_churn 80, S_tmin 0.05, S_tmax 50, S_noise 1.007; 2N - 1 calls)",
    ),
    "heun_g1": (
        "score",
        score_scheduler("StochasticHeunScheduler", s_tmin=0.0, s_noise=1.0, s_gamma_max=1.0),
        "stochastic Heun, gamma_i = 1 at every level (S_gamma_max 1, S_tmin 0, S_noise 1)",
    ),
    "heun_ode": (
        "score",
        score_scheduler("StochasticHeunScheduler", s_churn=0.0),
        "EDM deterministic Heun (S_churn 0; 2N - 1 calls)",
    ),
    "edm_euler": ("score", edm_solver("EDMEulerScheduler"), "EDMEulerScheduler via the denoiser"),
    "edm_dpmsolver": ("score", edm_solver("EDMDPMSolverMultistepScheduler"), "EDMDPMSolverMultistepScheduler"),
    "ddpm": ("epsilon", diffusers_ddpm_family("DDPMScheduler"), "DDPMScheduler (ancestral)"),
    "ddim": ("epsilon", diffusers_ddpm_family("DDIMScheduler"), "DDIMScheduler (eta = 0)"),
    "dpmsolver": ("epsilon", diffusers_ddpm_family("DPMSolverMultistepScheduler"), "DPMSolverMultistepScheduler"),
    "als_vp": ("epsilon", annealed_langevin_vp, "annealed Langevin (VP, from_config of DDPMScheduler)"),
}


def load_models(root: Path) -> dict:
    from diffusers import DDPMScheduler

    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline

    models = {}
    for name in MODELS:
        pipe = NCSNPipeline.from_pretrained(root / name)
        pipe.set_progress_bar_config(disable=True)
        model = {"pipe": pipe, "unet": pipe.unet.eval(), "kind": "epsilon" if name == "ddpm" else "score"}
        if name == "ddpm":
            vp = pipe.scheduler.config
            model["ddpm_scheduler"] = DDPMScheduler(
                num_train_timesteps=vp.num_train_timesteps,
                beta_start=vp.beta_start,
                beta_end=vp.beta_end,
                beta_schedule=vp.beta_schedule,
            )
            als = AnnealedLangevinScheduler.from_config(model["ddpm_scheduler"].config)
            model["als_vp"] = NCSNPipeline(unet=pipe.unet, scheduler=als)
            model["als_vp"].set_progress_bar_config(disable=True)
        models[name] = model
    return models


# ---------------------------------------------------------------------------------------------------------------------
# Cells: one (model, sampler, NFE, seed), cached as json (metrics) and npz (images, for the pooled FD)
# ---------------------------------------------------------------------------------------------------------------------


def available(sampler: str) -> bool:
    """The package's newer schedulers may be missing from an older checkout: their cells are then skipped."""
    import ncsn_diffusers

    class_name = getattr(SAMPLERS[sampler][1], "scheduler_class", None)
    return class_name is None or hasattr(ncsn_diffusers, class_name)


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(model, sampler, nfe) in the order they run: up to 100 calls by NFE, so the cheap cells finish first, then
    the 1000-call cells that the goals compare against, then the rest."""
    pairs = [
        (m, s)
        for m in MODELS
        for s, (kind, _, _) in SAMPLERS.items()
        if kind == ("epsilon" if m == "ddpm" else "score")
    ]
    pairs = [p for p in pairs if available(p[1])]
    if args.only is not None:
        pairs = [p for p in pairs if f"{p[0]}/{p[1]}" in args.only]
    cells = []
    for nfe in sorted(args.nfe, key=lambda n: (n > 100, n < 1000, n)):
        for model, sampler in pairs:
            if nfe >= 1000 and f"{model}/{sampler}" not in args.nfe_1000:
                continue
            cells.append((model, sampler, nfe))
    return cells


def run_cell(models, model, sampler, nfe, seed, num_samples, cells_dir: Path) -> dict:
    from ncsn_diffusers.evaluation import evaluate_samples

    path = cells_dir / f"{model}__{sampler}__nfe{nfe}__seed{seed}__n{num_samples}.json"
    if path.exists():
        return json.loads(path.read_text())
    _, function, _ = SAMPLERS[sampler]
    start = time.perf_counter()
    with torch.no_grad():
        images = function(models[model], nfe, num_samples, torch.Generator().manual_seed(seed)).float().cpu()
    seconds = time.perf_counter() - start
    metrics = evaluate_samples(images)
    record = {
        "model": model,
        "sampler": sampler,
        "nfe": nfe,
        "seed": seed,
        "num_samples": num_samples,
        "frechet_distance": metrics["frechet_distance"],
        "class_counts": list(metrics["class_counts"]),
        "class_entropy": metrics["class_entropy"],
        "wall_time_s": seconds,
    }
    np.savez_compressed(path.with_suffix(".npz"), images=images.numpy())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    print(
        f"{model}/{sampler} NFE {nfe} seed {seed}: FD {record['frechet_distance']:.2f} ({seconds:.0f} s)", flush=True
    )
    return record


def pooled(cells_dir: Path, model, sampler, nfe, seeds, num_samples) -> dict:
    from ncsn_diffusers.evaluation import evaluate_samples

    files = [cells_dir / f"{model}__{sampler}__nfe{nfe}__seed{s}__n{num_samples}.npz" for s in seeds]
    images = torch.cat([torch.from_numpy(np.load(f)["images"]) for f in files])
    metrics = evaluate_samples(images)
    return {
        "frechet_distance_pooled": metrics["frechet_distance"],
        "class_counts_pooled": list(metrics["class_counts"]),
    }


def summarise(records: list[dict], args, cells_dir: Path) -> list[dict]:
    """One row per (model, sampler, nfe) with all seeds: FD mean ± std, pooled FD and class counts."""
    groups = {}
    for r in records:
        groups.setdefault((r["model"], r["sampler"], r["nfe"]), []).append(r)
    rows = []
    for (model, sampler, nfe), group in groups.items():
        fds = np.array([r["frechet_distance"] for r in group])
        row = {
            "model": model,
            "sampler": sampler,
            "nfe": nfe,
            "seeds": [r["seed"] for r in group],
            "fd_mean": float(fds.mean()),
            "fd_std": float(fds.std(ddof=1)) if len(fds) > 1 else 0.0,
            "wall_time_s_per_seed": float(np.mean([r["wall_time_s"] for r in group])),
        }
        if len(group) == len(args.seeds):
            row.update(pooled(cells_dir, model, sampler, nfe, args.seeds, args.num_samples))
        rows.append(row)
    return rows


def real_floor(args) -> dict:
    """Random training digits scored like samples (`--num_samples` per seed), and the held-out split's floor."""
    from ncsn_diffusers.digits import load_digits_images
    from ncsn_diffusers.evaluation import evaluate_samples, reference_floor

    train, _ = load_digits_images(args.resolution, split="train")
    fds = []
    for seed in args.seeds:
        index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: args.num_samples]
        fds.append(evaluate_samples(train[index])["frechet_distance"])
    floor = reference_floor(args.resolution)
    pooled_index = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    pooled_fd = evaluate_samples(train[pooled_index[: args.num_samples * len(args.seeds)]])["frechet_distance"]
    return {
        "train_digits_fd_pooled": pooled_fd,
        "train_digits_fd_mean": float(np.mean(fds)),
        "train_digits_fd_std": float(np.std(fds, ddof=1)) if len(fds) > 1 else 0.0,
        "heldout_vs_train_fd": floor["frechet_distance"],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Table and figure
# ---------------------------------------------------------------------------------------------------------------------

MODEL_LABELS = {
    "ncsn_discrete": "NCSN, discrete sigma",
    "ncsn_log_uniform": "NCSN, log-uniform sigma",
    "ncsn_log_normal": "NCSN, log-normal sigma",
    "ddpm": "DDPM",
}


def markdown(rows: list[dict], floor: dict, args) -> str:
    nfes = sorted({r["nfe"] for r in rows})
    by_key = {(r["model"], r["sampler"], r["nfe"]): r for r in rows}
    pairs = list(dict.fromkeys((r["model"], r["sampler"]) for r in rows))
    lines = [
        f"FD (mean ± std over seeds {args.seeds}, {args.num_samples} samples each) against U-Net calls; digits "
        f"{args.resolution}x{args.resolution}, preset `{args.model_preset}`, {args.max_train_steps} steps of batch "
        f"{args.train_batch_size} for every model.",
        "",
        "| model | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    pooled_lines = [
        "",
        f"The same cells, FD of the {args.num_samples * len(args.seeds)} samples pooled over the seeds (less noisy, and "
        "less biased upwards, than one seed's 200):",
        "",
        "| model | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    for model, sampler in pairs:
        cells, pooled_cells = [], []
        for n in nfes:
            r = by_key.get((model, sampler, n))
            complete = r is not None and len(r["seeds"]) == len(args.seeds)
            cells.append(f"{r['fd_mean']:.1f} ± {r['fd_std']:.1f}" if complete else "—")
            pooled_cells.append(f"{r['frechet_distance_pooled']:.2f}" if complete else "—")
        label = f"| {MODEL_LABELS[model]} | {SAMPLERS[sampler][2]} | "
        lines.append(label + " | ".join(cells) + " |")
        pooled_lines.append(label + " | ".join(pooled_cells) + " |")
    lines += pooled_lines
    lines += [
        "",
        f"Floor: {args.num_samples} random training digits per seed score FD {floor['train_digits_fd_mean']:.2f} ± "
        f"{floor['train_digits_fd_std']:.2f}, {args.num_samples * len(args.seeds)} of them "
        f"{floor['train_digits_fd_pooled']:.2f}; the held-out digits against the training split "
        f"{floor['heldout_vs_train_fd']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], floor: dict, path: Path):
    """Pooled FD against NFE: score models on the left (colour: sampler; dashed: discrete sigma, solid: log-uniform,
    dash-dotted: log-normal), the DDPM model on the right; the dotted line is as many real training digits scored like
    the pooled samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(SAMPLERS, plt.get_cmap("tab20").colors))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for model, sampler in dict.fromkeys((r["model"], r["sampler"]) for r in rows):
        ax = axes[1] if model == "ddpm" else axes[0]
        points = sorted(
            (r["nfe"], r["frechet_distance_pooled"])
            for r in rows
            if (r["model"], r["sampler"]) == (model, sampler) and "frechet_distance_pooled" in r
        )
        if not points:
            continue
        n, fd = map(np.array, zip(*points))
        style = {"ncsn_discrete": "--", "ncsn_log_normal": "-."}.get(model, "-")
        ax.plot(n, fd, style + "o", ms=3, color=colours[sampler])
    for ax, kind, title in zip(
        axes,
        ("score", "epsilon"),
        ("NCSN: dashed discrete, solid log-uniform, dash-dotted log-normal sigma", "DDPM model"),
    ):
        ax.axhline(floor["train_digits_fd_pooled"], color="k", lw=1, ls=":")
        handles = [
            plt.Line2D([], [], color=colours[name], marker="o", ms=3, label=label.split(" (")[0])
            for name, (sampler_kind, _, label) in SAMPLERS.items()
            if sampler_kind == kind and any(r["sampler"] == name for r in rows)
        ]
        handles.append(plt.Line2D([], [], color="k", ls=":", label="real training digits, same n"))
        ax.legend(handles=handles, fontsize=8, loc="upper right")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("U-Net calls per sample (NFE)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("FD of the samples pooled over the seeds (lower is better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    cells_dir = root / "cells"
    cells_dir.mkdir(exist_ok=True)
    if not (args.samplers_only or args.report_only):
        train_models(args, root)
    if not args.report_only:
        models = load_models(root)
        for model, sampler, nfe in plan(args):
            for seed in args.seeds:
                run_cell(models, model, sampler, nfe, seed, args.num_samples, cells_dir)
    # Every cached cell of these seeds and sample size, including those of other (parallel or earlier) invocations.
    records = [json.loads(f.read_text()) for f in sorted(cells_dir.glob(f"*__n{args.num_samples}.json"))]
    records = [r for r in records if r["seed"] in args.seeds and r["sampler"] in SAMPLERS]
    floor = real_floor(args)
    rows = summarise(records, args, cells_dir)
    (root / "results.json").write_text(json.dumps({"settings": vars(args), "floor": floor, "rows": rows}, indent=2))
    table = markdown(rows, floor, args)
    (root / "results.md").write_text(table)
    print(table)
    if args.plot:
        plot([r for r in rows if len(r["seeds"]) == len(args.seeds)], floor, Path(args.plot))
    return rows


if __name__ == "__main__":
    main()
