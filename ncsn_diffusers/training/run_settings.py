"""What a checkpoint records of its run, and how a resumed run is compared with it."""

import hashlib
import os

import torch

# Settings recorded in each checkpoint. A resumed run must match the first group: the saved state would not fit, or
# would silently keep the checkpoint's values (the optimiser's betas, epsilon and learning rate live in its state);
# any other difference is warned about.
RESUME_MUST_MATCH = ("objective", "model_preset", "model_type", "use_ema", "resolution", "channels")
RESUME_MUST_MATCH += ("learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon", "adam_weight_decay")
# The paper networks' shape: their width and depth, and NCSN v1's one embedding row per level of its ladder.
PAPER_NETWORK_MUST_MATCH = ("base_channels", "ncsnv2_variant")
NCSN_V1_MUST_MATCH = ("sigma_max", "sigma_min", "num_noise_levels")
RESUME_SHOULD_MATCH = ("seed", "train_batch_size", "num_processes", "gradient_accumulation_steps", "max_train_steps")
RESUME_SHOULD_MATCH += ("dataset_name", "train_data_dir", "noise_ladder", "sigma_max", "sigma_min", "num_noise_levels")
RESUME_SHOULD_MATCH += ("sigma_sampling",)


def must_match(args, objective_settings: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The settings a resumed run of `args` must share with its checkpoint; `objective_settings` are the run's
    objective's own (`Objective.resume_must_match`)."""
    names = RESUME_MUST_MATCH + objective_settings
    if args.model_type == "unet":
        return names
    return names + PAPER_NETWORK_MUST_MATCH + (NCSN_V1_MUST_MATCH if args.model_type == "ncsn_v1" else ())


def run_settings(
    args, num_processes: int, max_train_steps: int, objective_settings: tuple[str, ...] = (), images=None
) -> dict:
    """What a checkpoint records of its run, for [`compare_run_settings`] on resume; `objective_settings` are the run's
    objective's own (`Objective.resume_must_match`); with the training set `images`, its [`training_set_fingerprint`]
    too."""
    names = RESUME_MUST_MATCH + PAPER_NETWORK_MUST_MATCH + RESUME_SHOULD_MATCH + objective_settings
    settings = {k: getattr(args, k) for k in names if hasattr(args, k)}
    settings.update(num_processes=num_processes, max_train_steps=max_train_steps)
    return settings if images is None else {**settings, "training_set": training_set_fingerprint(images)}


def training_set_fingerprint(images) -> dict:
    """The number of training images and a SHA-256 of their list (files relative to --train_data_dir, or rows of
    --dataset_name, in index order; of the pixels for a set held in memory): the batch order indexes this list, so a
    resume on another list draws other batches."""
    if isinstance(images, torch.Tensor):
        digest = hashlib.sha256(images.cpu().contiguous().numpy().tobytes())
    else:
        digest = hashlib.sha256(b"\n".join(images.file_list()))
    return {"num_images": len(images), "sha256": digest.hexdigest()}


def compare_run_settings(checkpoint: str | os.PathLike, saved: dict, current: dict, must_match) -> list[str]:
    """Checks a resumed run's settings against those its checkpoint was trained with.

    Raises a `ValueError` naming the flag for a setting in `must_match` (the model or the objective would not fit
    the saved weights); returns a warning for every other differing setting (the run goes on, but it is no longer
    the continuation of the original one). Settings a checkpoint does not record are not compared.
    """
    for name in must_match:
        if name in saved and name in current and saved[name] != current[name]:
            raise ValueError(
                f"{checkpoint} was trained with {_flag(name, saved[name])}, this run has {_flag(name, current[name])}. "
                f"Pass {_flag(name, saved[name])} to resume it, or start a new run in another --output_dir."
            )
    warnings = [
        f"{checkpoint} was trained with {_flag(name, saved[name])}, this run has {_flag(name, current[name])}: the "
        "resumed run is not the continuation the original settings would give."
        for name in current
        if name not in must_match and name != "training_set" and name in saved and saved[name] != current[name]
    ]
    then, now = saved.get("training_set"), current.get("training_set")
    if then is not None and now is not None and then != now:
        warnings.append(
            f"The training set changed since {checkpoint}: {then['num_images']} images then, {now['num_images']} now "
            "(files added, removed, renamed or no longer decodable). The batch order indexes the set, so the batches "
            "from here are not those the uninterrupted run would have drawn."
        )
    return warnings


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"
