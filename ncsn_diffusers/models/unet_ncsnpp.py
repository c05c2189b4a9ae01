"""NCSN++ and DDPM++, the U-Nets of score_sde (Song et al., "Score-Based Generative Modeling through Stochastic
Differential Equations", ICLR 2021), as a score network s(x, sigma) in VE coordinates.

One network covers every family the authors release (`model.name = 'ncsnpp'` in their configs): NCSN++ (BigGAN
residual blocks, FIR resampling, the input pyramid "residual" or "input_skip", the output pyramid "output_skip", Gaussian
Fourier features of log sigma, output divided by sigma) and DDPM++ (no FIR, no pyramids, sinusoidal embedding of
999 t), trained with the VE, VP or sub-VP SDE, continuous or discrete. Whatever the SDE, `forward(x, sigma)` takes a VE
sample and noise level and returns the VE score, which is what every sampler of this package steps with:

- VE continuous: the network sees sigma; VE discrete (SMLD): the index of the nearest rung of its ladder, divided by
  that rung's sigma, as the authors' `get_score_fn` rounds t;
- VP / sub-VP: t = t(sigma), x_t = alpha(t) x_VE (`score_sde_noise.py`), the network's epsilon gives
  s(x_t, t) = -epsilon / std(t) and s_VE = alpha s(x_t, t). The network's condition (999 t, or the DDPM step k) and
  std(t) are computed in float32 as the authors compute them, so that the score matches theirs at the same t.
"""

import math

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..schedulers.noise_ladders import geometric_sigmas
from .fir_resampling import FIRDownsampleConv2d
from .ncsnpp_blocks import (
    ACTIVATIONS,
    AttentionBlock,
    Combine,
    Downsample,
    ResnetBlock,
    Upsample,
    conv3x3,
    downsample,
    group_norm,
    residual_sum,
    sinusoidal_embedding,
    upsample,
)
from .score_sde_noise import SDES, discrete_vp_tables, log_mean_coeff, time_from_sigma
from .unet_ncsn import Float32GaussianFourierProjection

CHOICES = {
    "resblock_type": ("biggan", "ddpm"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
    "nonlinearity": tuple(ACTIVATIONS),
    "sde": SDES,
}


class DownLevel(nn.Module):
    """One resolution going down: res blocks (each followed by attention at `attention_resolutions`), the x2
    down-sampling, and the input pyramid's layer at the new resolution."""

    def __init__(self, res_blocks, attentions, downsample=None, pyramid=None):
        super().__init__()
        self.res_blocks = nn.ModuleList(res_blocks)
        self.attentions = nn.ModuleList(attentions)
        self.downsample = downsample
        self.pyramid = pyramid


class UpLevel(nn.Module):
    """One resolution going up: res blocks on the concatenated skips, attention, the output pyramid's layers, and the
    x2 up-sampling to the next level."""

    def __init__(self, res_blocks, attention=None, pyramid_norm=None, pyramid_conv=None, pyramid_upsample=None,
                 upsample=None):  # fmt: skip
        super().__init__()
        self.res_blocks = nn.ModuleList(res_blocks)
        self.attention = attention
        self.pyramid_norm = pyramid_norm
        self.pyramid_conv = pyramid_conv
        self.pyramid_upsample = pyramid_upsample
        self.upsample = upsample


class NCSNppModel(ModelMixin, ConfigMixin):
    r"""
    score_sde's NCSN++ / DDPM++ U-Net, returning the VE score s(x, sigma) (see the module docstring for each SDE).

    The architecture arguments are those of the authors' `config.model` (and `config.data`), under the same names
    where they are specific to NCSN++.

    Parameters:
        sample_size (`int`, defaults to 32): `data.image_size`.
        in_channels (`int`, defaults to 3): `data.num_channels`.
        base_channels (`int`, defaults to 128): `nf`.
        channel_multipliers (`tuple[int]`, defaults to `(1, 2, 2, 2)`): `ch_mult`, one per resolution.
        num_res_blocks (`int`, defaults to 4): per resolution going down (one more going up); 8 in the "deep" configs.
        attention_resolutions (`tuple[int]`, defaults to `(16,)`): `attn_resolutions`, the image sizes with attention.
        dropout (`float`, defaults to 0.1), resample_with_conv (`bool`, defaults to `True`): `resamp_with_conv`.
        fir (`bool`), fir_kernel (`tuple[int]`, defaults to `(1, 3, 3, 1)`): FIR resampling and its 1-D taps.
        skip_rescale (`bool`, defaults to `True`): divide residual sums by sqrt(2).
        resblock_type (`str`, defaults to `"biggan"`): `"biggan"` or `"ddpm"`.
        progressive (`str`), progressive_input (`str`), progressive_combine (`str`): the output pyramid (`"none"`,
            `"output_skip"`, `"residual"`), the input pyramid (`"none"`, `"input_skip"`, `"residual"`) and how
            `input_skip` joins it (`"sum"`, `"cat"`).
        embedding_type (`str`, defaults to `"fourier"`): Gaussian Fourier features of log sigma or the sinusoidal
            embedding of the time condition (`"positional"`); fourier_scale (`float`, defaults to 16): their scale.
        init_scale (`float`, defaults to 0.0): scale of the initial weights of each residual branch's last layer and
            of the output convolution (0 means 1e-10), as in the authors' initialisation.
        conv_size (`int`, defaults to 3): only 3, the authors' only value.
        nonlinearity (`str`, defaults to `"swish"`), conditional (`bool`, defaults to `True`): the activation, and
            whether the network is conditioned on the noise at all.
        scale_by_sigma (`bool`, defaults to `True`): divide the output by sigma (the authors' VE models).
        centered (`bool`, defaults to `False`): `data.centered`; when `False` the data lie in [0, 1] and the network
            sees 2x - 1.
        sde (`str`, defaults to `"ve"`), continuous (`bool`, defaults to `True`): `training.sde` (`"ve"`, `"vp"`,
            `"subvp"`) and `training.continuous`.
        sigma_min (`float`), sigma_max (`float`), beta_min (`float`), beta_max (`float`), num_scales (`int`): the SDE
            (`model.sigma_min`, ...); `num_scales` is N of the discrete ladders.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_multipliers: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attention_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.1,
        resample_with_conv: bool = True,
        fir: bool = True,
        fir_kernel: tuple[int, ...] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        init_scale: float = 0.0,
        conv_size: int = 3,
        nonlinearity: str = "swish",
        conditional: bool = True,
        scale_by_sigma: bool = True,
        centered: bool = False,
        sde: str = "ve",
        continuous: bool = True,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        self._check_config()
        nf, taps = base_channels, tuple(fir_kernel)
        self.act = act = ACTIVATIONS[nonlinearity]()
        temb = 4 * nf if conditional else None
        num_levels = len(channel_multipliers)
        resolutions = [sample_size // 2**i for i in range(num_levels)]

        def res_block(cin, cout=None, resample=None):
            return ResnetBlock(cin, cout or cin, temb, act, skip_rescale, dropout, resample, fir, taps)

        self.time_embedding = None
        if embedding_type == "fourier":  # its frequencies W stay float32 under model.to(bfloat16)
            self.time_embedding = Float32GaussianFourierProjection(nf, scale=fourier_scale, log=False)
        embed_dim = 2 * nf if embedding_type == "fourier" else nf
        self.time_mlp = (
            nn.ModuleList([nn.Linear(embed_dim, 4 * nf), nn.Linear(4 * nf, 4 * nf)]) if conditional else None
        )
        self.conv_in = conv3x3(in_channels, nf)

        skip_channels, channels, pyramid_channels = [nf], nf, in_channels
        self.down_levels = nn.ModuleList()
        for i, mult in enumerate(channel_multipliers):
            blocks, attentions = [], []
            for _ in range(num_res_blocks):
                blocks.append(res_block(channels, nf * mult))
                channels = nf * mult
                if resolutions[i] in attention_resolutions:
                    attentions.append(AttentionBlock(channels, skip_rescale))
                skip_channels.append(channels)
            down = pyramid = None
            if i != num_levels - 1:
                down = (
                    Downsample(channels, channels, resample_with_conv, fir, taps)
                    if resblock_type == "ddpm"
                    else res_block(channels, resample="down")
                )
                if progressive_input == "input_skip":
                    pyramid = Combine(pyramid_channels, channels, progressive_combine)
                    channels *= 2 if progressive_combine == "cat" else 1
                elif progressive_input == "residual":
                    pyramid = Downsample(pyramid_channels, channels, True, fir, taps)
                    pyramid_channels = channels
                skip_channels.append(channels)
            self.down_levels.append(DownLevel(blocks, attentions, down, pyramid))

        self.mid_block1 = res_block(channels)
        self.mid_attention = AttentionBlock(channels, skip_rescale)
        self.mid_block2 = res_block(channels)

        self.up_levels = nn.ModuleList()
        pyramid_channels = 0
        for i in reversed(range(num_levels)):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_block(channels + skip_channels.pop(), nf * channel_multipliers[i]))
                channels = nf * channel_multipliers[i]
            level = UpLevel(
                blocks, AttentionBlock(channels, skip_rescale) if resolutions[i] in attention_resolutions else None
            )
            if progressive == "output_skip" or (progressive == "residual" and i == num_levels - 1):
                level.pyramid_norm = group_norm(channels)
                level.pyramid_conv = conv3x3(channels, in_channels if progressive == "output_skip" else channels)
                pyramid_channels = in_channels if progressive == "output_skip" else channels
            elif progressive == "residual":
                level.pyramid_upsample = Upsample(pyramid_channels, channels, True, fir, taps)
                pyramid_channels = channels
            if i != 0:
                level.upsample = (
                    Upsample(channels, channels, resample_with_conv, fir, taps)
                    if resblock_type == "ddpm"
                    else res_block(channels, resample="up")
                )
            self.up_levels.append(level)

        self.norm_out = self.conv_out = None
        if progressive != "output_skip":
            self.norm_out = group_norm(channels)
            self.conv_out = conv3x3(channels, in_channels)
        self._init_weights()

    def _check_config(self):
        config = self.config
        for name, choices in CHOICES.items():
            if config[name] not in choices:
                raise ValueError(f"{name}={config[name]!r} is not supported; choose one of {list(choices)}.")
        if config.conv_size != 3:
            raise ValueError(f"conv_size={config.conv_size}: NCSN++ uses 3x3 convolutions only (conv_size=3).")
        if config.embedding_type == "fourier" and not config.continuous:
            raise ValueError("embedding_type='fourier' needs continuous=True (the authors' rule): use 'positional'.")
        if config.sde != "ve" and config.scale_by_sigma:
            raise ValueError(f"scale_by_sigma=True divides by a VE sigma; the authors' {config.sde} models set False.")
        if config.sde == "subvp" and not config.continuous:
            raise ValueError("sub-VP has no discrete form in score_sde (its score function is continuous): set True.")

    def _init_weights(self):
        """The authors' initialisation: variance scaling (fan_avg, uniform) for weights, zero biases, and `init_scale`
        for the last layer of each residual branch and the output convolution."""

        def variance_scaling(weight: torch.Tensor, scale: float):
            scale = 1e-10 if scale == 0 else scale
            fan_in, fan_out = weight.shape[1] * weight[0, 0].numel(), weight.shape[0] * weight[0, 0].numel()
            bound = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
            nn.init.uniform_(weight, -bound, bound)

        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, FIRDownsampleConv2d)):
                variance_scaling(module.weight.data, 1.0)
                nn.init.zeros_(module.bias)
        last_layers = [self.conv_out, *(lvl.pyramid_conv for lvl in self.up_levels)]
        for module in self.modules():
            if isinstance(module, ResnetBlock):
                last_layers.append(module.conv2)
            elif isinstance(module, AttentionBlock):
                last_layers.append(module.proj_out)
        for layer in last_layers:
            if layer is not None:
                variance_scaling(layer.weight.data, self.config.init_scale)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float, return_dict: bool = True
    ) -> UNet2DOutput | tuple:
        r"""
        The VE score s(sample, sigma) of the authors' score function.

        Args:
            sample (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                x_VE = x_0 + sigma z, in the data range ([0, 1] unless `centered`, else [-1, 1]).
            timestep (`float` or `torch.Tensor`):
                sigma > 0, the VE noise level: one for the batch or one per sample (float64 keeps the time map exact).
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`~models.unets.unet_2d.UNet2DOutput`] instead of a plain tuple.

        Returns:
            [`~models.unets.unet_2d.UNet2DOutput`] or `tuple`: the score, shaped and typed like `sample`.
        """
        sigma = torch.as_tensor(timestep, device=sample.device)
        sigma = (sigma if sigma.is_floating_point() else sigma.double()).reshape(-1)
        if sigma.numel() not in (1, sample.shape[0]):
            raise ValueError(
                f"timestep has {sigma.numel()} sigmas for a batch of {sample.shape[0]}; pass 1 or one each."
            )
        sigma = sigma.expand(sample.shape[0])
        if not torch.all(sigma > 0):
            raise ValueError(f"timestep is sigma and must be positive, got a minimum of {sigma.min()}.")
        config = self.config
        if config.sde == "ve":
            condition, used_sigma = self._ve_condition(sigma)
            output = self._network(sample, condition)
            if config.scale_by_sigma:
                output = output / used_sigma.reshape(-1, 1, 1, 1)
            return self._output(output.to(sample.dtype), return_dict)
        condition, alpha, std = self._vp_condition(sigma)
        epsilon = self._network((alpha.reshape(-1, 1, 1, 1) * sample).to(sample.dtype), condition)
        score = -epsilon / std.reshape(-1, 1, 1, 1)  # the authors' score of x_t
        return self._output((alpha.reshape(-1, 1, 1, 1) * score).to(sample.dtype), return_dict)

    @staticmethod
    def _output(output, return_dict):
        return UNet2DOutput(sample=output) if return_dict else (output,)

    def _ve_condition(self, sigma: torch.Tensor):
        """(what the network embeds, the sigma it divides by): sigma itself, or the nearest rung k of the ladder."""
        config = self.config
        if config.continuous:
            return sigma.float(), sigma.float()
        ladder = geometric_sigmas(config.sigma_max, config.sigma_min, config.num_scales).to(sigma.device)
        position = (
            (config.num_scales - 1)
            * torch.log(config.sigma_max / sigma.double())
            / math.log(config.sigma_max / config.sigma_min)
        )
        k = position.round().long().clamp(0, config.num_scales - 1)
        return k.float(), ladder[k]

    def _vp_condition(self, sigma: torch.Tensor):
        """(the network's condition, alpha, std) at the VP / sub-VP time of sigma, float32 as the authors'."""
        config = self.config
        if not config.continuous:  # DDPM step k with the nearest sigma_k = std_k / alpha_k
            sqrt_alphas, sqrt_1m_alphas = (table.to(sigma.device) for table in discrete_vp_tables(
                config.beta_min, config.beta_max, config.num_scales
            ))  # fmt: skip
            log_sigmas = torch.log(sqrt_1m_alphas.double() / sqrt_alphas.double())
            k = (log_sigmas[None, :] - torch.log(sigma.double())[:, None]).abs().argmin(dim=1)
            return k.float(), sqrt_alphas[k], sqrt_1m_alphas[k]
        t = time_from_sigma(config.sde, sigma, beta_min=config.beta_min, beta_max=config.beta_max).float()
        log_alpha = log_mean_coeff(t, config.beta_min, config.beta_max)  # float32, as theirs
        std = torch.sqrt(1.0 - torch.exp(2.0 * log_alpha)) if config.sde == "vp" else 1.0 - torch.exp(2.0 * log_alpha)
        return t * 999, torch.exp(log_alpha), std

    def _network(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The authors' `NCSNpp.forward` before its division by sigma: x (B, C, H, W), condition (B,)."""
        temb = self._time_embedding(condition, x.dtype)
        if not self.config.centered:
            x = 2 * x - 1.0
        skips = self._encode(x, temb)
        h = self.mid_block2(self.mid_attention(self.mid_block1(skips[-1], temb)), temb)
        return self._decode(h, skips, temb)

    def _time_embedding(self, condition: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        if self.time_embedding is not None:
            temb = self.time_embedding(torch.log(condition))
        else:
            temb = sinusoidal_embedding(condition, self.config.base_channels)
        if self.time_mlp is None:
            return None
        return self.time_mlp[1](self.act(self.time_mlp[0](temb.to(dtype))))

    def _encode(self, x: torch.Tensor, temb: torch.Tensor | None) -> list[torch.Tensor]:
        """The down path; returns every skip activation, the last one the input of the middle blocks."""
        config = self.config
        pyramid = x if config.progressive_input != "none" else None
        skips = [self.conv_in(x)]
        for level in self.down_levels:
            for j, block in enumerate(level.res_blocks):
                h = block(skips[-1], temb)
                if len(level.attentions):
                    h = level.attentions[j](h)
                skips.append(h)
            if level.downsample is None:
                continue
            h = level.downsample(skips[-1]) if config.resblock_type == "ddpm" else level.downsample(skips[-1], temb)
            if config.progressive_input == "input_skip":
                pyramid = downsample(pyramid, config.fir, tuple(config.fir_kernel))
                h = level.pyramid(pyramid, h)
            elif config.progressive_input == "residual":
                pyramid = residual_sum(level.pyramid(pyramid), h, config.skip_rescale)
                h = pyramid
            skips.append(h)
        return skips

    def _decode(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor | None) -> torch.Tensor:
        """The up path with its progressive output pyramid; consumes `skips`."""
        config = self.config
        pyramid = None
        for level in self.up_levels:
            for block in level.res_blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if level.attention is not None:
                h = level.attention(h)
            if level.pyramid_upsample is not None:  # "residual", below the top
                pyramid = residual_sum(level.pyramid_upsample(pyramid), h, config.skip_rescale)
                h = pyramid
            elif level.pyramid_conv is not None:
                branch = level.pyramid_conv(self.act(level.pyramid_norm(h)))
                if pyramid is None or config.progressive == "residual":
                    pyramid = branch
                else:
                    pyramid = upsample(pyramid, config.fir, tuple(config.fir_kernel)) + branch
            if level.upsample is not None:
                h = level.upsample(h) if config.resblock_type == "ddpm" else level.upsample(h, temb)

        if config.progressive == "output_skip":
            return pyramid
        return self.conv_out(self.act(self.norm_out(h)))
