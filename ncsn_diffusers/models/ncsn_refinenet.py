"""NCSN v1's score network (Song & Ermon, 2019): a dilated RefineNet with conditional instance normalisation++."""

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..schedulers.noise_ladders import geometric_sigmas
from .refinenet_blocks import (
    ConditionalInstanceNormPlusPlus2d,
    RefineNetBackbone,
    check_refinenet_config,
    check_refinenet_sample,
)
from .unet_ncsn import NCSNUNet2DModel

# Relative distance within which a sigma counts as a rung of the ladder (neighbouring rungs differ by far more).
LADDER_RTOL = 1e-5


class NCSNRefineNet(ModelMixin, ConfigMixin):
    r"""
    The NCSN v1 network s_theta(x, sigma_i): a RefineNet with dilated convolutions whose every normalisation is a
    conditional instance normalisation++ with one embedding row per noise level sigma_i (`CondRefineNetDilated` of
    the authors' code, appendix B.1 of the paper).

    The network conditions on the level index i, not on sigma: it keeps its ladder sigma_1 > ... > sigma_L in the
    config and maps each sigma it is called with to its rung (a sigma off the ladder is an error). Its output is the
    score itself (no division by sigma).

    Parameters:
        sample_size (`int`, *optional*, defaults to `None`):
            Height and width of the (square) training images; read by pipelines to draw x_0.
        in_channels (`int`, defaults to 3):
            Channels of the sample (1 for MNIST).
        base_channels (`int`, defaults to 128):
            Channels of the first stage (`ngf` of the authors' config: 128 for CIFAR-10 and CelebA, 64 for MNIST).
        channel_multipliers (`tuple[int]`, defaults to `(1, 2, 2, 2)`):
            Channels of each encoder stage, in multiples of `base_channels`.
        dilations (`tuple[int]`, defaults to `(1, 1, 2, 4)`):
            Dilation of each stage's convolutions; a later stage with dilation 1 halves the resolution instead.
        sigma_max (`float`, defaults to 1.0):
            sigma_1, the largest noise level of the ladder (`sigma_begin` of the authors' config).
        sigma_min (`float`, defaults to 0.01):
            sigma_L, the smallest noise level (`sigma_end`).
        num_noise_levels (`int`, defaults to 10):
            L, the number of noise levels and of embedding rows (`num_classes`).
        rescale_input (`bool`, defaults to `True`):
            Map data in [0, 1] to 2 x - 1 before the first convolution, as the authors' network does
            (`logit_transform: false`); pair with a scheduler whose `data_range` is (0, 1).
    """

    _skip_layerwise_casting_patterns = ["norm", "embed"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_multipliers: tuple[int, ...] = (1, 2, 2, 2),
        dilations: tuple[int, ...] = (1, 1, 2, 4),
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        num_noise_levels: int = 10,
        rescale_input: bool = True,
    ):
        super().__init__()
        check_refinenet_config(base_channels, channel_multipliers, dilations)
        if not 0 < sigma_min < sigma_max or num_noise_levels < 2:
            raise ValueError(
                f"The ladder needs 0 < sigma_min < sigma_max and at least 2 levels, got sigma_min={sigma_min}, "
                f"sigma_max={sigma_max}, num_noise_levels={num_noise_levels}."
            )

        def norm(channels: int) -> nn.Module:
            return ConditionalInstanceNormPlusPlus2d(channels, num_noise_levels)

        act = nn.ELU()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.backbone = RefineNetBackbone(
            base_channels, channel_multipliers, dilations, norm, refine_norm=norm, act=act, pool="avg"
        )
        self.norm_out = norm(base_channels)
        self.act = act
        self.conv_out = nn.Conv2d(base_channels, in_channels, 3, padding=1)

    @property
    def sigmas(self) -> torch.Tensor:
        """The ladder sigma_1 > ... > sigma_L (float32, CPU) of the config, as the scheduler computes it."""
        # Not a buffer: `model.to(torch.bfloat16)` would round the rungs and no float32 sigma would match them.
        config = self.config
        return geometric_sigmas(config.sigma_max, config.sigma_min, config.num_noise_levels).float().cpu()

    def noise_level_index(self, sigma: torch.Tensor | float, batch_size: int) -> torch.Tensor:
        r"""
        Maps sigma to the index i of its rung sigma_i on the configured ladder.

        Args:
            sigma (`float` or `torch.Tensor`):
                One noise level for the batch or one per sample.
            batch_size (`int`):
                The batch size.

        Returns:
            `torch.Tensor`: the (batch_size,) long tensor of level indices.
        """
        sigmas = self.sigmas.to(self.device)
        # a rung rounded to a half-precision sigma is off by up to that dtype's eps (bf16: 0.4%; a fixed 1e-5 tolerance refused every bf16 rung)
        is_low_precision = isinstance(sigma, torch.Tensor) and sigma.is_floating_point()
        rtol = max(LADDER_RTOL, torch.finfo(sigma.dtype).eps) if is_low_precision else LADDER_RTOL
        sigma = NCSNUNet2DModel._sigma_per_sample(sigma, batch_size, sigmas.device)
        level = (sigma[:, None].log() - sigmas[None, :].log()).abs().argmin(dim=1)
        off = ~torch.isclose(sigmas[level], sigma, rtol=rtol, atol=0.0)
        if off.any():
            raise ValueError(
                f"sigma={sigma[off][0].item():.6g} is not on this network's ladder ({self.config.num_noise_levels} "
                f"geometric levels from {self.config.sigma_max} to {self.config.sigma_min}); NCSN v1 has one "
                "embedding per level, so sample with a scheduler of the same sigma_max, sigma_min and "
                "num_noise_levels (and no num_inference_steps below L)."
            )
        return level

    def forward(
        self, sample: torch.Tensor, sigma: torch.Tensor | float, return_dict: bool = True
    ) -> UNet2DOutput | tuple:
        r"""
        Estimates the score s_theta(sample, sigma_i).

        Args:
            sample (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                The perturbed sample x + sigma_i * z, data in [0, 1] (with `rescale_input`).
            sigma (`float` or `torch.Tensor`):
                The noise level sigma_i, one of the ladder's: one for the batch or one per sample.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`~models.unets.unet_2d.UNet2DOutput`] instead of a plain tuple.

        Returns:
            [`~models.unets.unet_2d.UNet2DOutput`] or `tuple`: the score estimate, shaped like `sample`.
        """
        check_refinenet_sample(sample, self.config.in_channels, self.config.dilations)
        level = self.noise_level_index(sigma, sample.shape[0])
        h = 2 * sample - 1 if self.config.rescale_input else sample
        h = self.backbone(self.conv_in(h), level)
        output = self.conv_out(self.act(self.norm_out(h, level)))
        if not return_dict:
            return (output,)
        return UNet2DOutput(sample=output)
