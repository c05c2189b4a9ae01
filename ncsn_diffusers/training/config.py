"""`TrainingConfig`: every setting of a training run, and the one `resolve()` that applies the recipe and checks them."""

import dataclasses

from ..models.unet_ncsn import PRESETS
from .derived_settings import apply_recipe, check_args, check_explicit_flags_are_used, fill_data_defaults
from .flag_ranges import check_flag_ranges
from .objectives import OBJECTIVES, objective_class
from .recipes import MODEL_TYPES, OFFICIAL_CONFIGS, RECIPES


def flag(
    default, help: str | None = None, choices=None, aliases: tuple[str, ...] = (), hidden: bool = False, **kwargs
):
    """A `TrainingConfig` field and its command-line flag: the `--help` text, the allowed values (`choices`), other
    spellings of the flag (`aliases`), and `hidden` for a flag left out of `--help`."""
    metadata = {"help": help, "choices": choices, "aliases": aliases, "hidden": hidden}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@dataclasses.dataclass
class TrainingConfig:
    """Every setting of a training run; each field is the `train_ncsn.py` flag of the same name, and carries that
    flag's help and choices (`flag`), from which `command_line.add_config_flags` makes the parser.

    `None` means "chosen by [`~TrainingConfig.resolve`] from the other settings" (the preset's learning rate, the
    objective's ladder and sampler, the recipe's values). Build one, then pass it to [`train`]:

    ```py
    >>> from ncsn_diffusers.training import TrainingConfig, train
    >>> train(TrainingConfig(model_preset="tiny", resolution=8, max_train_steps=10, output_dir="tiny-run"))
    ```
    """

    # Objective and model
    objective: str = flag(
        "dsm",
        help=(
            "dsm: NCSN denoising score matching (VE ladder); ssm: sliced score matching on the same ladder; epsilon: "
            "DDPM's loss (VP forward process); consistency_distillation: distil --teacher_model into diffusers' "
            "ConsistencyModelPipeline (1-2 calls; docs/distillation.md); noise_classifier: a "
            "NoiseConditionalClassifier p(y | x, sigma) for classifier guidance, cross-entropy on labelled data "
            "perturbed as dsm perturbs it."
        ),
        choices=tuple(OBJECTIVES),
    )
    num_projections: int = flag(1, help="Projections v per sample of --objective ssm (M).")
    model_preset: str = flag("digits", help="Size preset of the U-Net.", choices=sorted(PRESETS))
    model_type: str = flag(
        "unet",
        help=(
            "unet: NCSNUNet2DModel (--model_preset); ncsn_v1: NCSN's RefineNet (NCSNRefineNet); ncsnv2: NCSNv2Model; "
            "ncsnpp: diffusers' NCSN++ UNet2DModel as the Hub's google/ncsnpp folders (Fourier embedding of sigma, "
            "Skip blocks, FIR; --model_preset's widths), data in [0, 1], 3 channels, saved as a ScoreSdeVePipeline "
            "folder that diffusers' own pipeline and this package's load (docs/pretrained.md)."
        ),
        choices=MODEL_TYPES,
    )
    base_channels: int = flag(64, help="ngf of --model_type ncsn_v1/ncsnv2 (the papers: 128).")
    ncsnv2_variant: str = flag(
        "ncsnv2",
        help="Depth of --model_type ncsnv2 (the authors': ncsnv2 to 64 px, deeper for 64-128 px, deepest for 256 px).",
        choices=("ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"),
    )
    recipe: str | None = flag(
        None,
        help=(
            "The authors' training recipe (optimiser, EMA, data, ladder, network; see "
            "ncsn_diffusers/training/recipes.py); data in [0, 1] as in their code. Explicit flags still override."
        ),
        choices=RECIPES,
    )
    recipe_dataset: str | None = flag(
        None,
        help=(
            "Take --recipe's settings of the authors' config for this data set (ladder, T, epsilon, resolution, "
            "network width, steps); without it, v1's ladder or NCSNv2's ladder computed from the data."
        ),
        choices=sorted({name for tables in OFFICIAL_CONFIGS.values() for name in tables}),
    )
    # Data
    dataset_name: str | None = flag(None, help="A `datasets` dataset (Hub id or local path) with an image column.")
    dataset_config_name: str | None = flag(None, help="The config of --dataset_name.")
    train_data_dir: str | None = flag(
        None,
        help=(
            "A folder of images (every image file under it, recursively, symbolic links to folders followed, no "
            "split rules), streamed: decoded per batch, never all in memory; any mode and size is converted, and a file "
            "that cannot be decoded is skipped at start-up with a warning naming it."
        ),
    )
    cache_dir: str | None = flag(None, help="Where `datasets` caches downloads.")
    label_column: str = flag(
        "label",
        help=(
            "--objective noise_classifier: the ClassLabel or integer column of --dataset_name holding the classes "
            '(default "label"): its names, or integers exactly 0..K-1. The digits have their digits, a --train_data_dir '
            "the names of its first-level folders (DIR/<class>/.../<image>, datasets' imagefolder convention)."
        ),
    )
    resolution: int = flag(16, help="Side of the square training images.")
    channels: int | None = flag(
        None,
        help=(
            "1 (grayscale) or 3 (RGB); images are converted. Defaults to 1 for the digits (3 with --model_type "
            "ncsnpp, which takes RGB only), 3 otherwise."
        ),
        choices=(1, 3),
    )
    center_crop: bool = flag(False, help="Crop the centre square (default: a random square per image).")
    dataloader_num_workers: int | None = flag(
        None,
        help=(
            "Worker processes decoding --train_data_dir / --dataset_name images per training process (default: "
            "min(4, CPUs / processes on this machine); 0 decodes in the training process). The batches do not depend "
            "on it."
        ),
    )
    num_threads: int | None = flag(
        None,
        help=(
            "torch threads of each process (torch.set_num_threads). Default: 1 for the embedded digits (the "
            "README's grid is bit-identical at 1 thread only, and more are slower at that size), else torch's choice "
            "(accelerate launch sets OMP_NUM_THREADS to the cores per process)."
        ),
    )
    random_flip: bool = flag(False, help="Flip images horizontally at random (not for digits!).")
    dequantize: bool = flag(True, help="Uniform dequantisation x = (255 x + u) / 256, u ~ U(0, 1), as in the paper.")
    # Noise ladder, sigma distribution and the saved sampler
    score_model: str | None = flag(
        None,
        help=(
            "--objective noise_classifier: a train_ncsn.py --output_dir whose ladder, sigma distribution and data "
            "(its training_args.json) the classifier is trained with, unless given here."
        ),
    )
    noise_ladder: str | None = flag(
        None,
        help=(
            "explicit: --sigma_max/--sigma_min/--num_noise_levels; ncsnv2: sigma_1 and L from the data (Song & Ermon "
            "2020). Default: ncsnv2 for --objective dsm unless --sigma_max or --num_noise_levels is given."
        ),
        choices=("explicit", "ncsnv2"),
    )
    sigma_max: float | None = flag(None, help="sigma_1 (default 1.0; explicit ladder, data in [-1, 1]).")
    sigma_min: float | None = flag(None, help="sigma_L (default 0.02 = the paper's 0.01 for [-1, 1] data).")
    num_noise_levels: int | None = flag(None, help="L (default 10; with ncsnv2 it is computed).")
    sigma_sampling: str | None = flag(
        None,
        help=(
            "Training sigmas: discrete, a level of the ladder (the paper); log_uniform (the default with --objective "
            "dsm), log sigma uniform in [log sigma_L, log sigma_1] (score SDE's VE training), so the network is "
            "trained between the levels too and any ladder, of any length, can sample it; log_normal, log sigma ~ "
            "N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1] (EDM, Karras et al. 2022)."
        ),
        choices=("discrete", "log_uniform", "log_normal"),
    )
    log_sigma_mean: float = flag(-1.2, help="P_mean of --sigma_sampling log_normal (EDM's -1.2).")
    log_sigma_std: float = flag(1.2, help="P_std of --sigma_sampling log_normal (EDM's 1.2).")
    preconditioning: str | None = flag(
        None,
        help=(
            "edm: EDM's preconditioning of the score U-Net (Karras et al. 2022): the network sees c_in x and predicts "
            "the denoiser D = c_skip x + c_out F, and DSM is weighted by EDM's lambda(sigma), (sigma^2 + "
            "sigma_data^2) / sigma_data^2 on NCSN's sigma^2, so F's input and target have unit variance at every "
            "sigma. The saved model still returns the score. --objective dsm, --model_type unet."
        ),
        choices=("edm",),
    )
    sampler: str | None = flag(
        None,
        help=(
            "The sampler saved with a score model: predictor_corrector (the default; Song et al. 2021, reverse "
            "diffusion + --corrector_steps Langevin steps per level, --sampling_calls U-Net calls from sigma_1 to "
            "sigma_L), stochastic_heun (EDM's Algorithm 2, EDM's VE churn, --sampling_calls calls, one fewer if "
            "even) or annealed_langevin (Algorithm 1 on the training ladder, L x T calls). --objective epsilon saves "
            "diffusers' DPMSolverMultistepScheduler (DPM-Solver++) at 20 calls on its DDPM schedule (the best "
            "measured, docs/sampling.md)."
        ),
        choices=("predictor_corrector", "stochastic_heun", "annealed_langevin"),
    )
    sampling_calls: int = flag(100, help="U-Net calls of the saved predictor_corrector or stochastic_heun sampler.")
    corrector_steps: int = flag(1, help="k, Langevin corrector steps per level (0: ancestral).")
    # r = 0.16 left one default-run sample in ten rougher than any digit (docs/sampling.md)
    snr: float = flag(0.25, help="r, the corrector's signal-to-noise ratio (predictor_corrector).")
    sampling_sigma_max: float | None = flag(
        None,
        help=(
            "The sigma predictor_corrector or stochastic_heun starts from (default: sigma_1 / 2 with --noise_ladder "
            "ncsnv2, whose sigma_1 is the largest pairwise distance of the data; sigma_1 otherwise). At most sigma_1."
        ),
    )
    steps_per_level: int | None = flag(None, help="T, Langevin steps per level when sampling (default 20).")
    langevin_epsilon: float | None = flag(
        None,
        help="Step size epsilon of annealed Langevin dynamics (default 4 * 2e-5 = the paper's, rescaled to [-1, 1]).",
    )
    final_denoise: bool = flag(True, help="End sampling with the Tweedie denoising step x + sigma_L^2 s (NCSNv2).")
    num_train_timesteps: int = flag(1000, help="DDPM timesteps (--objective epsilon).")
    ddpm_beta_schedule: str = flag("linear", help="DDPM beta schedule (--objective epsilon).")
    # Optimisation
    output_dir: str = flag("ncsn-digits", help="Where the pipeline, checkpoints, samples and logs go.")
    overwrite_output_dir: bool = flag(
        False,
        help=(
            "Start afresh even if --output_dir holds checkpoints or a saved pipeline (both are replaced). Deletes "
            "only the files an earlier run wrote (docs/security.md, Ownership); never another tool's checkpoint-*."
        ),
    )
    train_batch_size: int = flag(128, help="Batch size per process.")
    num_epochs: int | None = flag(
        None,
        help="Epochs, unless --max_train_steps is given (default: 3,000 steps for the digits preset, else 100 epochs).",
    )
    max_train_steps: int | None = flag(None, help="Optimizer steps; overrides --num_epochs.")
    gradient_accumulation_steps: int = flag(1)
    learning_rate: float | None = flag(
        None, help="Peak learning rate (default by --model_preset: 2e-3 for tiny and digits, 2e-4 for cifar10)."
    )
    lr_scheduler: str = flag(
        "cosine",
        help='One of "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup".',
    )
    lr_warmup_steps: int = flag(50)
    adam_beta1: float = flag(0.9)
    adam_beta2: float = flag(0.999)
    adam_weight_decay: float = flag(0.0)
    adam_epsilon: float = flag(1e-8)
    max_grad_norm: float = flag(1.0, help="Gradient clipping (0 disables).")
    use_ema: bool = flag(True, help="Keep an EMA of the weights; it is what gets sampled and saved.")
    ema_inv_gamma: float = flag(1.0)
    ema_power: float = flag(3 / 4)
    ema_max_decay: float = flag(0.999)
    ema_warmup: bool = flag(
        True, help="Ramp the EMA decay up to --ema_max_decay; --no-ema_warmup keeps it constant from the first step."
    )
    mixed_precision: str | None = flag(
        None, help="Defaults to accelerate's config (`accelerate config`).", choices=("no", "fp16", "bf16")
    )
    allow_tf32: bool = flag(
        False,
        help="Lets Ampere and newer GPUs run fp32 matmuls in TF32: faster, with a 10-bit mantissa in the products.",
    )
    seed: int = flag(0)
    # Logging, sampling, checkpoints
    report_to: str = flag(
        "tensorboard",
        help='Tracker of accelerate ("tensorboard", "wandb", "all", "none"); a JSON-lines log is always written.',
        aliases=("--logger",),
    )
    logging_dir: str = flag(
        "logs",
        help=(
            "Relative to --output_dir. A folder outside it (absolute, ../) may be shared: each run logs to its own "
            "subfolder there, named after --output_dir."
        ),
    )
    logging_steps: int = flag(25, help="Log (and check the loss is finite) every N steps.")
    save_images_steps: int = flag(0, help="Sample a grid every N steps (0: only at the end).")
    num_sample_images: int = flag(64, help="Images in each sample grid.")
    sample_grid_steps: int | None = flag(
        None,
        help=(
            "U-Net calls of the chain that draws the sample grids (default: the saved sampler's own, e.g. L x T = "
            "1000 with --recipe ncsn_v1); the saved pipeline keeps its sampler."
        ),
    )
    checkpointing_steps: int = flag(500)
    checkpoints_total_limit: int | None = flag(None, help="Keep at most this many checkpoints.")
    resume_from_checkpoint: str | None = flag(
        None,
        help=(
            '"latest" or a checkpoint-<step> folder (a bare name is looked up in --output_dir). Checkpoints past the '
            "resumed one are moved aside to abandoned-checkpoint-<step>-<time>."
        ),
    )
    # Consistency distillation (--objective consistency_distillation; defaults: distillation_config.py)
    teacher_model: str | None = flag(None, help="The saved NCSN score pipeline (folder or Hub id) to distil.")
    num_scales: int = flag(18, help="N, levels of the Karras grid from the teacher's sigma_max to sigma_min (18).")
    target_ema_rate: float = flag(0.95, help="mu of the target network theta^- (0.95); not --ema_max_decay.")
    distance: str = flag("l2", help="d of the consistency loss (default l2).", choices=("l2", "pseudo_huber"))
    sigma_data: float = flag(
        0.5, help="sigma_data of c_skip / c_out / c_in (0.5): the student's, or --preconditioning edm's."
    )
    student_init: str | None = flag(
        None,
        help="The student's weights: the teacher's where the architectures allow (the default), or fresh.",
        choices=("teacher", "random"),
    )
    quality_samples: int = flag(
        500,
        help="Samples scored at 1 and 2 calls by the digits evaluator at the end, for the model card (500; 0 skips).",
    )
    # Hub
    push_to_hub: bool = flag(False)
    hub_model_id: str | None = flag(None, help="Repository id (defaults to the name of --output_dir).")
    hub_token: str | None = flag(
        None,
        help=(
            "Hub token; better leave it out and set HF_TOKEN or log in once with `hf auth login`: a flag is visible "
            "to every user of the machine (`ps`). Used for the upload only, never written to a file or the log; "
            "refused with --report_to wandb or all (W&B records the command line)."
        ),
        repr=False,
    )
    hub_private_repo: bool = flag(False)
    local_rank: int = flag(-1, hidden=True)

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
        if config.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {config.objective!r}.")
        objective = objective_class(config.objective)
        for other in OBJECTIVES.values():
            if other is not objective:
                other.refuse_settings(config, explicit)
        objective.adopt_settings(config, explicit)
        fill_data_defaults(config)
        apply_recipe(config, explicit)
        objective.resolve_settings(config, explicit)
        check_flag_ranges(config)
        check_args(config)
        check_explicit_flags_are_used(config, explicit)
        objective.check_settings(config, explicit)
        config._resolved = True
        return config


# Never written anywhere: not to training_args.json, the trackers, the model card or the log.
SECRET_ARGS = ("hub_token",)


def public_args(args: TrainingConfig) -> dict:
    """The settings as written to training_args.json and the trackers: every one but the secrets."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in SECRET_ARGS}
