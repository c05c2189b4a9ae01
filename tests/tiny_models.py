"""The tiny stock diffusers U-Nets that several tests sample with: 8x8, two resolutions, a few thousand weights (DDPM)
or a few hundred thousand (NCSN++)."""

import math

import torch
from diffusers import UNet2DModel


def tiny_ddpm_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def tiny_ncsnpp() -> UNet2DModel:
    """An NCSN++ UNet2DModel with the Hub folders' options (Fourier sigma embedding, Skip blocks with attention)."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 32),
        time_embedding_type="fourier",
        norm_eps=1e-6,
        mid_block_scale_factor=math.sqrt(2.0),
        norm_num_groups=None,
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
        up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"),
    )
