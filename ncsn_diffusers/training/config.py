"""`TrainingConfig`: every setting of a training run, and the one `resolve()` that applies the recipe and checks them."""

import dataclasses
from pathlib import Path

from ..recipes import OFFICIAL_CONFIGS, recipe_settings
from .checkpointing import ABANDONED_PREFIX
from .distillation_config import resolve_distillation
from .flag_ranges import check_flag_ranges
from .noise_classifier_args import apply_score_model, check_noise_classifier_args
from .objectives import DEFAULT_RUN_LADDER, VE_OBJECTIVES
from .run_dir import OWN_ENTRIES
from .streaming import default_num_workers


@dataclasses.dataclass
class TrainingConfig:
    """Every setting of a training run; each field is the `train_ncsn.py` flag of the same name (see its `--help`).

    `None` means "chosen by [`~TrainingConfig.resolve`] from the other settings" (the preset's learning rate, the
    objective's ladder and sampler, the recipe's values). Build one, then pass it to [`train`]:

    ```py
    >>> from ncsn_diffusers.training import TrainingConfig, train
    >>> train(TrainingConfig(model_preset="tiny", resolution=8, max_train_steps=10, output_dir="tiny-run"))
    ```
    """

    # Objective and model
    objective: str = "dsm"
    num_projections: int = 1
    model_preset: str = "digits"
    model_type: str = "unet"
    base_channels: int = 64
    ncsnv2_variant: str = "ncsnv2"
    recipe: str | None = None
    recipe_dataset: str | None = None
    # Data
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_data_dir: str | None = None
    cache_dir: str | None = None
    label_column: str = "label"
    resolution: int = 16
    channels: int | None = None
    center_crop: bool = False
    dataloader_num_workers: int | None = None
    num_threads: int | None = None
    random_flip: bool = False
    dequantize: bool = True
    # Noise ladder, sigma distribution and the saved sampler
    score_model: str | None = None
    noise_ladder: str | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None
    num_noise_levels: int | None = None
    sigma_sampling: str | None = None
    log_sigma_mean: float = -1.2
    log_sigma_std: float = 1.2
    sampler: str | None = None
    sampling_calls: int = 100
    corrector_steps: int = 1
    snr: float = 0.25  # r = 0.16 left one default-run sample in ten rougher than any digit (docs/sampling.md)
    sampling_sigma_max: float | None = None
    steps_per_level: int | None = None
    langevin_epsilon: float | None = None
    final_denoise: bool = True
    num_train_timesteps: int = 1000
    ddpm_beta_schedule: str = "linear"
    # Optimisation
    output_dir: str = "ncsn-digits"
    overwrite_output_dir: bool = False
    train_batch_size: int = 128
    num_epochs: int | None = None
    max_train_steps: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 50
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_ema: bool = True
    ema_inv_gamma: float = 1.0
    ema_power: float = 3 / 4
    ema_max_decay: float = 0.999
    ema_warmup: bool = True
    mixed_precision: str | None = None
    allow_tf32: bool = False
    seed: int = 0
    # Logging, sampling, checkpoints
    report_to: str = "tensorboard"
    logging_dir: str = "logs"
    logging_steps: int = 25
    save_images_steps: int = 0
    num_sample_images: int = 64
    sample_grid_steps: int | None = None
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    # Consistency distillation (--objective consistency_distillation; defaults: distillation_config.py)
    teacher_model: str | None = None
    num_scales: int = 18
    target_ema_rate: float = 0.95
    distance: str = "l2"
    sigma_data: float = 0.5
    student_init: str | None = None
    quality_samples: int = 500
    # Hub
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = dataclasses.field(default=None, repr=False)
    hub_private_repo: bool = False
    local_rank: int = -1

    def explicit_fields(self) -> set[str]:
        """The fields set away from their defaults: the ones a recipe must not replace."""
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}

    def resolve(self, explicit: set[str] | None = None) -> "TrainingConfig":
        """Applies `recipe` first, then fills every derived default and runs every check, in this one place.

        Args:
            explicit (`set[str]`, *optional*):
                The fields the user set (given on the command line); a recipe sets every other one. Defaults to the
                fields that differ from their defaults.

        Returns:
            `TrainingConfig`: a resolved copy; `self` is not changed.

        Raises:
            `ValueError`: naming the flag and the fix, for any value out of range or combination refused.
        """
        if getattr(self, "_resolved", False):
            return self
        config = dataclasses.replace(self)
        explicit = config.explicit_fields() if explicit is None else set(explicit)
        apply_score_model(config, explicit)
        fill_data_defaults(config)
        apply_recipe(config, explicit)
        resolve_distillation(config, explicit)
        check_flag_ranges(config)
        check_args(config)
        check_explicit_flags_are_used(config, explicit)
        check_noise_classifier_args(config, explicit)
        config._resolved = True
        return config


def check_explicit_flags_are_used(args: TrainingConfig, explicit: set[str]):
    """Refuses a flag given explicitly that the resolved run would ignore (issue 20, row 7)."""
    if args.noise_ladder == "ncsnv2" and args.objective in VE_OBJECTIVES and "langevin_epsilon" in explicit:
        raise ValueError(
            f"--langevin_epsilon {args.langevin_epsilon} would be ignored: --noise_ladder ncsnv2 (the default for "
            "--objective dsm, and --recipe ncsnv2's) computes the step size from the data (NCSNv2's Technique 4). "
            "Drop it, or pass --noise_ladder explicit with --sigma_max and --num_noise_levels."
        )


def fill_data_defaults(args: TrainingConfig):
    """The data source and its channels, which a recipe's Adam epsilon depends on (D = channels x resolution^2)."""
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("--dataset_name and --train_data_dir contradict each other; pass one (or neither: digits).")
    if args.channels is None:
        args.channels = 1 if args.dataset_name is None and args.train_data_dir is None else 3
    if args.dataloader_num_workers is None:
        args.dataloader_num_workers = default_num_workers()
    if args.num_threads is None and args.dataset_name is None and args.train_data_dir is None:
        args.num_threads = DIGITS_NUM_THREADS


# torch threads of a run on the embedded digits. The README's grid and a resume's bit-exactness hold at one thread
# only (float sums split over threads round differently), and at this size more threads are slower, much slower on a
# busy machine: 4.8 s a step at 1 thread against 38 s at 2 at load 13 (benchmarks/bench_threads.py). `accelerate
# launch` would give each CPU process all the cores.
DIGITS_NUM_THREADS = 1


# The small presets train fast at 2e-3; the 36M-parameter one collapses to a zero score there (DDPM used 2e-4).
DEFAULT_LEARNING_RATES = {"tiny": 2e-3, "digits": 2e-3, "cifar10": 2e-4}


# Optimizer steps when neither --max_train_steps nor --num_epochs is given (other presets: 100 epochs). The digits
# preset's 3,000 steps fit the default run in 15 minutes on 2 CPU cores (README, "Set up").
DEFAULT_TRAIN_STEPS = {"digits": 3000}


DEFAULT_NUM_EPOCHS = 100


# Never written anywhere: not to training_args.json, the trackers, the model card or the log.
SECRET_ARGS = ("hub_token",)


def check_args(args: TrainingConfig):
    """Fills the defaults that depend on other flags and rejects contradictions with a message naming the flags."""
    for name in (
        "train_batch_size",
        "gradient_accumulation_steps",
        "logging_steps",
        "checkpointing_steps",
        "num_sample_images",
        "num_train_timesteps",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    for name in ("num_epochs", "max_train_steps", "checkpoints_total_limit", "num_noise_levels", "steps_per_level"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {args.resolution}.")
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATES[args.model_preset]
    if args.max_train_steps is None and args.num_epochs is None:
        args.max_train_steps = DEFAULT_TRAIN_STEPS.get(args.model_preset)
        args.num_epochs = None if args.max_train_steps else DEFAULT_NUM_EPOCHS
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}.")
    ve_flags = [f"--{n}" for n in ("sigma_max", "sigma_min") if getattr(args, n) is not None]
    if args.objective == "epsilon" and (ve_flags or args.noise_ladder == "ncsnv2"):
        raise ValueError(
            f"{' and '.join(ve_flags) or '--noise_ladder ncsnv2'} set(s) the VE ladder of --objective dsm; "
            "--objective epsilon uses the DDPM schedule (--num_train_timesteps, --ddpm_beta_schedule)."
        )
    # The defaults chosen from the sampler comparison (README) are those of dsm; ssm and epsilon keep the paper's.
    explicit = args.sigma_max is not None or args.num_noise_levels is not None
    explicit = explicit or args.objective not in DEFAULT_RUN_LADDER
    args.noise_ladder = args.noise_ladder or ("explicit" if explicit else "ncsnv2")
    # NCSN v1's network has one embedding row per trained level: it is trained and sampled on its ladder only.
    continuous = args.objective in DEFAULT_RUN_LADDER and args.model_type != "ncsn_v1"
    if args.sigma_sampling is None:
        args.sigma_sampling = "log_uniform" if continuous else "discrete"
    if args.sampler is None:
        args.sampler = "predictor_corrector" if continuous else "annealed_langevin"
    if args.model_type == "ncsn_v1" and (args.sigma_sampling, args.sampler) != ("discrete", "annealed_langevin"):
        raise ValueError(
            "--model_type ncsn_v1 conditions on the index of a trained noise level, so it needs --sigma_sampling "
            "discrete and --sampler annealed_langevin (sigmas between its levels have no embedding)."
        )
    if args.objective == "epsilon" and args.sampler != "annealed_langevin":
        raise ValueError(f"--sampler {args.sampler} samples score models (dsm, ssm); drop it for epsilon.")
    if args.sampling_calls < 1 or args.corrector_steps < 0 or not args.snr > 0:
        raise ValueError("Need --sampling_calls >= 1, --corrector_steps >= 0 and --snr > 0.")
    if args.objective == "epsilon" and args.sigma_sampling != "discrete":
        raise ValueError(
            f"--sigma_sampling {args.sigma_sampling} draws VE sigmas (--objective dsm or ssm); epsilon draws DDPM "
            "timesteps."
        )
    if not args.log_sigma_std > 0:
        raise ValueError(f"--log_sigma_std (P_std) must be positive, got {args.log_sigma_std}.")
    computed = [f"--{n}" for n in ("sigma_max", "num_noise_levels") if getattr(args, n) is not None]
    if args.noise_ladder == "ncsnv2" and computed:
        raise ValueError(
            f"{' and '.join(computed)} contradict(s) --noise_ladder ncsnv2, which computes sigma_1 and L from the "
            "data; drop them or use --noise_ladder explicit (--sigma_min is allowed: it is sigma_L)."
        )
    args.sigma_max = 1.0 if args.sigma_max is None else args.sigma_max
    args.sigma_min = 0.02 if args.sigma_min is None else args.sigma_min
    args.num_noise_levels = 10 if args.num_noise_levels is None else args.num_noise_levels
    args.steps_per_level = 20 if args.steps_per_level is None else args.steps_per_level
    if args.objective in VE_OBJECTIVES and not 0 < args.sigma_min < args.sigma_max:
        raise ValueError(f"Need 0 < --sigma_min ({args.sigma_min}) < --sigma_max ({args.sigma_max}).")
    if args.langevin_epsilon is None:
        args.langevin_epsilon = 8e-5 if args.objective in VE_OBJECTIVES else 2e-5
    if args.num_projections < 1:
        raise ValueError(f"--num_projections must be >= 1, got {args.num_projections}.")
    if args.hub_model_id is not None and not args.push_to_hub:
        raise ValueError("--hub_model_id is only used with --push_to_hub; add --push_to_hub or drop it.")
    top = Path(args.logging_dir).parts[0] if Path(args.logging_dir).parts else "."
    if top in (OWN_ENTRIES - {"logs"}) | {"."} or top.startswith(("checkpoint-", ABANDONED_PREFIX)):
        raise ValueError(
            f"--logging_dir {args.logging_dir} lies in {top}, which the run writes itself; pass another folder "
            "(default: logs)."
        )
    if args.hub_token is not None and args.report_to in ("wandb", "all"):
        raise ValueError(
            f"--hub_token with --report_to {args.report_to}: Weights & Biases records the command line (sys.argv) "
            "and uploads it, token included. Drop --hub_token and set HF_TOKEN or log in once with `hf auth login`."
        )
    if args.resume_from_checkpoint is not None and args.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint and --overwrite_output_dir contradict each other; pass one.")
    if args.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            args.report_to = "none"


def apply_recipe(args: TrainingConfig, explicit: set[str]):
    """Sets the values of `--recipe` on every flag not given on the command line."""
    if args.model_type != "unet" and args.objective == "epsilon":
        raise ValueError(f"--model_type {args.model_type} is a score network; train it with --objective dsm or ssm.")
    if args.recipe is None:
        return
    if args.recipe_dataset is not None:
        config = OFFICIAL_CONFIGS[args.recipe].get(args.recipe_dataset)
        if config is None:
            raise ValueError(
                f"--recipe {args.recipe} has no official config for --recipe_dataset {args.recipe_dataset}; "
                f"choose one of {sorted(OFFICIAL_CONFIGS[args.recipe])}."
            )
        resolution = args.resolution if "resolution" in explicit else config.resolution
        channels = args.channels if "channels" in explicit else config.channels
    else:
        resolution, channels = args.resolution, args.channels
    settings = recipe_settings(args.recipe, args.recipe_dataset, data_dim=channels * resolution**2)
    for name, value in settings.items():
        if name not in explicit:
            setattr(args, name, value)
    if args.objective != "dsm":
        raise ValueError(f"--recipe {args.recipe} trains a score network with --objective dsm.")


def public_args(args: TrainingConfig) -> dict:
    """The settings as written to training_args.json and the trackers: every one but the secrets."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in SECRET_ARGS}
