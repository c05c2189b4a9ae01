"""diffusers' `UNet2DModel` in the layout of the Hub's ScoreSdeVe folders (google/ncsnpp-*): NCSN++ with Gaussian
Fourier features of log sigma, Skip down/up blocks with FIR resampling and an output pyramid, BigGAN-style residual
blocks (GroupNorm of min(C / 4, 32) groups, eps 1e-6), the mid block's sum scaled by 1 / sqrt(2).

Called as `unet(x, sigma).sample` with sigma itself as the timestep (its Fourier embedding takes log sigma), it returns
F(x, log sigma) / sigma: the score s(x, sigma), which is what the package's pipelines and diffusers' own
`ScoreSdeVePipeline` expect. With `center_input_sample=True` it maps its [0, 1] input to 2x - 1 first, as the authors'
NCSN++ does for uncentred data (`data.centered = False`).

diffusers' Skip blocks fix two things: their image pyramid has 3 channels (`skip_conv` is hard-coded to RGB, as is
`ScoreSdeVePipeline`'s sample), and their attention normalises over 32 groups, so a resolution with attention needs a
multiple of 32 channels.
"""

import math

from diffusers import UNet2DModel

SKIP_CHANNELS = 3
ATTENTION_GROUPS = 32


def score_sde_ve_unet(
    sample_size: int,
    block_out_channels: tuple[int, ...],
    attention: tuple[bool, ...],
    layers_per_block: int,
    in_channels: int = SKIP_CHANNELS,
    dropout: float = 0.0,
    center_input_sample: bool = True,
    mid_block_attention: bool = True,
) -> UNet2DModel:
    """An NCSN++ `UNet2DModel` as the google/ncsnpp folders hold it.

    Args:
        sample_size (`int`): side of the square images.
        block_out_channels (`tuple[int]`): channels per resolution, from the full one down.
        attention (`tuple[bool]`): self-attention at each of those resolutions (`AttnSkip` blocks).
        layers_per_block (`int`): residual blocks per resolution going down (one more going up).
        in_channels (`int`, defaults to 3): must be 3, the Skip blocks' pyramid.
        dropout (`float`): dropout of the residual blocks.
        center_input_sample (`bool`, defaults to `True`): 2x - 1 on the input (data in [0, 1]).
        mid_block_attention (`bool`, defaults to `True`): attention in the mid block.

    Raises:
        `ValueError`: for another channel count, or attention at a width that is not a multiple of 32.
    """
    if in_channels != SKIP_CHANNELS:
        raise ValueError(
            f"diffusers' Skip blocks (the google/ncsnpp layout) take {SKIP_CHANNELS} channels, not {in_channels}: "
            "their image pyramid is hard-coded to RGB, as is ScoreSdeVePipeline's sample."
        )
    widths = [c for c, a in zip(block_out_channels, attention) if a]
    if mid_block_attention:
        widths.append(block_out_channels[-1])
    if any(c % ATTENTION_GROUPS for c in widths):
        raise ValueError(
            f"diffusers' AttnSkip blocks normalise over {ATTENTION_GROUPS} groups: attention needs a multiple of "
            f"{ATTENTION_GROUPS} channels, got {widths}."
        )
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple("AttnSkipDownBlock2D" if a else "SkipDownBlock2D" for a in attention),
        up_block_types=tuple("AttnSkipUpBlock2D" if a else "SkipUpBlock2D" for a in reversed(attention)),
        time_embedding_type="fourier",
        center_input_sample=center_input_sample,
        act_fn="silu",
        attention_head_dim=None,  # one head over all channels, as NCSN++
        norm_num_groups=None,  # min(C / 4, 32) groups per block, as the Skip blocks take it
        norm_eps=1e-6,
        mid_block_scale_factor=math.sqrt(2.0),
        downsample_padding=1,
        dropout=dropout,
        add_attention=mid_block_attention,
    )
