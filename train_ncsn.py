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
`--objective consistency_distillation --teacher_model DIR` distils a saved score model into diffusers' own
`ConsistencyModelPipeline` (Song et al. 2023; docs/distillation.md).
`--objective epsilon` trains diffusers' `UNet2DModel` eps_theta(x_t, t) with DDPM's loss mean ||eps_theta - z||^2 on
x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z. Both log the other form too: under eps = -sigma s (VE) and
score = -eps / sqrt(1 - abar_t) (VP) they are the same number. Losses are means over pixels (diffusers' convention);
the paper's 1/2 sum over the D pixels is D/2 times larger, a constant that Adam ignores, and keeping the mean for
both objectives makes `--max_grad_norm` mean the same thing for both.
`--objective noise_classifier` trains a `NoiseConditionalClassifier` p_phi(y | x, sigma) for classifier guidance by
cross-entropy -log p_phi(y | x + sigma z, sigma), sigma drawn as for dsm (or as `--score_model DIR` was trained), and
saves it with `save_pretrained`: `NCSNPipeline.from_pretrained(score_dir, classifier=NoiseConditionalClassifier.
from_pretrained(output_dir))`.

The run is crash-safe: checkpoints are written under a temporary name and renamed when complete, every random draw
is a function of (seed, step), and `--resume_from_checkpoint latest` continues a killed run exactly. Checkpoints hold
safetensors and JSON only (nothing is unpickled on resume), --output_dir is locked for the run, and no token is ever
written (README: "Security and reliability").
"""

import argparse
import sys

from ncsn_diffusers.models.unet_ncsn import PRESETS
from ncsn_diffusers.recipes import MODEL_TYPES, OFFICIAL_CONFIGS, RECIPES
from ncsn_diffusers.training import TrainingConfig, resume_hint, train


def build_parser() -> argparse.ArgumentParser:
    """One flag per `TrainingConfig` field; no flag has a parser default, so the namespace holds the given ones only
    (the defaults are the dataclass's, and a recipe replaces only the flags not given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    add = parser.add_argument
    # Objective and model
    add(
        "--objective",
        choices=("dsm", "ssm", "epsilon", "consistency_distillation", "noise_classifier"),
        help="dsm: NCSN denoising score matching (VE ladder); ssm: sliced score matching on the same ladder; "
        "epsilon: DDPM's loss (VP forward process); consistency_distillation: distil --teacher_model into "
        "diffusers' ConsistencyModelPipeline (1-2 calls; docs/distillation.md); noise_classifier: a "
        "NoiseConditionalClassifier p(y | x, sigma) for classifier guidance, cross-entropy on labelled data perturbed "
        "as dsm perturbs it.",
    )
    add("--num_projections", type=int, help="Projections v per sample of --objective ssm (M).")
    add("--model_preset", choices=sorted(PRESETS), help="Size preset of the U-Net.")
    add(
        "--model_type",
        choices=MODEL_TYPES,
        help="unet: NCSNUNet2DModel (--model_preset); ncsn_v1: NCSN's RefineNet (NCSNRefineNet); ncsnv2: NCSNv2Model.",
    )
    add("--base_channels", type=int, help="ngf of --model_type ncsn_v1/ncsnv2 (the papers: 128).")
    add(
        "--ncsnv2_variant",
        choices=("ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"),
        help="Depth of --model_type ncsnv2 (the authors': ncsnv2 to 64 px, deeper for 64-128 px, deepest for 256 px).",
    )
    add(
        "--recipe",
        choices=RECIPES,
        help="The authors' training recipe (optimiser, EMA, data, ladder, network; see ncsn_diffusers/recipes.py); "
        "data in [0, 1] as in their code. Explicit flags still override.",
    )
    add(
        "--recipe_dataset",
        choices=sorted({name for tables in OFFICIAL_CONFIGS.values() for name in tables}),
        help="Take --recipe's settings of the authors' config for this data set (ladder, T, epsilon, resolution, "
        "network width, steps); without it, v1's ladder or NCSNv2's ladder computed from the data.",
    )
    # Data
    add("--dataset_name", help="A `datasets` dataset (Hub id or local path) with an image column.")
    add("--dataset_config_name", help="The config of --dataset_name.")
    add(
        "--train_data_dir",
        help="A folder of images (every image file under it, recursively, no split rules), streamed: decoded per "
        "batch, never all in memory; any mode and size is converted, and a file whose header is unreadable is "
        "skipped with a warning naming it.",
    )
    add("--cache_dir", help="Where `datasets` caches downloads.")
    add(
        "--label_column",
        help="--objective noise_classifier: the ClassLabel or integer column of --dataset_name holding the classes "
        '(default "label"). The digits have their digits, a --train_data_dir the names of its class folders '
        "(DIR/<class>/<image>, datasets' imagefolder convention).",
    )
    add("--resolution", type=int, help="Side of the square training images.")
    add(
        "--channels",
        type=int,
        choices=(1, 3),
        help="1 (grayscale) or 3 (RGB); images are converted. Defaults to 1 for the digits, 3 otherwise.",
    )
    add("--center_crop", action="store_true", help="Crop the centre square (default: a random square per image).")
    add(
        "--dataloader_num_workers",
        type=int,
        help="Worker processes decoding --train_data_dir / --dataset_name images per training process (default: "
        "min(4, CPUs / processes on this machine); 0 decodes in the training process). The batches do not depend "
        "on it.",
    )
    add(
        "--num_threads",
        type=int,
        help="torch threads of each process (torch.set_num_threads). Default: 1 for the embedded digits (the "
        "README's grid is bit-identical at 1 thread only, and more are slower at that size), else torch's choice "
        "(accelerate launch sets OMP_NUM_THREADS to the cores per process).",
    )
    add("--random_flip", action="store_true", help="Flip images horizontally at random (not for digits!).")
    add(
        "--dequantize",
        action=argparse.BooleanOptionalAction,
        help="Uniform dequantisation x = (255 x + u) / 256, u ~ U(0, 1), as in the paper.",
    )
    # Noise ladder (VE, --objective dsm)
    add(
        "--noise_ladder",
        choices=("explicit", "ncsnv2"),
        help="explicit: --sigma_max/--sigma_min/--num_noise_levels; ncsnv2: sigma_1 and L from the data (Song & Ermon "
        "2020). Default: ncsnv2 for --objective dsm unless --sigma_max or --num_noise_levels is given.",
    )
    add(
        "--score_model",
        help="--objective noise_classifier: a train_ncsn.py --output_dir whose ladder, sigma distribution and data "
        "(its training_args.json) the classifier is trained with, unless given here.",
    )
    add("--sigma_max", type=float, help="sigma_1 (default 1.0; explicit ladder, data in [-1, 1]).")
    add("--sigma_min", type=float, help="sigma_L (default 0.02 = the paper's 0.01 for [-1, 1] data).")
    add("--num_noise_levels", type=int, help="L (default 10; with ncsnv2 it is computed).")
    add(
        "--sigma_sampling",
        choices=("discrete", "log_uniform", "log_normal"),
        help="Training sigmas: discrete, a level of the ladder (the paper); log_uniform (the default with --objective "
        "dsm), log sigma uniform in [log sigma_L, log sigma_1] (score SDE's VE training), so the network is trained "
        "between the levels too and any ladder, of any length, can sample it; log_normal, log sigma ~ "
        "N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1] (EDM, Karras et al. 2022).",
    )
    add("--log_sigma_mean", type=float, help="P_mean of --sigma_sampling log_normal (EDM's -1.2).")
    add("--log_sigma_std", type=float, help="P_std of --sigma_sampling log_normal (EDM's 1.2).")
    add(
        "--sampler",
        choices=("predictor_corrector", "stochastic_heun", "annealed_langevin"),
        help="The sampler saved with a score model: predictor_corrector (the default; Song et al. 2021, "
        "reverse diffusion + --corrector_steps Langevin steps per level, --sampling_calls U-Net calls from sigma_1 to "
        "sigma_L), stochastic_heun (EDM's Algorithm 2, EDM's VE churn, --sampling_calls calls, one fewer if even) or "
        "annealed_langevin (Algorithm 1 on the training ladder, L x T calls). --objective epsilon saves diffusers' "
        "DPMSolverMultistepScheduler (DPM-Solver++) at 20 calls on its DDPM schedule (the best measured, "
        "docs/sampling.md).",
    )
    add(
        "--sampling_calls",
        type=int,
        help="U-Net calls of the saved predictor_corrector or stochastic_heun sampler.",
    )
    add("--corrector_steps", type=int, help="k, Langevin corrector steps per level (0: ancestral).")
    add("--snr", type=float, help="r, the corrector's signal-to-noise ratio (predictor_corrector).")
    add(
        "--sampling_sigma_max",
        type=float,
        help="The sigma predictor_corrector or stochastic_heun starts from (default: sigma_1 / 2 with --noise_ladder "
        "ncsnv2, whose "
        "sigma_1 is the largest pairwise distance of the data; sigma_1 otherwise). At most sigma_1.",
    )
    add("--steps_per_level", type=int, help="T, Langevin steps per level when sampling (default 20).")
    add(
        "--langevin_epsilon",
        type=float,
        help="Step size epsilon of annealed Langevin dynamics (default 4 * 2e-5 = the paper's, rescaled to [-1, 1]).",
    )
    add(
        "--final_denoise",
        action=argparse.BooleanOptionalAction,
        help="End sampling with the Tweedie denoising step x + sigma_L^2 s (NCSNv2).",
    )
    # VP (--objective epsilon)
    add("--num_train_timesteps", type=int, help="DDPM timesteps (--objective epsilon).")
    add("--ddpm_beta_schedule", help="DDPM beta schedule (--objective epsilon).")
    # Optimisation
    add("--output_dir", help="Where the pipeline, checkpoints, samples and logs go.")
    add(
        "--overwrite_output_dir",
        action="store_true",
        help="Start afresh even if --output_dir holds checkpoints or a saved pipeline (both are replaced). Deletes "
        "only the files an earlier run wrote (docs/security.md, Ownership); never another tool's checkpoint-*.",
    )
    add("--train_batch_size", type=int, help="Batch size per process.")
    add(
        "--num_epochs",
        type=int,
        help="Epochs, unless --max_train_steps is given (default: 3,000 steps for the digits preset, else 100 epochs).",
    )
    add("--max_train_steps", type=int, help="Optimizer steps; overrides --num_epochs.")
    add("--gradient_accumulation_steps", type=int)
    add(
        "--learning_rate",
        type=float,
        help="Peak learning rate (default by --model_preset: 2e-3 for tiny and digits, 2e-4 for cifar10).",
    )
    add(
        "--lr_scheduler",
        help='One of "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup".',
    )
    add("--lr_warmup_steps", type=int)
    add("--adam_beta1", type=float)
    add("--adam_beta2", type=float)
    add("--adam_weight_decay", type=float)
    add("--adam_epsilon", type=float)
    add("--max_grad_norm", type=float, help="Gradient clipping (0 disables).")
    add(
        "--use_ema",
        action=argparse.BooleanOptionalAction,
        help="Keep an EMA of the weights; it is what gets sampled and saved.",
    )
    add("--ema_inv_gamma", type=float)
    add("--ema_power", type=float)
    add("--ema_max_decay", type=float)
    add(
        "--ema_warmup",
        action=argparse.BooleanOptionalAction,
        help="Ramp the EMA decay up to --ema_max_decay; --no-ema_warmup keeps it constant from the first step.",
    )
    add(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        help="Defaults to accelerate's config (`accelerate config`).",
    )
    add(
        "--allow_tf32",
        action="store_true",
        help="Lets Ampere and newer GPUs run fp32 matmuls in TF32: faster, with a 10-bit mantissa in the products.",
    )
    add("--seed", type=int)
    # Logging, sampling, checkpoints
    add(
        "--report_to",
        "--logger",
        dest="report_to",
        help='Tracker of accelerate ("tensorboard", "wandb", "all", "none"); a JSON-lines log is always written.',
    )
    add(
        "--logging_dir",
        help="Relative to --output_dir. A folder outside it (absolute, ../) may be shared: each run logs to its own "
        "subfolder there, named after --output_dir.",
    )
    add("--logging_steps", type=int, help="Log (and check the loss is finite) every N steps.")
    add("--save_images_steps", type=int, help="Sample a grid every N steps (0: only at the end).")
    add("--num_sample_images", type=int, help="Images in each sample grid.")
    add(
        "--sample_grid_steps",
        type=int,
        help="U-Net calls of the chain that draws the sample grids (default: the saved sampler's own, e.g. "
        "L x T = 1000 with --recipe ncsn_v1); the saved pipeline keeps its sampler.",
    )
    add("--checkpointing_steps", type=int)
    add("--checkpoints_total_limit", type=int, help="Keep at most this many checkpoints.")
    add(
        "--resume_from_checkpoint",
        help='"latest" or a checkpoint-<step> folder (a bare name is looked up in --output_dir). Checkpoints past the '
        "resumed one are moved aside to abandoned-checkpoint-<step>-<time>.",
    )
    # Consistency distillation (--objective consistency_distillation)
    add("--teacher_model", help="The saved NCSN score pipeline (folder or Hub id) to distil.")
    add("--num_scales", type=int, help="N, levels of the Karras grid from the teacher's sigma_max to sigma_min (18).")
    add("--target_ema_rate", type=float, help="mu of the target network theta^- (0.95); not --ema_max_decay.")
    add("--distance", choices=("l2", "pseudo_huber"), help="d of the consistency loss (default l2).")
    add("--sigma_data", type=float, help="sigma_data of c_skip / c_out / c_in (0.5).")
    add(
        "--student_init",
        choices=("teacher", "random"),
        help="The student's weights: the teacher's where the architectures allow (the default), or fresh.",
    )
    add(
        "--quality_samples",
        type=int,
        help="Samples scored at 1 and 2 calls by the digits evaluator at the end, for the model card (500; 0 skips).",
    )
    # Hub
    add("--push_to_hub", action="store_true")
    add("--hub_model_id", help="Repository id (defaults to the name of --output_dir).")
    add(
        "--hub_token",
        help="Hub token; better leave it out and set HF_TOKEN or log in once with `hf auth login`: a flag is visible "
        "to every user of the machine (`ps`). Used for the upload only, never written to a file or the log; refused "
        "with --report_to wandb or all (W&B records the command line).",
    )
    add("--hub_private_repo", action="store_true")
    add("--local_rank", type=int, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainingConfig:
    """The command line as a resolved `TrainingConfig` (the recipe applied, every check run); exits with the message
    naming the flag when a check fails."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    try:
        return TrainingConfig(**given).resolve(explicit=set(given))
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None):
    config = parse_args(argv)
    try:
        train(config)
    except KeyboardInterrupt:  # Ctrl-C: one line on how to continue, not the traceback; 130 = 128 + SIGINT
        print(resume_hint(config.output_dir), file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
