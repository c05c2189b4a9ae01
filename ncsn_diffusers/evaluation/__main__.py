"""`python -m ncsn_diffusers.evaluation`: score samples, or a saved pipeline, against the held-out digits or your own.

python -m ncsn_diffusers.evaluation --floor --resolution 16            # what real held-out digits score
python -m ncsn_diffusers.evaluation --samples samples.npy --floor --json scores.json
accelerate launch -m ncsn_diffusers.evaluation --pipeline ./ncsn-digits --num_samples 360 --floor
python -m ncsn_diffusers.evaluation --metric fid --samples ./generated --reference_dir ./real  # torch-fidelity
python -m ncsn_diffusers.evaluation --metric fd_dinov2 --samples ./generated --reference_dir ./real  # transformers
python -m ncsn_diffusers.evaluation --metric bpd --pipeline ./ncsn-digits --num_samples 360  # held-out bits/dim
"""

import argparse
import json
import math

import numpy as np

from .bits_per_dim import digits_bits_per_dim, format_bits_per_dim
from .digits_metrics import evaluate_samples, reference_floor
from .dinov2 import DEFAULT_FEATURE_MODEL, compute_dinov2_metrics
from .fid import FeatureFunction, compute_fid_metrics
from .image_io import images_from_array, load_images, rgb_to_luma
from .sampling import distributed_state, load_pipeline, sample_pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ncsn_diffusers.evaluation", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--samples", help="A folder of images, or a .npy array (N, H, W[, C]) in [0, 1].")
    source.add_argument("--pipeline", help="A folder saved by NCSNPipeline / DDPMPipeline `save_pretrained`.")
    parser.add_argument(
        "--metric",
        choices=("digits", "fid", "fd_dinov2", "bpd"),
        default="digits",
        help="digits: offline, in a digits classifier's features; fid: Inception FID/IS (torch-fidelity); fd_dinov2: "
        "Fréchet distance in DINOv2 features (transformers). Each adds precision, recall, density, coverage and KID. "
        "bpd: bits/dim of the held-out digits under `--pipeline` through the probability-flow ODE, beside reference "
        "densities (docs/likelihood.md).",
    )
    parser.add_argument(
        "--reference_dir", help="`--metric fid` / `fd_dinov2`: the real images (folder or .npy) to compare with."
    )
    parser.add_argument(
        "--feature_model",
        default=DEFAULT_FEATURE_MODEL,
        help="`--metric fd_dinov2`: a DINOv2 model, Hub id or local folder (default: ViT-L/14, as Stein et al. 2023).",
    )
    parser.add_argument("--nearest_k", type=int, default=5, help="k of precision, recall, density and coverage.")
    parser.add_argument(
        "--kid_subset_size", type=int, default=1000, help="KID subset size, capped at the smaller set's size."
    )
    parser.add_argument(
        "--floor", action="store_true", help="Also score the real held-out digits (`--metric digits`)."
    )
    parser.add_argument("--json", help="Write the results to this json file.")
    parser.add_argument(
        "--trace",
        choices=("hutchinson", "exact"),
        default="hutchinson",
        help="`--metric bpd`: the divergence by Hutchinson's estimator (one probe per image) or exactly (D passes).",
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-5, help="`--metric bpd`: RK45's rtol and atol (score_sde's 1e-5)."
    )
    parser.add_argument(
        "--num_samples",
        type=int,
        default=360,
        help="Images to draw from `--pipeline` (`--metric bpd`: held-out digits to score); 360 = held-out split size.",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="Images per pipeline call and per DINOv2 batch.")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Defaults to the pipeline's own.")
    parser.add_argument("--seed", type=int, default=0, help="Process `rank` samples with seed + rank.")
    parser.add_argument("--save_samples", help="Save the drawn images as a .npy file (N, H, W, C) to re-score later.")
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="Evaluate at this size; defaults to the images' (16 for --floor alone).",
    )
    parser.add_argument(
        "--cache_dir", default=None, help="Classifier cache; $NCSN_DIFFUSERS_CACHE or ~/.cache/ncsn_diffusers."
    )
    parser.add_argument("--classifier_seed", type=int, default=0)
    parser.add_argument("--memorisation_threshold", type=float, default=0.1)
    return parser.parse_args(argv)


def _check(args: argparse.Namespace) -> None:
    if args.samples is None and args.pipeline is None and not (args.floor and args.metric == "digits"):
        raise ValueError("Pass `--samples PATH` or `--pipeline DIR` (or `--floor` alone to score real digits only).")
    if args.metric == "bpd":
        if args.pipeline is None or args.samples is not None or args.floor:
            raise ValueError(
                "`--metric bpd` scores the held-out digits under a model: pass `--pipeline DIR` (and no `--samples` "
                "or `--floor`; its reference densities are always printed)."
            )
        if not args.rtol > 0:
            raise ValueError(f"`--rtol` must be positive (RK45's tolerance, 1e-5 by default), got {args.rtol}.")
        return
    if args.metric != "digits" and args.reference_dir is None:
        raise ValueError(f"`--metric {args.metric}` needs `--reference_dir` with the real images to compare against.")
    if args.metric != "digits" and args.floor:
        raise ValueError(
            f"`--floor` belongs to `--metric digits`; for `--metric {args.metric}`, score a held-out real folder as "
            "`--samples`."
        )


def run(args: argparse.Namespace, fid_feature_function: FeatureFunction | None = None) -> dict | None:
    """Samples (when `--pipeline`), scores on the main process, prints, writes json; other processes return None.

    Args:
        args (`argparse.Namespace`): from `parse_args`.
        fid_feature_function (`Callable`, *optional*): replaces torch-fidelity's Inception for `--metric fid`.
    """
    _check(args)
    if args.metric == "bpd":
        return _run_bits_per_dim(args)
    images = None
    if args.pipeline is not None:
        array = sample_pipeline(args.pipeline, args.num_samples, args.batch_size, args.num_inference_steps, args.seed)
        images = images_from_array(array)
    state = distributed_state()
    if not state.is_main_process:
        return None
    if args.pipeline is not None and args.save_samples:
        np.save(args.save_samples, array)
    if args.samples is not None:
        images = load_images(args.samples, mode="L" if args.metric == "digits" else "RGB")

    results = {"metric": args.metric}
    feature_options = {"nearest_k": args.nearest_k, "kid_subset_size": args.kid_subset_size}
    if args.metric == "fid":
        reference = load_images(args.reference_dir, mode="RGB")
        results["samples"] = compute_fid_metrics(
            images, reference, fid_feature_function, device=state.device, **feature_options
        )
    elif args.metric == "fd_dinov2":
        reference = load_images(args.reference_dir, mode="RGB")
        results["samples"] = compute_dinov2_metrics(
            images, reference, args.feature_model, state.device, args.batch_size, **feature_options
        )
    else:
        options = {
            "classifier_seed": args.classifier_seed,
            "cache_dir": args.cache_dir,
            "memorisation_threshold": args.memorisation_threshold,
            **feature_options,
        }
        if images is not None:
            images = rgb_to_luma(images) if images.shape[1] == 3 else images
            results["samples"] = evaluate_samples(images, args.resolution, **options)
        if args.floor:
            resolution = results["samples"]["resolution"] if images is not None else args.resolution or 16
            results["floor"] = reference_floor(resolution, **options)

    print(format_results(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _run_bits_per_dim(args: argparse.Namespace) -> dict | None:
    state = distributed_state()
    if not state.is_main_process:  # one process scores every image: the solves are not sharded
        return None
    pipeline = load_pipeline(args.pipeline).to(state.device)
    results = {"metric": "bpd"}
    results.update(
        digits_bits_per_dim(
            pipeline, args.num_samples, args.batch_size, args.trace, rtol=args.rtol, atol=args.rtol, seed=args.seed
        )
    )
    print(format_bits_per_dim(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def format_results(results: dict) -> str:
    """One row per metric, one column each for the samples and the floor."""
    columns = [c for c in ("samples", "floor") if c in results]
    keys = list(dict.fromkeys(k for c in columns for k in results[c]))

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if math.isfinite(value) else str(value)
        return str(value).replace(" ", "")

    rows = [["metric: " + results["metric"], *columns]]
    rows += [[key, *(cell(results[c].get(key, "")) for c in columns)] for key in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    finally:
        # A process that exits with its gloo group alive can abort in the group's threads ("terminate called without
        # an active exception"), so every rank waits for the scoring on rank 0 and then closes the group.
        state = distributed_state()
        state.wait_for_everyone()
        state.destroy_process_group()


if __name__ == "__main__":
    main()
