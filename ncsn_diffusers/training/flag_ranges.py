"""The range of every numeric flag, in one table, checked by `TrainingConfig.resolve` before anything is built.

A value out of range would otherwise train to the end and save something useless: an EMA decay of 2 samples NaN, a
decay of 1 saves the random initialisation, a NaN `--max_grad_norm` turns every weight into NaN at the first step.
"""

import math

from diffusers.optimization import SchedulerType
from huggingface_hub.utils import HFValidationError, validate_repo_id

finite = math.isfinite
LR_SCHEDULERS = tuple(t.value for t in SchedulerType)
# Above this, sigma_1^2 / sigma_L^2 and sigma^2-weighted losses leave float32's range (published ladders stop at 348).
SIGMA_LIMIT = 1e6


def at_least(low):
    """`v >= low`, or `v is None` (a setting left to `resolve`)."""
    return lambda v: v is None or v >= low


# (flag, its symbol or None, the rule, what the message says a value must do)
FLAG_RANGES = [
    ("ema_max_decay", None, lambda v: 0 <= v < 1, "be in [0, 1) (1 would keep the random initialisation)"),
    ("ema_inv_gamma", None, lambda v: finite(v) and v > 0, "be a positive number"),
    ("ema_power", None, lambda v: finite(v) and v > 0, "be a positive number"),
    ("adam_beta1", None, lambda v: 0 <= v < 1, "be in [0, 1)"),
    ("adam_beta2", None, lambda v: 0 <= v < 1, "be in [0, 1)"),
    ("adam_epsilon", None, lambda v: finite(v) and v > 0, "be a positive number"),
    ("adam_weight_decay", None, lambda v: finite(v) and v >= 0, "be a number >= 0"),
    ("learning_rate", None, lambda v: v is None or (finite(v) and v > 0), "be a positive number"),
    ("lr_warmup_steps", None, lambda v: v >= 0, "be an integer >= 0"),
    ("max_grad_norm", None, lambda v: finite(v) and v >= 0, "be a number >= 0 (0 disables clipping)"),
    ("seed", None, lambda v: 0 <= v < 2**32, "be an integer in [0, 2^32) (numpy's seed range)"),
    ("snr", None, lambda v: finite(v) and v > 0, "be a positive number"),
    ("save_images_steps", None, lambda v: v >= 0, "be an integer >= 0 (0: a grid at the end only)"),
    ("sample_grid_steps", None, at_least(1), "be an integer >= 1 (U-Net calls of the final grid)"),
    ("langevin_epsilon", None, lambda v: v is None or (finite(v) and v > 0), "be a positive number"),
    ("sigma_max", None, lambda v: v is None or (finite(v) and v < SIGMA_LIMIT), "be a finite number below 1e6"),
    ("sigma_min", None, lambda v: v is None or finite(v), "be a finite number"),
    ("sampling_sigma_max", None, lambda v: v is None or (finite(v) and v > 0), "be a positive number"),
    ("log_sigma_mean", None, finite, "be a finite number"),
    ("num_threads", None, at_least(1), "be an integer >= 1"),
    ("dataloader_num_workers", None, at_least(0), "be an integer >= 0 (0: decode in the training process)"),
    # counts
    ("train_batch_size", None, at_least(1), "be >= 1"),
    ("gradient_accumulation_steps", None, at_least(1), "be >= 1"),
    ("logging_steps", None, at_least(1), "be >= 1"),
    ("checkpointing_steps", None, at_least(1), "be >= 1"),
    ("num_sample_images", None, at_least(1), "be >= 1"),
    ("num_train_timesteps", None, at_least(1), "be >= 1"),
    ("num_epochs", None, at_least(1), "be >= 1"),
    ("max_train_steps", None, at_least(1), "be >= 1"),
    ("checkpoints_total_limit", None, at_least(1), "be >= 1"),
    ("num_noise_levels", None, at_least(1), "be >= 1"),
    ("steps_per_level", None, at_least(1), "be >= 1"),
    ("resolution", None, at_least(1), "be a positive integer"),
    ("num_projections", None, at_least(1), "be >= 1"),
    ("log_sigma_std", "P_std", lambda v: finite(v) and v > 0, "be a positive number"),
    ("lr_scheduler", None, lambda v: v in LR_SCHEDULERS, f"be one of {', '.join(LR_SCHEDULERS)}"),
    # consistency distillation
    ("num_scales", "N", at_least(2), "be at least 2"),
    ("target_ema_rate", "mu", lambda v: 0.0 <= v < 1.0, "lie in [0, 1)"),
    ("sigma_data", None, lambda v: finite(v) and v > 0, "be a positive number"),
    ("quality_samples", None, at_least(0), "be >= 0 (0 skips the measurement)"),
]


def check_flag_ranges(config):
    """Raises a `ValueError` naming the first flag of `config` out of its range, and the range."""
    for name, symbol, ok, requirement in FLAG_RANGES:
        value = getattr(config, name)
        if not ok(value):
            flag = f"--{name}" + (f" ({symbol})" if symbol else "")
            raise ValueError(f"{flag} must {requirement}, got {value}.")
    if config.hub_model_id is not None:
        try:
            validate_repo_id(config.hub_model_id)
        except HFValidationError as err:
            raise ValueError(
                f"--hub_model_id {config.hub_model_id!r} is not a Hub repository id ('name' or 'owner/name'): {err}"
            ) from None
