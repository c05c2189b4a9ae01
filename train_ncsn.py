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

from ncsn_diffusers.training import TrainingConfig, resume_hint, train
from ncsn_diffusers.training.command_line import add_config_flags


def build_parser() -> argparse.ArgumentParser:
    """One flag per `TrainingConfig` field, with the field's help and choices; no flag has a parser default, so the
    namespace holds the given ones only (the defaults are the dataclass's, and a recipe replaces only the flags not
    given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    add_config_flags(parser)
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
