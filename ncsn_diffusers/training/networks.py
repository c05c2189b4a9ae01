"""The network to train and the noise scheduler saved with it, built from a resolved `TrainingConfig`."""

import torch
from diffusers import UNet2DModel

from ..models import NCSNUNet2DModel
from ..models.score_sde_ve_unet import score_sde_ve_unet
from ..models.unet_ncsn import PRESETS
from ..schedulers import AnnealedLangevinScheduler
from ..schedulers.ncsnv2_ladder_design import ncsnv2_scheduler_config
from .data import ladder_sample, model_data_range
from .recipes import build_paper_network


def build_ncsn_unet(args) -> NCSNUNet2DModel:
    """The score network s_theta(x, sigma): `NCSNUNet2DModel` of `--model_preset` at the run's size, EDM-preconditioned
    under `--preconditioning edm`."""
    preconditioning = {"preconditioning": "edm", "sigma_data": args.sigma_data} if args.preconditioning else {}
    return NCSNUNet2DModel(**preset_at_resolution(args), **preconditioning)


def build_ddpm_unet(args) -> UNet2DModel:
    """A stock `UNet2DModel` with `--model_preset`'s blocks and DDPM's positional embedding (epsilon models and
    consistency students)."""
    preset = preset_at_resolution(args)
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


def preset_at_resolution(args) -> dict:
    """`--model_preset`'s settings with the run's `sample_size` and `in_channels`, once the resolution is checked."""
    preset = dict(PRESETS[args.model_preset])
    factor = 2 ** (len(preset["block_out_channels"]) - 1)
    if args.resolution % factor:
        raise ValueError(
            f"--resolution {args.resolution} cannot be taken by --model_preset {args.model_preset}, which halves the "
            f"image {factor // 2 or 1} time(s) (factor {factor}); use a multiple of {factor}, e.g. "
            f"{max(factor, round(args.resolution / factor) * factor)}."
        )
    preset.update(sample_size=args.resolution, in_channels=args.channels)
    return preset


def build_ncsnpp_unet(args) -> UNet2DModel:
    """`--model_type ncsnpp`: diffusers' NCSN++ `UNet2DModel` in the google/ncsnpp layout with `--model_preset`'s
    widths and depth, attention where the preset has it, taking [0, 1] data (`center_input_sample`)."""
    preset = preset_at_resolution(args)
    return score_sde_ve_unet(
        sample_size=args.resolution,
        block_out_channels=preset["block_out_channels"],
        attention=tuple(block.startswith("Attn") for block in preset["down_block_types"]),
        layers_per_block=preset["layers_per_block"],
        in_channels=args.channels,
        dropout=preset.get("dropout", 0.0),
        mid_block_attention=preset.get("add_attention", True),
    )


def build_paper_unet(args, noise_scheduler: AnnealedLangevinScheduler) -> torch.nn.Module:
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


def build_noise_scheduler(args, images, noise_space: str) -> AnnealedLangevinScheduler:
    """The scheduler saved with the model: the VE ladder (explicit or NCSNv2) or, for `noise_space="vp"` (the
    objective's), DDPM's schedule in VP coordinates.

    `images` is the training set (a tensor, or a streamed dataset: see [`ladder_sample`]); only NCSNv2's ladder
    reads it.
    """
    common = dict(
        steps_per_level=args.steps_per_level,
        epsilon=args.langevin_epsilon,
        final_denoise=args.final_denoise,
        data_range=model_data_range(args),
    )
    if noise_space == "vp":
        return AnnealedLangevinScheduler(
            noise_space="vp",
            prediction_type="epsilon",
            num_noise_levels=args.num_noise_levels,
            num_train_timesteps=args.num_train_timesteps,
            beta_schedule=args.ddpm_beta_schedule,
            **common,
        )
    if args.noise_ladder == "ncsnv2":
        ladder = ncsnv2_scheduler_config(
            ladder_sample(images, args),
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
