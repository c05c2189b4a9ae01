"""The tiny stock diffusers U-Net that several tests sample with: 1x8x8, two resolutions, a few thousand weights."""

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
