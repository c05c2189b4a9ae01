"""The settings `TrainingConfig.resolve` derives from the others, and the combinations it refuses: the data's
channels, the recipe's values, the preset's learning rate and length, the objective's ladder, sigma draws and saved
sampler, the Langevin chain's defaults, and where the run writes."""

from pathlib import Path

from .checkpointing import ABANDONED_PREFIX
from .objectives import objective_class
from .recipes import OFFICIAL_CONFIGS, recipe_settings
from .run_dir import OWN_ENTRIES
from .streaming import default_num_workers


def check_explicit_flags_are_used(args, explicit: set[str]):
    """Refuses a flag given explicitly that the resolved run would ignore (it was silently dropped)."""
    if args.noise_ladder == "ncsnv2" and objective_class(args.objective).ve_ladder and "langevin_epsilon" in explicit:
        raise ValueError(
            f"--langevin_epsilon {args.langevin_epsilon} would be ignored: --noise_ladder ncsnv2 (the default for "
            "--objective dsm, and --recipe ncsnv2's) computes the step size from the data (NCSNv2's Technique 4). "
            "Drop it, or pass --noise_ladder explicit with --sigma_max and --num_noise_levels."
        )


def fill_data_defaults(args):
    """The data source and its channels, which a recipe's Adam epsilon depends on (D = channels x resolution^2)."""
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("--dataset_name and --train_data_dir contradict each other; pass one (or neither: digits).")
    if args.channels is None:  # NCSN++'s Skip blocks take RGB only: the digits are repeated over 3 channels
        digits = args.dataset_name is None and args.train_data_dir is None
        args.channels = 1 if digits and args.model_type != "ncsnpp" else 3
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


def check_args(args):
    """Fills the defaults that depend on other flags and rejects contradictions with a message naming the flags."""
    fill_length_defaults(args)
    resolve_ladder_and_sampler(args)
    check_preconditioning(args)
    check_outputs(args)


def check_preconditioning(args):
    """--preconditioning edm reshapes the score U-Net and weights the DSM loss: other networks and objectives would
    ignore it."""
    if args.preconditioning is None:
        return
    if not objective_class(args.objective).takes_preconditioning or args.model_type != "unet":
        raise ValueError(
            f"--preconditioning {args.preconditioning} trains the score U-Net with DSM (--objective dsm, "
            f"--model_type unet); this run has --objective {args.objective} and --model_type {args.model_type}."
        )


def fill_length_defaults(args):
    """The preset's learning rate and training length, unless given."""
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATES[args.model_preset]
    if args.max_train_steps is None and args.num_epochs is None:
        args.max_train_steps = DEFAULT_TRAIN_STEPS.get(args.model_preset)
        args.num_epochs = None if args.max_train_steps else DEFAULT_NUM_EPOCHS
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}.")


def resolve_ladder_and_sampler(args):
    """The noise ladder, the sigma draws and the saved sampler the objective defaults to, and their checks."""
    objective = objective_class(args.objective)
    vp = objective.noise_space == "vp"
    ve_flags = [f"--{n}" for n in ("sigma_max", "sigma_min") if getattr(args, n) is not None]
    if vp and (ve_flags or args.noise_ladder == "ncsnv2"):
        raise ValueError(
            f"{' and '.join(ve_flags) or '--noise_ladder ncsnv2'} set(s) the VE ladder of --objective dsm; "
            "--objective epsilon uses the DDPM schedule (--num_train_timesteps, --ddpm_beta_schedule)."
        )
    # The defaults chosen from the sampler comparison (README) are those of dsm; ssm and epsilon keep the paper's.
    explicit = args.sigma_max is not None or args.num_noise_levels is not None
    explicit = explicit or not objective.default_run_ladder
    args.noise_ladder = args.noise_ladder or ("explicit" if explicit else "ncsnv2")
    # NCSN v1's network has one embedding row per trained level: it is trained and sampled on its ladder only.
    # NCSN++ is sampled on score SDE's continuous range (its ScoreSdeVe folder: 2,000 levels in diffusers' pipeline).
    continuous = (objective.default_run_ladder or args.model_type == "ncsnpp") and args.model_type != "ncsn_v1"
    if args.sigma_sampling is None:
        args.sigma_sampling = "log_uniform" if continuous else "discrete"
    if args.sampler is None:
        args.sampler = "predictor_corrector" if continuous else "annealed_langevin"
    if args.model_type == "ncsn_v1" and (args.sigma_sampling, args.sampler) != ("discrete", "annealed_langevin"):
        raise ValueError(
            "--model_type ncsn_v1 conditions on the index of a trained noise level, so it needs --sigma_sampling "
            "discrete and --sampler annealed_langevin (sigmas between its levels have no embedding)."
        )
    check_score_sde_ve_folder_settings(args)
    if vp and args.sampler != "annealed_langevin":
        raise ValueError(f"--sampler {args.sampler} samples score models (dsm, ssm); drop it for epsilon.")
    if args.sampling_calls < 1 or args.corrector_steps < 0 or not args.snr > 0:
        raise ValueError("Need --sampling_calls >= 1, --corrector_steps >= 0 and --snr > 0.")
    if vp and args.sigma_sampling != "discrete":
        raise ValueError(
            f"--sigma_sampling {args.sigma_sampling} draws VE sigmas (--objective dsm or ssm); epsilon draws DDPM "
            "timesteps."
        )
    fill_ladder_defaults(args, objective.ve_ladder)


def check_score_sde_ve_folder_settings(args):
    """`--model_type ncsnpp` saves a ScoreSdeVePipeline folder: 3 channels, data in [0, 1], score SDE's
    predictor-corrector ending at the noise-free mean; refuses what that folder could not carry."""
    if args.model_type != "ncsnpp":
        return
    if args.channels != 3:
        raise ValueError(
            f"--model_type ncsnpp trains diffusers' NCSN++ UNet2DModel, whose Skip blocks (and ScoreSdeVePipeline) "
            f"take 3 channels, not --channels {args.channels}: pass --channels 3 (grayscale images are repeated over "
            "3 channels) or use --model_type unet for a 1-channel model."
        )
    if args.sampler != "predictor_corrector" or not args.final_denoise:
        setting = f"--sampler {args.sampler}" if args.sampler != "predictor_corrector" else "--no-final_denoise"
        raise ValueError(
            f"{setting} cannot be saved with --model_type ncsnpp: its ScoreSdeVePipeline folder holds score SDE's "
            "predictor-corrector, which ends at the noise-free mean. Drop it; any score sampler of the package can "
            "be swapped in after loading (docs/pretrained.md)."
        )


def fill_ladder_defaults(args, ve_ladder: bool):
    """The explicit ladder's and the Langevin chain's defaults, once the ladder is chosen."""
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
    if ve_ladder and not 0 < args.sigma_min < args.sigma_max:
        raise ValueError(f"Need 0 < --sigma_min ({args.sigma_min}) < --sigma_max ({args.sigma_max}).")
    if args.langevin_epsilon is None:
        args.langevin_epsilon = 8e-5 if ve_ladder else 2e-5


def check_outputs(args):
    """What the run writes and where: the Hub, the logging folder, the trackers, resuming."""
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


def apply_recipe(args, explicit: set[str]):
    """Sets the values of `--recipe` on every flag not given on the command line."""
    if args.model_type != "unet" and objective_class(args.objective).noise_space == "vp":
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
    if not objective_class(args.objective).takes_recipe:
        raise ValueError(f"--recipe {args.recipe} trains a score network with --objective dsm.")
    if args.model_type == "ncsnpp":
        raise ValueError(
            f"--recipe {args.recipe} is the recipe of the authors' {args.recipe} network, not of --model_type ncsnpp; "
            "drop one of them (NCSN++ trains on [0, 1] data without a recipe)."
        )
