#!/usr/bin/env python
"""The DSM loss of trained score models on the ladder's levels and between them, on the held-out digits.

    python examples/dsm_between_levels.py outputs/samplers/ncsn_discrete outputs/samplers/ncsn_log_uniform

For each saved `NCSNPipeline` folder (a score model and its VE ladder sigma_1 > ... > sigma_L), the loss
l(sigma) = mean ||sigma s_theta(x + sigma z, sigma) + z||^2 (the training objective, a mean over pixels) is measured
on the held-out digits at every level sigma_i and at every geometric midpoint sqrt(sigma_i sigma_{i+1}), with the same
noise z for every model. A network trained only on the levels (`--sigma_sampling discrete`) is undefined between
them; one trained on log-uniform sigmas is not. Prints a markdown table: the mean over levels, over midpoints, and the
largest ratio of a midpoint's loss to the mean of its two neighbouring levels'.
"""

import argparse
import sys

import torch

from ncsn_diffusers import NCSNPipeline, dsm_loss, load_digits_images


def losses_at(unet, images: torch.Tensor, sigmas: torch.Tensor, repeats: int, seed: int) -> torch.Tensor:
    """l(sigma) for each sigma, averaged over `repeats` noise draws per image; (len(sigmas),)."""
    x = images * 2 - 1  # [0, 1] -> the models' [-1, 1]
    out = []
    for sigma in sigmas.tolist():
        generator = torch.Generator().manual_seed(seed)  # the same z at every sigma and for every model
        total = 0.0
        for _ in range(repeats):
            z = torch.randn(x.shape, generator=generator)
            s = torch.full((x.shape[0],), sigma)
            total += dsm_loss(unet(x + sigma * z, s).sample.float(), z, s).item()
        out.append(total / repeats)
    return torch.tensor(out)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="Folders of saved score-model NCSNPipelines (same ladder).")
    parser.add_argument("--repeats", type=int, default=4, help="Noise draws per held-out image and sigma.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for folder in args.models:
        pipe = NCSNPipeline.from_pretrained(folder)
        unet = pipe.unet.eval()
        images, _ = load_digits_images(unet.config.sample_size, split="test")
        levels = pipe.scheduler.sigmas.double()
        midpoints = (levels[:-1] * levels[1:]).sqrt()
        with torch.no_grad():
            on = losses_at(unet, images, levels.float(), args.repeats, args.seed)
            between = losses_at(unet, images, midpoints.float(), args.repeats, args.seed)
        ratio = between / (0.5 * (on[:-1] + on[1:]))
        worst = int(ratio.argmax())
        rows.append(
            {
                "model": folder,
                "levels": len(levels),
                "on_levels": on.mean().item(),
                "between_levels": between.mean().item(),
                "worst_ratio": ratio.max().item(),
                "worst_sigma": midpoints[worst].item(),
            }
        )
    print("| model | L | DSM loss on the levels | between the levels | worst midpoint / neighbours (at sigma) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| `{r['model']}` | {r['levels']} | {r['on_levels']:.4f} | {r['between_levels']:.4f} | "
            f"{r['worst_ratio']:.3f} ({r['worst_sigma']:.3g}) |"
        )
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
