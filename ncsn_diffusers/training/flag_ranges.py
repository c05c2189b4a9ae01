"""The range of every numeric flag, checked by `TrainingConfig.resolve` before anything is built (issue 20, row 8).

A value out of range would otherwise train to the end and save something useless: an EMA decay of 2 samples NaN, a
decay of 1 saves the random initialisation, a NaN `--max_grad_norm` turns every weight into NaN at the first step.
"""

import math


def check_flag_ranges(config):
    """Raises a `ValueError` naming the first flag of `config` out of its range, and the range."""
    finite = math.isfinite
    rules = [
        ("ema_max_decay", lambda v: 0 <= v < 1, "in [0, 1) (1 would keep the random initialisation)"),
        ("ema_inv_gamma", lambda v: finite(v) and v > 0, "a positive number"),
        ("ema_power", lambda v: finite(v) and v > 0, "a positive number"),
        ("adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("adam_epsilon", lambda v: finite(v) and v > 0, "a positive number"),
        ("adam_weight_decay", lambda v: finite(v) and v >= 0, "a number >= 0"),
        ("learning_rate", lambda v: v is None or (finite(v) and v > 0), "a positive number"),
        ("lr_warmup_steps", lambda v: v >= 0, "an integer >= 0"),
        ("max_grad_norm", lambda v: finite(v) and v >= 0, "a number >= 0 (0 disables clipping)"),
        ("seed", lambda v: 0 <= v < 2**63, "an integer in [0, 2^63)"),
        ("snr", lambda v: finite(v) and v > 0, "a positive number"),
        ("save_images_steps", lambda v: v >= 0, "an integer >= 0 (0: a grid at the end only)"),
        ("sample_grid_steps", lambda v: v is None or v >= 1, "an integer >= 1 (U-Net calls of the final grid)"),
        ("langevin_epsilon", lambda v: v is None or (finite(v) and v > 0), "a positive number"),
        ("sigma_max", lambda v: v is None or finite(v), "a finite number"),
        ("sigma_min", lambda v: v is None or finite(v), "a finite number"),
        ("sampling_sigma_max", lambda v: v is None or (finite(v) and v > 0), "a positive number"),
        ("log_sigma_mean", finite, "a finite number"),
        ("num_threads", lambda v: v is None or v >= 1, "an integer >= 1"),
        (
            "dataloader_num_workers",
            lambda v: v is None or v >= 0,
            "an integer >= 0 (0: decode in the training process)",
        ),
    ]
    for name, ok, expected in rules:
        value = getattr(config, name)
        if not ok(value):
            raise ValueError(f"--{name} must be {expected}, got {value}.")
    if config.hub_model_id is not None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(config.hub_model_id)
        except HFValidationError as err:
            raise ValueError(
                f"--hub_model_id {config.hub_model_id!r} is not a Hub repository id ('name' or 'owner/name'): {err}"
            ) from None
