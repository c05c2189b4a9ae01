#!/usr/bin/env python
"""Trains a score network (NCSN, Song & Ermon 2019) or a DDPM epsilon network and saves an `NCSNPipeline`.

    accelerate launch train_ncsn.py                      # 16x16 digits on a CPU, ~10 minutes, NCSN's objective
    accelerate launch train_ncsn.py --objective epsilon  # the same data, DDPM's objective, VP coordinates
    accelerate launch train_ncsn.py --train_data_dir DIR --resolution 32 --channels 3 --model_preset cifar10

`--objective dsm` trains `NCSNUNet2DModel` s_theta(x, sigma) by denoising score matching on the geometric ladder
sigma_1 > ... > sigma_L with lambda(sigma) = sigma^2: loss = mean ||sigma s_theta(x + sigma z, sigma) + z||^2, sigma a
level of the ladder (`--sigma_sampling discrete`), log-uniform in [sigma_L, sigma_1] (`log_uniform`) or log-normal
truncated to it (`log_normal`, EDM's training distribution).
`--objective ssm` trains the same network by sliced score matching on the same ladder (`ssm_loss`, `--num_projections`).
`--objective epsilon` trains diffusers' `UNet2DModel` eps_theta(x_t, t) with DDPM's loss mean ||eps_theta - z||^2 on
x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z. Both log the other form too: under eps = -sigma s (VE) and
score = -eps / sqrt(1 - abar_t) (VP) they are the same number. Losses are means over pixels (diffusers' convention);
the paper's 1/2 sum over the D pixels is D/2 times larger, a constant that Adam ignores, and keeping the mean for
both objectives makes `--max_grad_norm` mean the same thing for both.

The run is crash-safe: checkpoints are written under a temporary name and renamed when complete, every random draw
is a function of (seed, step), and `--resume_from_checkpoint latest` continues a killed run exactly. Checkpoints hold
safetensors and JSON only (nothing is unpickled on resume), --output_dir is locked for the run, and no token is ever
written (README: "Security and reliability").
"""

import argparse
import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
    dsm_loss,
    epsilon_from_score,
    epsilon_loss,
    load_digits_images,
    score_from_epsilon,
    ssm_loss,
)
from ncsn_diffusers.parameterization import append_dims
from ncsn_diffusers.recipes import (
    MODEL_TYPES,
    OFFICIAL_CONFIGS,
    OFFICIAL_DATA_RANGE,
    RECIPES,
    build_paper_network,
    explicit_flags,
    recipe_settings,
)
from ncsn_diffusers.training_utils import (
    ABANDONED_PREFIX,
    LOCK_FILE,
    LOG_FILE,
    LOG_FILES,
    SAMPLE_GRID,
    STATE_FILE,
    BatchOrder,
    OutputDirLock,
    abandon_later_checkpoints,
    check_logging_dir,
    claim_logging_dir,
    compare_run_settings,
    complete_checkpoints,
    decode_images,
    derived_seed,
    discard_checkpoint,
    end_distributed_run,
    foreign_checkpoints,
    hub_dataset_sources,
    image_folder_sources,
    latest_checkpoint,
    load_checkpoint,
    num_update_steps,
    read_training_state,
    remove_owned_files,
    remove_stale_temporaries,
    run_logging_dir,
    save_checkpoint,
)
from ncsn_diffusers.unet_ncsn import PRESETS

logger = get_logger(__name__, log_level="INFO")

DATA_RANGE = (-1.0, 1.0)
# The small presets train fast at 2e-3; the 36M-parameter one collapses to a zero score there (DDPM used 2e-4).
DEFAULT_LEARNING_RATES = {"tiny": 2e-3, "digits": 2e-3, "cifar10": 2e-4}
# Optimizer steps when neither --max_train_steps nor --num_epochs is given (other presets: 100 epochs). The digits
# preset's 3,000 steps fit the default run in 15 minutes on 2 CPU cores (README, "Set up").
DEFAULT_TRAIN_STEPS = {"digits": 3000}
DEFAULT_NUM_EPOCHS = 100
# Entries a previous run of this script may leave in --output_dir; anything else means the folder is someone else's.
OWN_ENTRIES = {"unet", "scheduler", "samples", "logs", "model_index.json", "README.md", "training_args.json"}
OWN_ENTRIES |= {".gitattributes", ".gitignore", ".git", ".cache", ".huggingface", LOCK_FILE}
# A saved pipeline: never replaced unless --overwrite_output_dir or the run resumes a checkpoint of this folder.
PIPELINE_ENTRIES = ("model_index.json", "unet", "scheduler", "README.md")
# Never written anywhere: not to training_args.json, the trackers, the model card or the log.
SECRET_ARGS = ("hub_token",)
# Settings recorded in each checkpoint. A resumed run must match the first group (the saved state would not fit);
# any other difference is warned about.
RESUME_MUST_MATCH = ("objective", "model_preset", "model_type", "use_ema", "resolution", "channels")
RESUME_SHOULD_MATCH = ("seed", "train_batch_size", "num_processes", "gradient_accumulation_steps", "max_train_steps")
# Streams of derived_seed(seed, stream, micro_step); stream 0 is the batch order (BatchOrder).
NOISE_STREAM = 1
PROJECTION_STREAM = 2  # the projections v of --objective ssm
# Objectives that train a score network s_theta(x, sigma) on the VE ladder.
VE_OBJECTIVES = ("dsm", "ssm")


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    # Objective and model
    add(
        "--objective",
        choices=("dsm", "ssm", "epsilon"),
        default="dsm",
        help="dsm: NCSN denoising score matching (VE ladder); ssm: sliced score matching on the same ladder; "
        "epsilon: DDPM's loss (VP forward process).",
    )
    add("--num_projections", type=int, default=1, help="Projections v per sample of --objective ssm (M).")
    add("--model_preset", choices=sorted(PRESETS), default="digits", help="Size preset of the U-Net.")
    add(
        "--model_type",
        choices=MODEL_TYPES,
        default="unet",
        help="unet: NCSNUNet2DModel (--model_preset); ncsn_v1: NCSN's RefineNet (NCSNRefineNet); ncsnv2: NCSNv2Model.",
    )
    add("--base_channels", type=int, default=64, help="ngf of --model_type ncsn_v1/ncsnv2 (the papers: 128).")
    add(
        "--ncsnv2_variant",
        choices=("ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"),
        default="ncsnv2",
        help="Depth of --model_type ncsnv2 (the authors': ncsnv2 to 64 px, deeper for 64-128 px, deepest for 256 px).",
    )
    add(
        "--recipe",
        choices=RECIPES,
        default=None,
        help="The authors' training recipe (optimiser, EMA, data, ladder, network; see ncsn_diffusers/recipes.py); "
        "data in [0, 1] as in their code. Explicit flags still override.",
    )
    add(
        "--recipe_dataset",
        choices=sorted({name for tables in OFFICIAL_CONFIGS.values() for name in tables}),
        default=None,
        help="Take --recipe's settings of the authors' config for this data set (ladder, T, epsilon, resolution, "
        "network width, steps); without it, v1's ladder or NCSNv2's ladder computed from the data.",
    )
    # Data
    add("--dataset_name", default=None, help="A `datasets` dataset (Hub id or local path) with an image column.")
    add("--dataset_config_name", default=None, help="The config of --dataset_name.")
    add(
        "--train_data_dir",
        default=None,
        help="A folder of images (read with datasets' imagefolder, recursively); any mode and size is converted, and "
        "an unreadable file is skipped with a warning naming it.",
    )
    add("--cache_dir", default=None, help="Where `datasets` caches downloads.")
    add("--resolution", type=int, default=16, help="Side of the square training images.")
    add(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="1 (grayscale) or 3 (RGB); images are converted. Defaults to 1 for the digits, 3 otherwise.",
    )
    add("--center_crop", action="store_true", help="Crop the centre square (default: a random square per image).")
    add("--random_flip", action="store_true", help="Flip images horizontally at random (not for digits!).")
    add(
        "--dequantize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Uniform dequantisation x = (255 x + u) / 256, u ~ U(0, 1), as in the paper.",
    )
    # Noise ladder (VE, --objective dsm)
    add(
        "--noise_ladder",
        choices=("explicit", "ncsnv2"),
        default=None,
        help="explicit: --sigma_max/--sigma_min/--num_noise_levels; ncsnv2: sigma_1 and L from the data (Song & Ermon "
        "2020). Default: ncsnv2 for --objective dsm unless --sigma_max or --num_noise_levels is given.",
    )
    add("--sigma_max", type=float, default=None, help="sigma_1 (default 1.0; explicit ladder, data in [-1, 1]).")
    add("--sigma_min", type=float, default=None, help="sigma_L (default 0.02 = the paper's 0.01 for [-1, 1] data).")
    add("--num_noise_levels", type=int, default=None, help="L (default 10; with ncsnv2 it is computed).")
    add(
        "--sigma_sampling",
        choices=("discrete", "log_uniform", "log_normal"),
        default=None,
        help="Training sigmas: discrete, a level of the ladder (the paper); log_uniform (the default with --objective "
        "dsm), log sigma uniform in [log sigma_L, log sigma_1] (score SDE's VE training), so the network is trained "
        "between the levels too and any ladder, of any length, can sample it; log_normal, log sigma ~ "
        "N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1] (EDM, Karras et al. 2022).",
    )
    add("--log_sigma_mean", type=float, default=-1.2, help="P_mean of --sigma_sampling log_normal (EDM's -1.2).")
    add("--log_sigma_std", type=float, default=1.2, help="P_std of --sigma_sampling log_normal (EDM's 1.2).")
    add(
        "--sampler",
        choices=("predictor_corrector", "stochastic_heun", "annealed_langevin"),
        default=None,
        help="The sampler saved with a score model: predictor_corrector (the default; Song et al. 2021, "
        "reverse diffusion + --corrector_steps Langevin steps per level, --sampling_calls U-Net calls from sigma_1 to "
        "sigma_L), stochastic_heun (EDM's Algorithm 2, EDM's VE churn, --sampling_calls calls, one fewer if even) or "
        "annealed_langevin (Algorithm 1 on the training ladder, L x T calls). --objective epsilon saves annealed "
        "Langevin in VP coordinates.",
    )
    add(
        "--sampling_calls",
        type=int,
        default=100,
        help="U-Net calls of the saved predictor_corrector or stochastic_heun sampler.",
    )
    add("--corrector_steps", type=int, default=1, help="k, Langevin corrector steps per level (0: ancestral).")
    add("--snr", type=float, default=0.16, help="r, the corrector's signal-to-noise ratio (predictor_corrector).")
    add(
        "--sampling_sigma_max",
        type=float,
        default=None,
        help="The sigma predictor_corrector or stochastic_heun starts from (default: sigma_1 / 2 with --noise_ladder "
        "ncsnv2, whose "
        "sigma_1 is the largest pairwise distance of the data; sigma_1 otherwise). At most sigma_1.",
    )
    add("--steps_per_level", type=int, default=None, help="T, Langevin steps per level when sampling (default 20).")
    add(
        "--langevin_epsilon",
        type=float,
        default=None,
        help="Step size epsilon of annealed Langevin dynamics (default 4 * 2e-5 = the paper's, rescaled to [-1, 1]).",
    )
    add(
        "--final_denoise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="End sampling with the Tweedie denoising step x + sigma_L^2 s (NCSNv2).",
    )
    # VP (--objective epsilon)
    add("--num_train_timesteps", type=int, default=1000, help="DDPM timesteps (--objective epsilon).")
    add("--ddpm_beta_schedule", default="linear", help="DDPM beta schedule (--objective epsilon).")
    # Optimisation
    add("--output_dir", default="ncsn-digits", help="Where the pipeline, checkpoints, samples and logs go.")
    add(
        "--overwrite_output_dir",
        action="store_true",
        help="Start afresh even if --output_dir holds checkpoints or a saved pipeline (both are replaced). Deletes "
        "only the files an earlier run wrote (docs/security.md, Ownership); never another tool's checkpoint-*.",
    )
    add("--train_batch_size", type=int, default=128, help="Batch size per process.")
    add(
        "--num_epochs",
        type=int,
        default=None,
        help="Epochs, unless --max_train_steps is given (default: 3,000 steps for the digits preset, else 100 epochs).",
    )
    add("--max_train_steps", type=int, default=None, help="Optimizer steps; overrides --num_epochs.")
    add("--gradient_accumulation_steps", type=int, default=1)
    add(
        "--learning_rate",
        type=float,
        default=None,
        help="Peak learning rate (default by --model_preset: 2e-3 for tiny and digits, 2e-4 for cifar10).",
    )
    add(
        "--lr_scheduler",
        default="cosine",
        help='One of "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup".',
    )
    add("--lr_warmup_steps", type=int, default=50)
    add("--adam_beta1", type=float, default=0.9)
    add("--adam_beta2", type=float, default=0.999)
    add("--adam_weight_decay", type=float, default=0.0)
    add("--adam_epsilon", type=float, default=1e-8)
    add("--max_grad_norm", type=float, default=1.0, help="Gradient clipping (0 disables).")
    add(
        "--use_ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Keep an EMA of the weights; it is what gets sampled and saved.",
    )
    add("--ema_inv_gamma", type=float, default=1.0)
    add("--ema_power", type=float, default=3 / 4)
    add("--ema_max_decay", type=float, default=0.999)
    add(
        "--ema_warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Ramp the EMA decay up to --ema_max_decay; --no-ema_warmup keeps it constant from the first step.",
    )
    add(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="Defaults to accelerate's config (`accelerate config`).",
    )
    add(
        "--allow_tf32",
        action="store_true",
        help="Lets Ampere and newer GPUs run fp32 matmuls in TF32: faster, with a 10-bit mantissa in the products.",
    )
    add("--seed", type=int, default=0)
    # Logging, sampling, checkpoints
    add(
        "--report_to",
        "--logger",
        dest="report_to",
        default="tensorboard",
        help='Tracker of accelerate ("tensorboard", "wandb", "all", "none"); a JSON-lines log is always written.',
    )
    add(
        "--logging_dir",
        default="logs",
        help="Relative to --output_dir. A folder outside it (absolute, ../) may be shared: each run logs to its own "
        "subfolder there, named after --output_dir.",
    )
    add("--logging_steps", type=int, default=25, help="Log (and check the loss is finite) every N steps.")
    add("--save_images_steps", type=int, default=0, help="Sample a grid every N steps (0: only at the end).")
    add("--num_sample_images", type=int, default=64, help="Images in each sample grid.")
    add("--checkpointing_steps", type=int, default=500)
    add("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    add(
        "--resume_from_checkpoint",
        default=None,
        help='"latest" or a checkpoint-<step> folder (a bare name is looked up in --output_dir). Checkpoints past the '
        "resumed one are moved aside to abandoned-checkpoint-<step>-<time>.",
    )
    # Hub
    add("--push_to_hub", action="store_true")
    add("--hub_model_id", default=None, help="Repository id (defaults to the name of --output_dir).")
    add(
        "--hub_token",
        default=None,
        help="Hub token; better leave it out and set HF_TOKEN or log in once with `hf auth login`: a flag is visible "
        "to every user of the machine (`ps`). Used for the upload only, never written to a file or the log; refused "
        "with --report_to wandb or all (W&B records the command line).",
    )
    add("--hub_private_repo", action="store_true")
    add("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        check_args(args)
        apply_recipe(args, explicit_flags(parser, argv))
    except ValueError as err:
        parser.error(str(err))
    return args


def check_args(args: argparse.Namespace):
    """Fills the defaults that depend on other flags and rejects contradictions with a message naming the flags."""
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("--dataset_name and --train_data_dir contradict each other; pass one (or neither: digits).")
    if args.channels is None:
        args.channels = 1 if args.dataset_name is None and args.train_data_dir is None else 3
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
    explicit = args.sigma_max is not None or args.num_noise_levels is not None or args.objective != "dsm"
    args.noise_ladder = args.noise_ladder or ("explicit" if explicit else "ncsnv2")
    # NCSN v1's network has one embedding row per trained level: it is trained and sampled on its ladder only.
    continuous = args.objective == "dsm" and args.model_type != "ncsn_v1"
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


def apply_recipe(args: argparse.Namespace, explicit: set[str]):
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


# ---------------------------------------------------------------------------------------------------------------------
# Setup: output folder, data, model, noise schedule
# ---------------------------------------------------------------------------------------------------------------------


def check_output_dir(args: argparse.Namespace) -> bool:
    """Refuses an --output_dir that holds someone else's files, an earlier run's checkpoints without a resume, or a
    saved pipeline this run would replace. Changes nothing; returns whether an earlier run's files are to be cleared
    (--overwrite_output_dir)."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; pass a folder.")
    logging_dir, outside = run_logging_dir(output_dir, args.logging_dir)
    if outside:
        check_logging_dir(logging_dir, output_dir)
    if not output_dir.is_dir():
        return False
    not_ours = foreign_checkpoints(output_dir)
    if not_ours:
        raise ValueError(
            f"--output_dir {output_dir} holds {', '.join(p.name for p in not_ours[:3])}, which train_ncsn.py did not "
            f"write (no {STATE_FILE}): this run would replace it. Move it out of {output_dir} or pass another "
            "--output_dir; it is never deleted, not even with --overwrite_output_dir."
        )
    own = OWN_ENTRIES if outside else OWN_ENTRIES | {Path(args.logging_dir).parts[0]}
    foreign = sorted(
        p.name
        for p in output_dir.iterdir()
        if p.name not in own and not p.name.startswith(("checkpoint-", ABANDONED_PREFIX + "checkpoint-"))
    )
    if foreign:
        raise ValueError(
            f"--output_dir {output_dir} holds files this script did not write ({', '.join(foreign[:5])}); "
            "pass an empty or new folder."
        )
    if args.overwrite_output_dir:
        return True
    has_checkpoints = any(p.name.startswith("checkpoint-") for p in output_dir.iterdir())
    if has_checkpoints and args.resume_from_checkpoint is None:
        raise ValueError(
            f"--output_dir {output_dir} holds checkpoints of an earlier run; pass --resume_from_checkpoint latest "
            "to continue it, or --overwrite_output_dir to start afresh."
        )
    pipeline = [name for name in PIPELINE_ENTRIES if (output_dir / name).exists()]
    target = resume_path(args) if args.resume_from_checkpoint is not None else None
    resumes_here = target is not None and any(
        path.resolve() == target.resolve() for _, path in complete_checkpoints(output_dir)
    )
    if pipeline and not resumes_here:
        raise ValueError(
            f"--output_dir {output_dir} holds a saved pipeline ({', '.join(pipeline)}) that this run would overwrite; "
            "pass a new folder, --resume_from_checkpoint to continue the run that saved it, or --overwrite_output_dir "
            "to replace it."
        )
    return False


def clear_earlier_run(output_dir: Path, logging_dir: Path):
    """--overwrite_output_dir: deletes what an earlier run wrote (the pipeline is replaced at the end): the files of
    its checkpoints, sample grids and logs, recognised by content and name (docs/security.md, "Ownership"). A file
    someone else put there (samples/mine.png, logs/notes.txt) stays; so do moved-aside checkpoints."""
    for _, checkpoint in complete_checkpoints(output_dir):
        discard_checkpoint(checkpoint)
    remove_owned_files(output_dir / "samples", SAMPLE_GRID)
    remove_owned_files(logging_dir, LOG_FILES)


def resume_path(args: argparse.Namespace) -> Path | None:
    """The checkpoint --resume_from_checkpoint names: `latest` of --output_dir, a folder, or a name in --output_dir."""
    if args.resume_from_checkpoint == "latest":
        return latest_checkpoint(args.output_dir)
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir() and (Path(args.output_dir) / path.name).is_dir():
        path = Path(args.output_dir) / path.name
    return path


class OutputDirClaim:
    """--output_dir for the whole run: checked, created and locked by `take` (main process), released at the end.

    A refused folder is left untouched: the checks only read, and the lock file is created after them. When the run
    fails, `failed` removes the folders this run created and left empty; nothing else.
    """

    def __init__(self, args: argparse.Namespace):
        self.args, self.output_dir = args, Path(args.output_dir)
        self.lock, self.before, self.existing = OutputDirLock(self.output_dir), [], set()

    def take(self):
        self.lock.check_free()  # a live run first: its checkpoints are not "an earlier run's"
        clear = check_output_dir(self.args)
        self.before = [self.output_dir, *self.output_dir.parents]
        self.existing = {p for p in self.before if p.exists()}
        self.existing |= {p for p in self.output_dir.rglob("*") if p.is_dir()}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        logging_dir, outside = run_logging_dir(self.output_dir, self.args.logging_dir)
        if clear:
            clear_earlier_run(self.output_dir, logging_dir)
        if outside:
            claim_logging_dir(logging_dir, self.output_dir)
        remove_stale_temporaries(self.output_dir)

    def failed(self):
        if not self.before:  # not taken: nothing was created
            return
        self.release()
        created = [p for p in (*self.output_dir.rglob("*"), *self.before) if p.is_dir() and p not in self.existing]
        for path in sorted(created, key=lambda p: len(p.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty

    def release(self):
        self.lock.release()


def load_training_images(args: argparse.Namespace) -> torch.Tensor:
    """The training set as (N, C, R, R), uint8 (image sources) or float32 in [0, 1] (digits), decoded once."""
    if args.train_data_dir is not None:
        sources = image_folder_sources(args.train_data_dir, args.cache_dir)
    elif args.dataset_name is not None:
        sources = hub_dataset_sources(args.dataset_name, args.dataset_config_name, args.cache_dir)
    else:
        images, _ = load_digits_images(resolution=args.resolution, split="train")
        return images if args.channels == 1 else images.expand(-1, 3, -1, -1).contiguous()
    images, skipped = decode_images(sources, args.resolution, args.channels, args.center_crop, seed=args.seed)
    if skipped:
        logger.warning(f"Skipped {len(skipped)} unreadable images; training on {len(images)}.")
    return images


def build_unet(args: argparse.Namespace) -> torch.nn.Module:
    """`NCSNUNet2DModel` for dsm; for epsilon a stock `UNet2DModel` with the preset's blocks and DDPM's embedding."""
    preset = dict(PRESETS[args.model_preset])
    factor = 2 ** (len(preset["block_out_channels"]) - 1)
    if args.resolution % factor:
        raise ValueError(
            f"--resolution {args.resolution} cannot be taken by --model_preset {args.model_preset}, which halves the "
            f"image {factor // 2 or 1} time(s) (factor {factor}); use a multiple of {factor}, e.g. "
            f"{max(factor, round(args.resolution / factor) * factor)}."
        )
    preset.update(sample_size=args.resolution, in_channels=args.channels)
    if args.objective in VE_OBJECTIVES:
        return NCSNUNet2DModel(**preset)
    return UNet2DModel(
        sample_size=args.resolution,
        in_channels=args.channels,
        out_channels=args.channels,
        block_out_channels=preset["block_out_channels"],
        down_block_types=preset["down_block_types"],
        up_block_types=preset["up_block_types"],
        layers_per_block=preset["layers_per_block"],
        norm_num_groups=preset.get("norm_num_groups", 32),
        attention_head_dim=preset.get("attention_head_dim"),
        add_attention=preset.get("add_attention", True),
        dropout=preset.get("dropout", 0.0),
        time_embedding_type="positional",
    )


def build_paper_unet(args: argparse.Namespace, noise_scheduler: AnnealedLangevinScheduler) -> torch.nn.Module:
    """`--model_type ncsn_v1|ncsnv2`: the authors' network, NCSN v1 conditioned on the scheduler's ladder."""
    config = noise_scheduler.config
    return build_paper_network(
        args.model_type,
        sample_size=args.resolution,
        in_channels=args.channels,
        base_channels=args.base_channels,
        data_range=model_data_range(args),
        ladder=(config.sigma_max, config.sigma_min, config.num_noise_levels),
        variant=args.ncsnv2_variant,
    )


def model_data_range(args: argparse.Namespace) -> tuple[float, float]:
    """[0, 1] under `--recipe` (the authors' convention; their networks apply 2 x - 1), else [-1, 1]."""
    return OFFICIAL_DATA_RANGE if args.recipe else DATA_RANGE


def to_model_range(images: torch.Tensor, data_range: tuple[float, float] = DATA_RANGE) -> torch.Tensor:
    """[0, 1] (or uint8) images -> the model's `data_range`, [-1, 1] by default."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    low, high = data_range
    return images * (high - low) + low


def build_noise_scheduler(args: argparse.Namespace, images: torch.Tensor) -> AnnealedLangevinScheduler:
    """The scheduler saved with the model: the VE ladder (explicit or NCSNv2) or DDPM's schedule in VP coordinates."""
    common = dict(
        steps_per_level=args.steps_per_level,
        epsilon=args.langevin_epsilon,
        final_denoise=args.final_denoise,
        data_range=model_data_range(args),
    )
    if args.objective == "epsilon":
        return AnnealedLangevinScheduler(
            noise_space="vp",
            prediction_type="epsilon",
            num_noise_levels=args.num_noise_levels,
            num_train_timesteps=args.num_train_timesteps,
            beta_schedule=args.ddpm_beta_schedule,
            **common,
        )
    if args.noise_ladder == "ncsnv2":
        from ncsn_diffusers.ncsnv2_techniques import ncsnv2_scheduler_config

        ladder = ncsnv2_scheduler_config(
            to_model_range(images, model_data_range(args)),
            sigma_min=args.sigma_min,
            steps_per_level=args.steps_per_level,
            generator=torch.Generator().manual_seed(args.seed),
        )
        common.update(epsilon=ladder.pop("epsilon"))
        ladder.pop("final_denoise")  # --final_denoise decides
        return AnnealedLangevinScheduler(prediction_type="score", **{**common, **ladder})
    return AnnealedLangevinScheduler(
        sigma_max=args.sigma_max,
        sigma_min=args.sigma_min,
        num_noise_levels=args.num_noise_levels,
        prediction_type="score",
        **common,
    )


# ---------------------------------------------------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------------------------------------------------


def draw_batch(images, order, micro_step, seed, noise_scheduler, args, process_index=0, num_processes=1):
    """The clean batch x (in [-1, 1]), its noise z and noise-level draws for one micro-step, on `images.device`.

    Draws are made for the global batch from a generator seeded by (seed, micro_step) and this process keeps its
    shard, so they do not depend on the number of processes, nor on where a run was resumed.

    Returns:
        `tuple`: clean (B, C, R, R), noise (B, C, R, R), levels (B,) (VE: ladder indices, or the sigmas themselves
        with `--sigma_sampling log_uniform`; VP: DDPM timesteps).
    """
    device = images.device
    index = order.indices(micro_step, process_index, num_processes)
    # A copy from pageable memory would make the host wait for the GPU's queue at every step; pinned, it does not.
    index = index.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else index.to(device)
    shard = slice(process_index * len(index), (process_index + 1) * len(index))
    global_shape = (order.global_batch_size, *images.shape[1:])
    generator = torch.Generator(device).manual_seed(derived_seed(seed, NOISE_STREAM, micro_step))

    clean = images[index]
    clean = clean.float() / 255.0 if clean.dtype == torch.uint8 else clean
    if args.dequantize:  # the official code's uniform dequantisation: x / 256 * 255 + u / 256
        u = torch.rand(global_shape, generator=generator, device=device)[shard]
        clean = clean * (255.0 / 256.0) + u / 256.0
    if args.random_flip:
        flip = torch.rand(global_shape[0], generator=generator, device=device)[shard] < 0.5
        clean = torch.where(append_dims(flip, clean.ndim), clean.flip(-1), clean)
    if noise_scheduler.config.noise_space == "ve" and args.sigma_sampling == "log_uniform":
        levels = log_uniform_sigmas(noise_scheduler.sigmas, global_shape[0], generator, device)[shard]
    elif noise_scheduler.config.noise_space == "ve" and args.sigma_sampling == "log_normal":
        ladder, mean, std = noise_scheduler.sigmas, args.log_sigma_mean, args.log_sigma_std
        levels = log_normal_sigmas(ladder, mean, std, global_shape[0], generator, device)[shard]
    else:
        num_levels = (
            args.num_train_timesteps if noise_scheduler.config.noise_space == "vp" else len(noise_scheduler.sigmas)
        )
        levels = torch.randint(0, num_levels, (global_shape[0],), generator=generator, device=device)[shard]
    noise = randn_tensor(global_shape, generator=generator, device=device, dtype=torch.float32)[shard]
    return to_model_range(clean, model_data_range(args)), noise, levels


def log_uniform_sigmas(ladder: torch.Tensor, batch_size: int, generator, device) -> torch.Tensor:
    """(B,) float32 sigmas with log sigma ~ U(log sigma_L, log sigma_1): sigma = sigma_L (sigma_1 / sigma_L)^u."""
    sigma_max, sigma_min = float(ladder.max()), float(ladder.min())
    u = torch.rand(batch_size, generator=generator, device=device)
    return sigma_min * (sigma_max / sigma_min) ** u


def log_normal_sigmas(ladder: torch.Tensor, mean: float, std: float, batch_size: int, generator, device):
    """(B,) float32 sigmas with log sigma ~ N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1], drawn by
    inverse CDF: log sigma = P_mean + P_std Phi^-1(u), u ~ U(Phi(a), Phi(b)), so no draw piles up at a bound."""
    log_min, log_max = (math.log(float(bound)) for bound in ladder.aminmax())
    low, high = (0.5 * (1.0 + math.erf((bound - mean) / (std * math.sqrt(2.0)))) for bound in (log_min, log_max))
    u = low + (high - low) * torch.rand(batch_size, generator=generator, device=device)
    log_sigma = mean + std * torch.special.ndtri(u)
    return log_sigma.clamp(log_min, log_max).exp()  # the clamp only catches float32 rounding at the bounds


def objective_losses(model_output, noise, sigma, prediction_type: str):
    """(training loss, the other objective's value) for a score or epsilon output; the two are equal in exact math.

    score: dsm_loss = mean (sigma s + z)^2, logged also as epsilon_loss(-sigma s, z).
    epsilon: epsilon_loss = mean (eps - z)^2, logged also as dsm_loss(-eps / sigma, z, sigma).
    """
    sigma_b = append_dims(sigma.to(model_output.dtype), model_output.ndim)
    if prediction_type == "score":
        return dsm_loss(model_output, noise, sigma), epsilon_loss(epsilon_from_score(model_output, sigma_b), noise)
    return epsilon_loss(model_output, noise), dsm_loss(score_from_epsilon(model_output, sigma_b), noise, sigma)


def training_losses(unet, noise_scheduler, clean, noise, levels, sigmas_or_alphas, ssm_projections=None):
    """Perturbs the batch and evaluates the network: NCSN's x + sigma z (VE) or DDPM's x_t (VP).

    Args:
        sigmas_or_alphas (`torch.Tensor`): the scheduler's `sigmas` (VE) or `alphas_cumprod` (VP), on the device.
        ssm_projections (`tuple[int, torch.Generator]`, *optional*): (M, generator of v) for sliced score matching.

    Returns:
        `tuple`: (loss to optimise, the same loss in the other parameterisation), both scalars.
    """
    if noise_scheduler.config.noise_space == "ve":
        sigma = levels if levels.is_floating_point() else sigmas_or_alphas[levels]  # (B,); float: log_uniform draws
        noisy = noise_scheduler.add_noise(clean, noise, sigma)  # x + sigma z
        if ssm_projections is not None:
            return sliced_losses(unet, noisy, noise, sigma, *ssm_projections)
        return objective_losses(unet(noisy, sigma).sample.float(), noise, sigma, "score")  # fp32 under autocast
    sigma = (1.0 - sigmas_or_alphas[levels]).sqrt()  # sqrt(1 - abar_t), the VE-equivalent noise scale of z
    noisy = noise_scheduler.add_noise(clean, noise, levels)  # sqrt(abar_t) x + sqrt(1 - abar_t) z
    return objective_losses(unet(noisy, levels).sample.float(), noise, sigma, "epsilon")


def sliced_losses(unet, noisy, noise, sigma, num_projections, generator):
    """(ssm_loss, dsm_loss of the same network outputs): in expectation dsm = ssm + 1, a check logged for free."""
    outputs = []

    def score_fn(x, s):
        outputs.append(unet(x, s).sample.float())  # fp32 under autocast
        return outputs[-1]

    loss = ssm_loss(score_fn, noisy, sigma, num_projections, generator=generator)
    return loss, dsm_loss(outputs[0][: len(noisy)].detach(), noise, sigma)


# ---------------------------------------------------------------------------------------------------------------------
# Saving: pipeline, samples, model card, Hub
# ---------------------------------------------------------------------------------------------------------------------


def sampling_sigma_max(args, ladder) -> float:
    """Where the saved predictor-corrector or stochastic Heun sampler starts: --sampling_sigma_max, else sigma_1 / 2 for the ncsnv2 ladder (sigma_1 is the
    data's largest pairwise distance; at 16x16 the digits sample better from half of it, README), else sigma_1."""
    start = args.sampling_sigma_max or ladder.sigma_max / (2 if args.noise_ladder == "ncsnv2" else 1)
    if not ladder.sigma_min < start <= ladder.sigma_max:
        raise ValueError(
            f"--sampling_sigma_max {start} must lie in (sigma_L, sigma_1] = ({ladder.sigma_min}, {ladder.sigma_max}]."
        )
    return start


def make_pipeline(unet, noise_scheduler, args):
    """The pipeline to sample and save: the training ladder's annealed Langevin chain, or PC sampling (`--sampler
    predictor_corrector`) or EDM's stochastic Heun sampler (`stochastic_heun`) of the same range, from
    `sampling_sigma_max` to sigma_L, in --sampling_calls U-Net calls."""
    if args.sampler == "annealed_langevin":
        return NCSNPipeline(unet=unet, scheduler=noise_scheduler)
    ladder, k = noise_scheduler.config, args.corrector_steps
    if args.sampler == "stochastic_heun":
        sampler = StochasticHeunScheduler(
            sigma_max=sampling_sigma_max(args, ladder),
            sigma_min=ladder.sigma_min,
            num_noise_levels=(args.sampling_calls + 1) // 2,
            data_range=DATA_RANGE,
        )
        return NCSNPipeline(unet=unet, scheduler=sampler)
    sampler = PredictorCorrectorScheduler(
        sigma_max=sampling_sigma_max(args, ladder),
        sigma_min=ladder.sigma_min,
        num_noise_levels=math.ceil(args.sampling_calls / (k + 1)),
        corrector_steps=k,
        snr=args.snr,
        final_denoise=args.final_denoise,
        data_range=DATA_RANGE,
    )
    return NCSNPipeline(unet=unet, scheduler=sampler)


def save_sample_grid(pipeline, path: Path, num_images: int, seed: int, device) -> np.ndarray:
    """Samples `num_images` with the pipeline and writes them as one PNG grid; returns the images (N, H, W, C)."""
    from PIL import Image

    generator = torch.Generator(device).manual_seed(seed)
    images = pipeline(batch_size=num_images, generator=generator, output_type="np").images  # (N, H, W, C) in [0, 1]
    images = np.asarray(images)
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = image
    grid = (grid.clip(0, 1) * 255).round().astype(np.uint8)
    scale = max(1, 512 // max(grid.shape[:2]))  # small images are hard to judge: enlarge (nearest) to ~512 px
    picture = Image.fromarray(grid[..., 0] if c == 1 else grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), resample=Image.Resampling.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return images


def dataset_label(args: argparse.Namespace) -> str:
    """The training data as the model card names it: a Hub dataset's id, or only the name of a local folder (its
    absolute path would publish the trainer's file system)."""
    if args.dataset_name is not None:
        local = Path(args.dataset_name)
        return f"local dataset `{local.resolve().name}`" if local.exists() else args.dataset_name
    if args.train_data_dir is not None:
        return f"image folder `{Path(args.train_data_dir).resolve().name}`"
    return "scikit-learn digits (train split)"


def push_to_hub(args, repo_id: str) -> str:
    """Uploads the allow-list of [`upload_patterns`] from --output_dir to the Hub repo `repo_id`.

    `--hub_token` is passed to the client only; without it, huggingface_hub uses HF_TOKEN or the cached login
    (`hf auth login`).
    """
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(
        repo_id,
        exist_ok=True,
        private=args.hub_private_repo,
        token=args.hub_token,
    ).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=args.output_dir,
        commit_message="Training run of train_ncsn.py",
        allow_patterns=upload_patterns(Path(args.output_dir)),
        token=args.hub_token,
    )
    return repo_id


def upload_patterns(output_dir: Path) -> list[str]:
    """What a push uploads, and nothing else: model_index.json, the folder of every component it names (unet/,
    scheduler/, ...), the model card and the sample grids `samples/step_<step>.png`. Logs (any --logging_dir),
    training_args.json, checkpoints and the lock file hold local paths or are of no use on the Hub: never uploaded."""
    index = json.loads((output_dir / "model_index.json").read_text())
    components = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]
    return ["model_index.json", "README.md", "samples/step_[0-9][0-9][0-9][0-9][0-9][0-9].png"] + [
        f"{name}/*" for name in components
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


class JsonLog:
    """The plain training log, <logging folder>/train_log.jsonl (see `run_logging_dir`): one JSON object per
    logging step.

    On resume the entries past the checkpoint (written by the killed run) are dropped, and so is a torn last line (a
    power loss or a full disk mid-write), with a warning; the file is rewritten atomically, so no earlier line is ever
    lost.
    """

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            lines = path.read_bytes().decode(errors="replace").splitlines()
            kept = []
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    step = json.loads(line)["step"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    if number < len(lines):
                        raise ValueError(
                            f"{path} line {number} is not a log record ({line[:80]!r}); repair or delete that line."
                        ) from None
                    logger.warning(f"{path} ends in a partial line ({line[:80]!r}), left by a crash; dropped it.")
                    continue
                if step <= resume_step:
                    kept.append(line)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    def write(self, record: dict):
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    claim = OutputDirClaim(args)
    try:
        train(args, claim)
    except BaseException:
        claim.failed()
        raise
    finally:
        claim.release()


def public_args(args: argparse.Namespace) -> dict:
    """The arguments as written to training_args.json and the trackers: every one but the secrets."""
    return {k: v for k, v in vars(args).items() if k not in SECRET_ARGS}


def run_settings(args: argparse.Namespace, num_processes: int, max_train_steps: int) -> dict:
    """What a checkpoint records of its run, for [`compare_run_settings`] on resume."""
    settings = {k: getattr(args, k) for k in RESUME_MUST_MATCH + RESUME_SHOULD_MATCH if hasattr(args, k)}
    return {**settings, "num_processes": num_processes, "max_train_steps": max_train_steps}


def train(args: argparse.Namespace, claim: OutputDirClaim):
    output_dir = Path(args.output_dir)
    logging_dir, _ = run_logging_dir(output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(logging_dir)),
    )
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if accelerator.is_main_process:
        claim.take()
    accelerator.wait_for_everyone()
    set_seed(args.seed)  # model initialisation; training draws use their own (seed, step) generators

    images = load_training_images(args)
    noise_scheduler = build_noise_scheduler(args, images)
    unet = build_unet(args) if args.model_type == "unet" else build_paper_unet(args, noise_scheduler)
    if args.objective in VE_OBJECTIVES and args.sampler != "annealed_langevin":
        sampling_sigma_max(args, noise_scheduler.config)  # a bad --sampling_sigma_max fails before training
    if args.objective in VE_OBJECTIVES:
        sigmas = noise_scheduler.sigmas.tolist()
        logger.info(
            f"Noise ladder ({args.noise_ladder}): L={len(sigmas)}, sigma_1={sigmas[0]:.4g} ... "
            f"sigma_L={sigmas[-1]:.4g}, epsilon={noise_scheduler.config.epsilon:.3g}"
        )
    images = images.to(accelerator.device)
    ladder = (noise_scheduler.sigmas if args.objective in VE_OBJECTIVES else noise_scheduler.alphas_cumprod).to(
        accelerator.device
    )

    order = BatchOrder(len(images), args.train_batch_size * accelerator.num_processes, args.seed)
    max_train_steps = args.max_train_steps or num_update_steps(
        args.num_epochs, order.batches_per_epoch, args.gradient_accumulation_steps
    )
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    # accelerate steps a prepared lr scheduler once per process per update, hence the factor (diffusers' convention).
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema = None
    if args.use_ema:
        ema = EMAModel(
            accelerator.unwrap_model(unet).parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=args.ema_warmup,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            foreach=True,
            # Without warm-up, decay = ema_max_decay from the first step: the authors' EMAHelper (EMAModel would
            # otherwise copy the weights at its first step and ramp (1 + n) / (10 + n) after).
            **({} if args.ema_warmup else {"min_decay": args.ema_max_decay, "update_after_step": -1}),
        )

    start_step = resume(args, accelerator, unet, optimizer, lr_scheduler, ema, max_train_steps)
    if accelerator.is_main_process:
        (output_dir / "training_args.json").write_text(json.dumps(public_args(args), indent=2))
        accelerator.init_trackers("train_ncsn", config={k: v for k, v in public_args(args).items() if v is not None})
    json_log = JsonLog(logging_dir / LOG_FILE, start_step) if accelerator.is_main_process else None

    logger.info(
        f"{len(images)} training images {tuple(images.shape[1:])}, objective {args.objective}, "
        f"{accelerator.num_processes} process(es) x batch {args.train_batch_size} x accumulation "
        f"{args.gradient_accumulation_steps}, steps {start_step} -> {max_train_steps}"
    )
    start_time = time.time()
    last = run_training(
        args,
        accelerator,
        unet,
        optimizer,
        lr_scheduler,
        ema,
        noise_scheduler,
        images,
        ladder,
        order,
        start_step,
        max_train_steps,
        json_log,
    )
    train_time = time.time() - start_time

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish(args, accelerator, unet, ema, noise_scheduler, images, max_train_steps, train_time, last)
    del unet, optimizer, lr_scheduler, ema  # the DDP reducer goes before the process group (end_distributed_run)
    end_distributed_run(accelerator)


def resume(args, accelerator, unet, optimizer, lr_scheduler, ema, max_train_steps: int) -> int:
    """Restores the state of `--resume_from_checkpoint` and returns its step (0 for a fresh run).

    The checkpoints past the resumed one belong to the run being abandoned: they are moved aside (see
    `abandon_later_checkpoints`), so that neither `latest` nor this run's pruning ever picks them.
    """
    if args.resume_from_checkpoint is None:
        return 0
    path = resume_path(args)
    if path is None:
        logger.info(f"No complete checkpoint in {args.output_dir}; starting a new training run.")
        return 0
    saved = read_training_state(path)
    current = run_settings(args, accelerator.num_processes, max_train_steps)
    warnings = compare_run_settings(path, saved.get("settings", {}), current, RESUME_MUST_MATCH)
    if saved["step"] > max_train_steps:
        raise ValueError(
            f"{path} is at step {saved['step']}, past --max_train_steps {max_train_steps}; pass --max_train_steps "
            f">= {saved['step']}, or resume from an earlier checkpoint."
        )
    load_checkpoint(path, accelerator, model=unet, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema)
    accelerator.step = saved["step"] * args.gradient_accumulation_steps  # where gradient accumulation stands
    if ema is not None:
        ema.to(accelerator.device)
    for warning in warnings:
        logger.warning(warning)
    if accelerator.is_main_process:
        for old, new in abandon_later_checkpoints(args.output_dir, saved["step"]):
            logger.warning(
                f"{old.name} is past the resumed step {saved['step']}: it belongs to the abandoned continuation of "
                f"this run and was moved to {new.name} (never resumed or pruned; delete it when you no longer need it)"
            )
    accelerator.wait_for_everyone()
    logger.info(f"Resumed from {path} at step {saved['step']}")
    return saved["step"]


def run_training(
    args,
    accelerator,
    unet,
    optimizer,
    lr_scheduler,
    ema,
    noise_scheduler,
    images,
    ladder,
    order,
    start_step,
    max_train_steps,
    json_log,
):
    """The training loop; returns the last logged losses. Raises `FloatingPointError` when the loss is not finite.

    Nothing leaves the device between logging steps: the running loss sums and the first non-finite step stay tensors.
    """
    device = accelerator.device
    accum = args.gradient_accumulation_steps
    progress = tqdm(
        range(start_step, max_train_steps),
        initial=start_step,
        total=max_train_steps,
        disable=not accelerator.is_local_main_process,
        desc="Steps",
    )
    sums = torch.zeros(2, device=device)  # running sums of (loss, other-form loss) since the last log
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    last, last_log_step, last_log_time = {}, start_step, time.time()
    unet.train()
    for step in range(start_step, max_train_steps):
        for k in range(accum):
            micro = step * accum + k
            clean, noise, levels = draw_batch(
                images,
                order,
                micro,
                args.seed,
                noise_scheduler,
                args,
                accelerator.process_index,
                accelerator.num_processes,
            )
            with accelerator.accumulate(unet):
                ssm_projections = None
                if args.objective == "ssm":
                    v_seed = derived_seed(args.seed, PROJECTION_STREAM, micro, accelerator.process_index)
                    ssm_projections = (args.num_projections, torch.Generator(device).manual_seed(v_seed))
                loss, other = training_losses(unet, noise_scheduler, clean, noise, levels, ladder, ssm_projections)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            pair = torch.stack([loss.detach(), other.detach()])
            sums += pair / accum
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(pair).all(), step + 1, first_bad)
        if ema is not None:
            ema.step(accelerator.unwrap_model(unet).parameters())
        progress.update(1)
        done = step + 1
        is_checkpoint = done % args.checkpointing_steps == 0
        if done % args.logging_steps == 0 or done == max_train_steps or is_checkpoint:
            mean = accelerator.reduce(sums, reduction="mean") / (done - last_log_step)
            bad = accelerator.gather(first_bad[None])
            if (bad >= 0).any():
                bad = int(bad[bad >= 0].min())
                good = latest_checkpoint(args.output_dir)
                raise FloatingPointError(
                    f"The loss became NaN or infinite at step {bad}; the run stopped. "
                    + (
                        f"The last good checkpoint in {args.output_dir} is {good}: resume from it "
                        f"(--resume_from_checkpoint {good}) with a lower --learning_rate or --max_grad_norm."
                        if good is not None
                        else f"No checkpoint was written yet (the first is due at step {args.checkpointing_steps}): "
                        "start again with --overwrite_output_dir and a lower --learning_rate or --max_grad_norm."
                    )
                )
            loss_value, other_value = mean.tolist()
            now = time.time()
            last = {
                "step": done,
                "epoch": order.epoch_of(done * accum - 1),
                f"loss_{args.objective}": loss_value,
                {"dsm": "loss_epsilon", "ssm": "loss_dsm", "epsilon": "loss_dsm"}[args.objective]: other_value,
                "lr": lr_scheduler.get_last_lr()[0],
                "images_per_s": (done - last_log_step)
                * order.global_batch_size
                * accum
                / max(now - last_log_time, 1e-9),
            }
            accelerator.log({k: v for k, v in last.items() if k != "step"}, step=done)
            if json_log is not None:
                json_log.write(last)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{last['lr']:.2e}")
            sums.zero_()
            last_log_step, last_log_time = done, now
        if is_checkpoint:
            save_checkpoint(
                accelerator,
                args.output_dir,
                done,
                {
                    "epoch": last.get("epoch", 0),
                    "settings": run_settings(args, accelerator.num_processes, max_train_steps),
                },
                args.checkpoints_total_limit,
                model=unet,
                optimizer=optimizer,
                lr_scheduler=lr_scheduler,
                ema=ema,
            )
        if args.save_images_steps and done % args.save_images_steps == 0 and done < max_train_steps:
            if accelerator.is_main_process:
                with ema_weights(accelerator.unwrap_model(unet), ema):
                    pipeline = make_pipeline(accelerator.unwrap_model(unet), noise_scheduler, args)
                    save_sample_grid(
                        pipeline,
                        Path(args.output_dir) / "samples" / f"step_{done:06d}.png",
                        args.num_sample_images,
                        args.seed,
                        device,
                    )
            unet.train()
            accelerator.wait_for_everyone()
    progress.close()
    return last


class ema_weights:
    """Temporarily loads the EMA weights into `model` (a no-op without EMA)."""

    def __init__(self, model, ema):
        self.model, self.ema = model, ema

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())
        self.model.eval()

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.model.parameters())


def finish(args, accelerator, unet, ema, noise_scheduler, images, max_train_steps, train_time, last):
    """Saves the pipeline (EMA weights) to --output_dir, samples the final grid, writes the model card, pushes."""
    unet = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to(unet.parameters())  # training is over: the EMA weights are the model
    unet.eval()
    pipeline = make_pipeline(unet, noise_scheduler, args)
    grid = Path(args.output_dir) / "samples" / f"step_{max_train_steps:06d}.png"
    sample_start = time.time()
    save_sample_grid(pipeline, grid, args.num_sample_images, args.seed, accelerator.device)
    sample_time = time.time() - sample_start

    pipeline.model_card_kwargs = {
        "training": {
            "objective": args.objective,
            "dataset": dataset_label(args),
            "num_images": len(images),
            "resolution": args.resolution,
            "channels": args.channels,
            "model_preset": args.model_preset,
            "max_train_steps": max_train_steps,
            "train_batch_size": args.train_batch_size,
            "num_processes": accelerator.num_processes,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "learning_rate": args.learning_rate,
            "lr_scheduler": args.lr_scheduler,
            "lr_warmup_steps": args.lr_warmup_steps,
            "max_grad_norm": args.max_grad_norm,
            "use_ema": args.use_ema,
            "ema_max_decay": args.ema_max_decay if args.use_ema else None,
            "mixed_precision": accelerator.mixed_precision,
            "dequantize": args.dequantize,
            "random_flip": args.random_flip,
            "noise_ladder": args.noise_ladder if args.objective in VE_OBJECTIVES else "ddpm",
            **({"sigma_sampling": args.sigma_sampling} if args.objective in VE_OBJECTIVES else {}),
            **(
                {"log_sigma_mean": args.log_sigma_mean, "log_sigma_std": args.log_sigma_std}
                if args.objective in VE_OBJECTIVES and args.sigma_sampling == "log_normal"
                else {}
            ),
            "seed": args.seed,
        },
        "results": {
            f"final training loss ({args.objective}, mean over pixels)": last.get(f"loss_{args.objective}"),
            "training time (s)": round(train_time, 1),
            "training images/s (last interval)": last.get("images_per_s"),
            f"sampling time for {args.num_sample_images} images (s)": round(sample_time, 1),
            "sample grid": str(grid.relative_to(args.output_dir)),
            "device": str(accelerator.device),
        },
        "datasets": ["sklearn-digits"]
        if args.dataset_name is None and args.train_data_dir is None
        else ([args.dataset_name] if args.dataset_name and not Path(args.dataset_name).exists() else None),
    }
    repo_id = args.hub_model_id or (Path(args.output_dir).resolve().name if args.push_to_hub else None)
    pipeline.save_pretrained(args.output_dir, repo_id=repo_id)
    logger.info(f"Saved the pipeline and model card to {args.output_dir}, samples to {grid} ({sample_time:.0f} s)")
    if args.push_to_hub:
        repo_id = push_to_hub(args, repo_id)
        logger.info(f"Pushed {args.output_dir} to {repo_id}")


if __name__ == "__main__":
    main()
