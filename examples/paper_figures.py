#!/usr/bin/env python
"""The toy experiments of Song & Ermon (2019) on p_data = 0.2 N((-5, -5), I) + 0.8 N((5, 5), I).

    python examples/paper_figures.py --output_dir docs    # ~30 s on one CPU thread

- `figure_scores.png` (the paper's Fig. 2): the data score grad log p_data beside the score that a small network
  learns by denoising score matching at one small noise level (sigma = 0.1, no annealing) from samples of p_data.
  The estimate is accurate where the samples are and wrong in the low-density regions, which no sample reaches.
- `figure_mixing.png` (the paper's Fig. 3): i.i.d. samples; plain Langevin dynamics with the exact data score, which
  puts about half the samples in each mode because the score does not see the weights of separated modes; annealed
  Langevin dynamics with the exact perturbed scores (sigma 20 -> 1, L = 10, T = 100, epsilon = 0.1, uniform start),
  which recovers the 0.2 / 0.8 weights. Both chains run through `AnnealedLangevinScheduler`, the exact score wrapped
  as a diffusers model, in the loop a pipeline runs.

Prints the fraction of samples in the left mode for each panel and the score errors of the trained network, and of
the same network trained instead by sliced score matching (`ssm_loss`) at the same sigma, for comparison.
"""

import argparse
import time
from pathlib import Path

import torch

from ncsn_diffusers import AnnealedLangevinScheduler
from ncsn_diffusers.training.toy import (
    MixtureScoreModel,
    ToyScoreNet,
    mixture_log_prob,
    mixture_score,
    sample_mixture,
    train_toy_score_net,
)

LIMIT = 8.0  # the plots and the uniform start cover [-8, 8]^2
LOW_DENSITY = 1e-4  # p_data below this counts as a low-density region (the modes peak at 0.8 / (2 pi) ~ 0.13)
DSM_SIGMA = 0.1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_dir",
        type=str,
        default="outputs/paper_figures",
        help="Where to write the two PNG figures (the repository's own: --output_dir docs).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seeds the training, the data and both chains.")
    parser.add_argument("--num_samples", type=int, default=1280, help="Samples per panel of the mixing figure.")
    parser.add_argument("--train_steps", type=int, default=2000, help="DSM steps of the score network.")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.train_steps < 1:
        parser.error("--num_samples and --train_steps must be positive integers.")
    return args


def grid(num_points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An num_points x num_points grid over [-LIMIT, LIMIT]^2: the two coordinate arrays and the points (N, 2)."""
    axis = torch.linspace(-LIMIT, LIMIT, num_points)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    return xx, yy, torch.stack([xx.flatten(), yy.flatten()], dim=1)


def score_errors(model: ToyScoreNet, points: torch.Tensor) -> tuple[float, float]:
    """The RMS of ||s_theta(x, sigma) - grad log p_sigma(x)|| over `points` where p_data is high and where it is low."""
    with torch.no_grad():
        error = (model(points, DSM_SIGMA).sample - mixture_score(points, DSM_SIGMA)).norm(dim=1)
    is_low = mixture_log_prob(points).exp() < LOW_DENSITY
    rms = lambda e: e.pow(2).mean().sqrt().item()  # noqa: E731
    return rms(error[~is_low]), rms(error[is_low])


def run_chain(scheduler: AnnealedLangevinScheduler, model, num_samples: int, generator: torch.Generator):
    """The loop of a diffusers pipeline, on points of shape (num_samples, 2)."""
    scheduler.set_timesteps()
    x = scheduler.initial_sample((num_samples, 2), generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
    return x


def mixing_samples(num_samples: int, seed: int) -> dict[str, torch.Tensor]:
    oracle = MixtureScoreModel()
    start = dict(initial_distribution="uniform", data_range=(-LIMIT, LIMIT))
    # L = 1 is plain Langevin dynamics at sigma_min, whose score is the data score up to sigma_min^2 = 0.01 of variance;
    # epsilon = 0.01 stays below the scheduler's stability bound 2 * sigma_min^2.
    langevin = AnnealedLangevinScheduler(
        sigma_max=1.0, sigma_min=0.1, num_noise_levels=1, steps_per_level=1000, epsilon=0.01, **start
    )
    annealed = AnnealedLangevinScheduler(
        sigma_max=20.0, sigma_min=1.0, num_noise_levels=10, steps_per_level=100, epsilon=0.1, **start
    )
    return {
        "i.i.d.": sample_mixture(num_samples, torch.Generator().manual_seed(seed)),
        "Langevin": run_chain(langevin, oracle, num_samples, torch.Generator().manual_seed(seed + 1)),
        "annealed Langevin": run_chain(annealed, oracle, num_samples, torch.Generator().manual_seed(seed + 2)),
    }


MIXING_TITLES = {
    "i.i.d.": "(a) i.i.d. samples of $p_{data}$",
    "Langevin": "(b) Langevin dynamics, exact data score\n"
    + r"($L = 1$, $\sigma = 0.1$, $T = 1000$, $\epsilon = 0.01$)",
    "annealed Langevin": "(c) annealed Langevin dynamics, exact scores\n"
    + r"($\sigma$: 20 $\to$ 1, $L = 10$, $T = 100$, $\epsilon = 0.1$)",
}


def left_mode_fraction(x: torch.Tensor) -> float:
    """The fraction of points nearer to (-5, -5) than to (5, 5), i.e. below the line x + y = 0."""
    return (x.sum(dim=1) < 0).float().mean().item()


def pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "The figures need matplotlib: pip install 'ncsn-diffusers[figures]' (or pip install matplotlib)."
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scores(model: ToyScoreNet, path: Path):
    plt = pyplot()
    xx, yy, dense = grid(241)
    density = mixture_log_prob(dense).exp().reshape(xx.shape)
    qx, qy, arrows = grid(21)
    true = mixture_score(arrows)
    with torch.no_grad():
        estimate = model(arrows, DSM_SIGMA).sample
    rms_high, rms_low = score_errors(model, dense)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4), constrained_layout=True)
    panels = [
        (r"Data scores $\nabla_x \log p_{data}(x)$", true),
        (rf"Estimated scores $s_\theta(x, \sigma)$, DSM at $\sigma$ = {DSM_SIGMA}, no annealing", estimate),
    ]
    for ax, (title, field) in zip(axes, panels):
        ax.imshow(
            density, extent=(-LIMIT, LIMIT, -LIMIT, LIMIT), origin="lower", cmap="Blues", vmin=0, vmax=density.max()
        )
        # The same arrow scale in both panels, so that lengths compare.
        ax.quiver(qx, qy, field[:, 0].reshape(qx.shape), field[:, 1].reshape(qx.shape), angles="xy", scale=250)
        ax.contour(xx, yy, density, levels=[LOW_DENSITY], colors="tab:red", linewidths=1.2, linestyles="--")
        ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", xlim=(-LIMIT, LIMIT), ylim=(-LIMIT, LIMIT))
        ax.set_aspect("equal")
    axes[1].contourf(xx, yy, density, levels=[0, LOW_DENSITY], colors=["tab:grey"], alpha=0.25)
    axes[1].set_title(f"{panels[1][0]}\nRMS error {rms_high:.2f} near the modes, {rms_low:.2f} in the grey region")
    fig.suptitle(
        "Denoising score matching on samples of $p_{data}$: accurate near the modes, wrong in low-density regions\n"
        f"(red dashed: $p_{{data}}(x)$ = {LOW_DENSITY:g}; grey: $p_{{data}}(x) <$ {LOW_DENSITY:g})"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mixing(samples: dict[str, torch.Tensor], path: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(15, 5.4), constrained_layout=True)
    for ax, (name, x) in zip(axes, samples.items()):
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, color="tab:blue", linewidths=0)
        ax.axline((0, 0), slope=-1, color="grey", linewidth=0.8, linestyle=":")
        ax.text(
            0.03,
            0.97,
            f"left mode: {left_mode_fraction(x):.3f}\n(true weight 0.2)\nmode boundary dotted",
            transform=ax.transAxes,
            va="top",
            fontsize=10,
            bbox=dict(facecolor="white", alpha=0.85, edgecolor="none"),
        )
        ax.set(title=MIXING_TITLES[name], xlabel="$x_1$", ylabel="$x_2$", xlim=(-10, 10), ylim=(-10, 10))
        ax.set_aspect("equal")
    fig.suptitle(
        rf"$p_{{data}} = 0.2\,\mathcal{{N}}((-5, -5), I) + 0.8\,\mathcal{{N}}((5, 5), I)$, "
        f"{len(next(iter(samples.values())))} samples per panel, exact scores\n"
        r"(c) ends at $p_{data}$ perturbed by $\sigma_L = 1$, hence its wider modes"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)  # small tensors: one thread is faster than a pool
    torch.manual_seed(args.seed)  # the network's initial weights
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    model = ToyScoreNet()
    losses = train_toy_score_net(
        model, DSM_SIGMA, num_steps=args.train_steps, generator=torch.Generator().manual_seed(args.seed)
    )
    rms_high, rms_low = score_errors(model, grid(241)[2])
    print(
        f"DSM at sigma={DSM_SIGMA}, {args.train_steps} steps ({time.perf_counter() - start:.1f} s), final loss "
        f"{sum(losses[-100:]) / len(losses[-100:]):.3f}: RMS score error {rms_high:.3f} where p_data >= "
        f"{LOW_DENSITY:g}, {rms_low:.3f} where p_data < {LOW_DENSITY:g}"
    )
    plot_scores(model, output_dir / "figure_scores.png")

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    ssm_model = ToyScoreNet()
    generator = torch.Generator().manual_seed(args.seed)
    train_toy_score_net(ssm_model, DSM_SIGMA, num_steps=args.train_steps, generator=generator, objective="ssm")
    rms_high, rms_low = score_errors(ssm_model, grid(241)[2])
    print(
        f"SSM at sigma={DSM_SIGMA}, {args.train_steps} steps ({time.perf_counter() - start:.1f} s): RMS score error "
        f"{rms_high:.3f} where p_data >= {LOW_DENSITY:g}, {rms_low:.3f} where p_data < {LOW_DENSITY:g}"
    )

    samples = mixing_samples(args.num_samples, args.seed)
    for name, x in samples.items():
        print(f"{name} samples: fraction in the left mode {left_mode_fraction(x):.3f} (weight 0.2)")
    plot_mixing(samples, output_dir / "figure_mixing.png")
    print(f"Wrote {output_dir / 'figure_scores.png'} and {output_dir / 'figure_mixing.png'}")


if __name__ == "__main__":
    main()
