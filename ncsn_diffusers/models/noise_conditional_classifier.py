"""A noise-conditional classifier p_phi(y | x, sigma): the class of data perturbed by N(0, sigma**2 I).

Its log-likelihood gradient grad_x log p_phi(y | x, sigma) turns an unconditional score model into a class-conditional
one (Song et al., 2021, Sec. 5 and App. I): s(x, sigma) + w grad_x log p_phi(y | x, sigma), see `guidance.py`. Like the
score U-Net ([`NCSNUNet2DModel`]) it embeds c_noise = log(sigma) with Gaussian Fourier features and feeds the
embedding to every ResNet block; it has the U-Net's down path only (on the input scaled by EDM's
c_in = 1 / sqrt(1 + sigma**2)), then a global average pool and a linear head.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import get_down_block
from diffusers.utils import BaseOutput

from .unet_ncsn import DOWN_BLOCK_TYPES, Float32GaussianFourierProjection, NCSNUNet2DModel


@dataclass
class NoiseConditionalClassifierOutput(BaseOutput):
    """
    Output of [`NoiseConditionalClassifier`].

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_classes)`):
            Unnormalised log-probabilities log p_phi(y | x, sigma) + const of every class.
    """

    logits: torch.Tensor


class NoiseConditionalClassifier(ModelMixin, ConfigMixin):
    r"""
    A classifier p_phi(y | x, sigma) of samples perturbed at noise level sigma, conditioned on sigma as
    [`NCSNUNet2DModel`] is (Fourier features of log sigma into every ResNet block).

    Parameters:
        sample_size (`int`, *optional*, defaults to `None`):
            Height and width of the samples it is trained on (informational; any size divisible by
            `2 ** (len(block_out_channels) - 1)` runs).
        in_channels (`int`, defaults to 1):
            Channels of the sample.
        num_classes (`int`, defaults to 10):
            K, the number of classes y in 0..K-1.
        block_out_channels (`tuple[int]`, defaults to `(16, 32, 64)`):
            Channels of each resolution; the sample is halved `len(block_out_channels) - 1` times.
        down_block_types (`tuple[str]`, defaults to `("DownBlock2D", "DownBlock2D", "DownBlock2D")`):
            Blocks, one per resolution, from `"DownBlock2D"`, `"AttnDownBlock2D"`, `"ResnetDownsampleBlock2D"`.
        layers_per_block (`int`, defaults to 1):
            ResNet blocks per resolution.
        norm_num_groups (`int`, defaults to 8):
            Groups of every GroupNorm; must divide every entry of `block_out_channels`.
        fourier_scale (`float`, defaults to 16.0):
            Standard deviation of the random frequencies of the log-sigma embedding (NCSN++'s value).
        dropout (`float`, defaults to 0.0):
            Dropout probability inside the ResNet blocks.
        class_names (`list[str]`, *optional*):
            The name of each class 0..K-1 (the folder names of an image-folder training set, say); informational.
    """

    _keep_in_fp32_modules = ["sigma_proj"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 1,
        num_classes: int = 10,
        block_out_channels: tuple[int, ...] = (16, 32, 64),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        fourier_scale: float = 16.0,
        dropout: float = 0.0,
        class_names: list[str] | None = None,
    ):
        super().__init__()
        self._check_config()
        channels = list(block_out_channels)
        temb_channels = 4 * channels[0]
        self.sigma_proj = Float32GaussianFourierProjection(channels[0], scale=fourier_scale, log=False)
        self.time_embedding = TimestepEmbedding(2 * channels[0], temb_channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            get_down_block(
                block_type,
                num_layers=layers_per_block,
                in_channels=channels[max(i - 1, 0)],
                out_channels=channels[i],
                temb_channels=temb_channels,
                add_downsample=i < len(channels) - 1,
                resnet_eps=1e-5,
                resnet_act_fn="silu",
                resnet_groups=norm_num_groups,
                attention_head_dim=channels[i],
                downsample_padding=1,
                dropout=dropout,
            )
            for i, block_type in enumerate(down_block_types)
        )
        self.act = nn.SiLU()
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(
        self, sample: torch.Tensor, sigma: torch.Tensor | float, return_dict: bool = True
    ) -> NoiseConditionalClassifierOutput | tuple:
        r"""
        Classifies perturbed samples.

        Args:
            sample (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                The perturbed sample x + sigma * z, in the score model's data range.
            sigma (`float` or `torch.Tensor`):
                The positive noise level: one for the batch, or one per sample (shape `(batch,)`).
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`NoiseConditionalClassifierOutput`] instead of a plain tuple.

        Returns:
            [`NoiseConditionalClassifierOutput`] or `tuple`: the logits, of shape `(batch, num_classes)`.
        """
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`sample` has shape {tuple(sample.shape)}, expected (batch, {self.config.in_channels}, height, "
                "width); pass images with `in_channels` channels."
            )
        sigma = NCSNUNet2DModel._sigma_per_sample(sigma, sample.shape[0], sample.device)  # (B,) float32
        emb = self.time_embedding(self.sigma_proj(torch.log(sigma)).to(sample.dtype))  # (B, 4 C_0)
        # EDM's c_in = 1 / sqrt(1 + sigma**2): inputs of order one at every noise level (for data of scale ~1)
        c_in = (1 + sigma**2).rsqrt().reshape(-1, 1, 1, 1).to(sample.dtype)
        hidden = self.conv_in(sample * c_in)
        for block in self.down_blocks:
            hidden, _ = block(hidden_states=hidden, temb=emb)
        # No GroupNorm before the pool: it would remove each channel's mean, and with it the image's brightness
        features = self.act(hidden).mean(dim=(2, 3))  # (B, C_last)
        logits = self.head(features)
        if not return_dict:
            return (logits,)
        return NoiseConditionalClassifierOutput(logits=logits)

    def _check_config(self):
        config = self.config
        if len(config.down_block_types) != len(config.block_out_channels):
            raise ValueError(
                f"`down_block_types` ({len(config.down_block_types)}) and `block_out_channels` "
                f"({len(config.block_out_channels)}) need one entry per resolution."
            )
        unknown = [block for block in config.down_block_types if block not in DOWN_BLOCK_TYPES]
        if unknown:
            raise ValueError(
                f"`down_block_types` has unsupported blocks {unknown}; choose from {list(DOWN_BLOCK_TYPES)}."
            )
        if any(channels % config.norm_num_groups for channels in config.block_out_channels):
            raise ValueError(
                f"`norm_num_groups`={config.norm_num_groups} must divide every entry of `block_out_channels`"
                f"={tuple(config.block_out_channels)}."
            )
        if isinstance(config.num_classes, bool) or not isinstance(config.num_classes, int) or config.num_classes < 2:
            raise ValueError(f"`num_classes`={config.num_classes!r} must be an integer >= 2.")
        if config.class_names is not None and len(config.class_names) != config.num_classes:
            raise ValueError(
                f"`class_names` has {len(config.class_names)} names for `num_classes`={config.num_classes}; pass one "
                "name per class, or none."
            )
