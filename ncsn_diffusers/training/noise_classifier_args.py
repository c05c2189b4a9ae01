"""The settings of `--objective noise_classifier`: the score model whose noise it copies, and the flags it refuses."""

import json
from pathlib import Path

# Copied from --score_model's training_args.json unless given: its ladder, sigma draws and data.
SCORE_MODEL_SETTINGS = ("noise_ladder", "sigma_max", "sigma_min", "num_noise_levels", "sigma_sampling")
SCORE_MODEL_SETTINGS += ("log_sigma_mean", "log_sigma_std", "resolution", "channels", "dequantize", "center_crop")
SCORE_MODEL_DATA = ("dataset_name", "dataset_config_name", "train_data_dir")

# Flags of the score network and its saved sampler: a classifier run has neither, so they would be ignored.
IGNORED_FLAGS = ("model_preset", "model_type", "base_channels", "ncsnv2_variant", "num_projections", "recipe")
IGNORED_FLAGS += ("recipe_dataset", "sampler", "sampling_calls", "corrector_steps", "snr", "sampling_sigma_max")
IGNORED_FLAGS += ("steps_per_level", "langevin_epsilon", "final_denoise", "save_images_steps", "num_sample_images")
IGNORED_FLAGS += ("num_train_timesteps", "ddpm_beta_schedule")


def refuse_classifier_flags(args, explicit: set[str]):
    """Refuses the classifier's own flags on a run of another objective (they would be ignored)."""
    if args.score_model is not None:
        raise ValueError(f"--score_model is only used by --objective noise_classifier, not {args.objective}; drop it.")
    if "label_column" in explicit:
        raise ValueError(f"--label_column is only used by --objective noise_classifier, not {args.objective}.")


def apply_score_model(args, explicit: set[str]):
    """`--score_model DIR`: takes the noise ladder, sigma distribution and data of the train_ncsn.py run saved in
    DIR (its training_args.json) for every one of them not given, so the classifier sees the score model's noise."""
    if args.score_model is None:
        return
    record = Path(args.score_model) / "training_args.json"
    if not record.is_file():
        raise ValueError(
            f"--score_model {args.score_model} has no training_args.json: pass the --output_dir of a train_ncsn.py "
            "run, or drop --score_model and give its ladder (--noise_ladder, --sigma_max, --sigma_min, "
            "--sigma_sampling)."
        )
    saved = json.loads(record.read_text())
    if saved.get("objective") not in ("dsm", "ssm") or saved.get("recipe"):
        raise ValueError(
            f"--score_model {args.score_model} was trained with --objective {saved.get('objective')}"
            + (f" --recipe {saved['recipe']} (data in [0, 1])" if saved.get("recipe") else "")
            + ": classifier guidance needs a VE score model on [-1, 1] data (--objective dsm or ssm, no --recipe)."
        )
    names = SCORE_MODEL_SETTINGS + (SCORE_MODEL_DATA if not explicit & set(SCORE_MODEL_DATA) else ())
    if (
        saved.get("noise_ladder") == "ncsnv2"
    ):  # sigma_1 and L are computed from the data again; the record's are fillers
        names = tuple(name for name in names if name not in ("sigma_max", "num_noise_levels"))
    for name in names:
        if name not in explicit and name in saved:
            setattr(args, name, saved[name])


def check_noise_classifier_args(args, explicit: set[str]):
    """Refuses the flags a classifier run would ignore."""
    ignored = [f"--{name}" for name in IGNORED_FLAGS if name in explicit]
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)} would be ignored: --objective noise_classifier trains a NoiseConditionalClassifier "
            "(its default size) and saves no sampler or sample grid. Drop them."
        )
    if "label_column" in explicit and args.dataset_name is None:
        raise ValueError(
            "--label_column names a column of --dataset_name; the digits have their digits and a --train_data_dir "
            "its class folders as labels. Drop it, or pass --dataset_name."
        )
