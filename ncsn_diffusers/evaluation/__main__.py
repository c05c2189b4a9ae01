"""`python -m ncsn_diffusers.evaluation`: score samples, or a saved pipeline, against the held-out digits.

python -m ncsn_diffusers.evaluation --floor --resolution 16            # what real held-out digits score
python -m ncsn_diffusers.evaluation --samples samples.npy --floor --json scores.json
accelerate launch -m ncsn_diffusers.evaluation --pipeline ./ncsn-digits --num_samples 360 --floor
python -m ncsn_diffusers.evaluation --metric fid --samples ./generated --reference_dir ./real  # torch-fidelity
"""

import argparse
import json
import math

import numpy as np

from .digits_metrics import evaluate_samples, reference_floor
from .fid import FeatureFunction, compute_fid_metrics
from .image_io import images_from_array, load_images, rgb_to_luma
from .sampling import distributed_state, sample_pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ncsn_diffusers.evaluation", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--samples", help="A folder of images, or a .npy array (N, H, W[, C]) in [0, 1].")
    source.add_argument("--pipeline", help="A folder saved by NCSNPipeline / DDPMPipeline `save_pretrained`.")
    parser.add_argument("--metric", choices=("digits", "fid"), default="digits")
    parser.add_argument("--reference_dir", help="`--metric fid`: the real images (folder or .npy) to compare with.")
    parser.add_argument(
        "--floor", action="store_true", help="Also score the real held-out digits (`--metric digits`)."
    )
    parser.add_argument("--json", help="Write the results to this json file.")
    parser.add_argument(
        "--num_samples", type=int, default=360, help="Images to draw from `--pipeline`; 360 = held-out split size."
    )
    parser.add_argument("--batch_size", type=int, default=64)
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
    if args.metric == "fid" and args.reference_dir is None:
        raise ValueError("`--metric fid` needs `--reference_dir` with the real images to compare against.")
    if args.metric == "fid" and args.floor:
        raise ValueError(
            "`--floor` belongs to `--metric digits`; for FID, score a held-out real folder as `--samples`."
        )


def run(args: argparse.Namespace, fid_feature_function: FeatureFunction | None = None) -> dict | None:
    """Samples (when `--pipeline`), scores on the main process, prints, writes json; other processes return None.

    Args:
        args (`argparse.Namespace`): from `parse_args`.
        fid_feature_function (`Callable`, *optional*): replaces torch-fidelity's Inception for `--metric fid`.
    """
    _check(args)
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
    if args.metric == "fid":
        reference = load_images(args.reference_dir, mode="RGB")
        results["samples"] = compute_fid_metrics(images, reference, fid_feature_function, device=state.device)
    else:
        options = {
            "classifier_seed": args.classifier_seed,
            "cache_dir": args.cache_dir,
            "memorisation_threshold": args.memorisation_threshold,
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
