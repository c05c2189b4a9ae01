"""NCSNv2's score networks (Song & Ermon, 2020): RefineNets with no noise input, their output divided by sigma."""

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from .refinenet_blocks import InstanceNormPlusPlus2d, RefineNetBackbone, check_refinenet_config, check_refinenet_sample
from .unet_ncsn import NCSNUNet2DModel

# The authors' three depths: `NCSNv2` (CIFAR-10 32px, CelebA 64px), `NCSNv2Deeper` (LSUN 64-128px),
# `NCSNv2Deepest` (FFHQ 256px).
VARIANTS = {
    "ncsnv2": {"channel_multipliers": (1, 2, 2, 2), "dilations": (1, 1, 2, 4)},
    "ncsnv2_deeper": {"channel_multipliers": (1, 2, 2, 4, 4), "dilations": (1, 1, 1, 2, 4)},
    "ncsnv2_deepest": {"channel_multipliers": (1, 2, 2, 2, 4, 4), "dilations": (1, 1, 1, 1, 2, 4)},
}


class NCSNv2Model(ModelMixin, ConfigMixin):
    r"""
    The NCSNv2 network s_theta(x, sigma) = F_theta(x) / sigma (Technique 3 of Song & Ermon, 2020): a dilated RefineNet
    with instance normalisation++ that never sees the noise level, whose output is divided by sigma.

    Because sigma only enters through the division, the network is defined for every sigma > 0: it samples on any
    ladder. [`~NCSNv2Model.from_variant`] builds the authors' `NCSNv2`, `NCSNv2Deeper` and `NCSNv2Deepest`.

    Parameters:
        sample_size (`int`, *optional*, defaults to `None`):
            Height and width of the (square) training images; read by pipelines to draw x_0.
        in_channels (`int`, defaults to 3):
            Channels of the sample.
        base_channels (`int`, defaults to 128):
            Channels of the first stage (`ngf` of the authors' configs).
        channel_multipliers (`tuple[int]`, defaults to `(1, 2, 2, 2)`):
            Channels of each encoder stage, in multiples of `base_channels`.
        dilations (`tuple[int]`, defaults to `(1, 1, 2, 4)`):
            Dilation of each stage's convolutions; a later stage with dilation 1 halves the resolution instead.
        rescale_input (`bool`, defaults to `True`):
            Map data in [0, 1] to 2 x - 1 before the first convolution, as the authors' network does unless their
            config says `rescaled: true` (data already in [-1, 1]); pair with the scheduler's `data_range`.
    """

    _skip_layerwise_casting_patterns = ["norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_multipliers: tuple[int, ...] = (1, 2, 2, 2),
        dilations: tuple[int, ...] = (1, 1, 2, 4),
        rescale_input: bool = True,
    ):
        super().__init__()
        check_refinenet_config(base_channels, channel_multipliers, dilations)
        act = nn.ELU()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.backbone = RefineNetBackbone(
            base_channels,
            channel_multipliers,
            dilations,
            InstanceNormPlusPlus2d,
            refine_norm=None,
            act=act,
            pool="max",
        )
        self.norm_out = InstanceNormPlusPlus2d(base_channels)
        self.act = act
        self.conv_out = nn.Conv2d(base_channels, in_channels, 3, padding=1)

    @classmethod
    def from_variant(cls, name: str, **config) -> "NCSNv2Model":
        r"""
        Builds a freshly initialised network of one of the authors' depths.

        Args:
            name (`str`):
                `"ncsnv2"` (32-64px), `"ncsnv2_deeper"` (64-128px) or `"ncsnv2_deepest"` (256px).
            config:
                Further config values, e.g. `sample_size=32`, `base_channels=128`.
        """
        if name not in VARIANTS:
            raise ValueError(f"Unknown NCSNv2 variant {name!r}; choose one of {sorted(VARIANTS)}.")
        return cls(**{**VARIANTS[name], **config})

    def forward(
        self, sample: torch.Tensor, sigma: torch.Tensor | float, return_dict: bool = True
    ) -> UNet2DOutput | tuple:
        r"""
        Estimates the score s_theta(sample, sigma) = F_theta(sample) / sigma.

        Args:
            sample (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                The perturbed sample x + sigma * z, data in [0, 1] (with `rescale_input`).
            sigma (`float` or `torch.Tensor`):
                The positive noise level: one for the batch or one per sample.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`~models.unets.unet_2d.UNet2DOutput`] instead of a plain tuple.

        Returns:
            [`~models.unets.unet_2d.UNet2DOutput`] or `tuple`: the score estimate, shaped like `sample`.
        """
        check_refinenet_sample(sample, self.config.in_channels, self.config.dilations)
        sigma = NCSNUNet2DModel._sigma_per_sample(sigma, sample.shape[0], sample.device)  # (B,) float32
        h = 2 * sample - 1 if self.config.rescale_input else sample
        h = self.backbone(self.conv_in(h), None)
        output = self.conv_out(self.act(self.norm_out(h)))
        output = output / sigma.reshape(-1, 1, 1, 1).to(output.dtype)  # Technique 3
        if not return_dict:
            return (output,)
        return UNet2DOutput(sample=output)
