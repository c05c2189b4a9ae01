"""Building blocks of the RefineNets of NCSN (Song & Ermon, 2019) and NCSNv2 (Song & Ermon, 2020).

Both networks are a dilated ResNet encoder followed by a RefineNet decoder (Lin et al., 2017): residual units (RCU),
chained residual pooling (CRP) and multi-resolution fusion (MSF). NCSN v1 normalises with conditional instance
normalisation++ (one embedding row per noise level) everywhere, including inside the refine blocks; NCSNv2 uses the
unconditional instance normalisation++ in the encoder only. Every block takes `(x, level)`, where `level` is the
(B,) long tensor of noise-level indices (ignored, and `None`, for unconditional normalisation).
"""

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

NormFactory = Callable[[int], nn.Module]


def _instance_norm_plus_plus_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised features and the standardised channel means of instance normalisation++.

    InstanceNorm++ (NCSN, appendix A) adds back the channel means mu_k, standardised across channels, which plain
    instance normalisation removes (and with them the colour shifts of the image).
    """
    means = x.mean(dim=(2, 3))  # (B, C)
    # torch.var is unbiased here, as in the authors' code.
    means = (means - means.mean(dim=-1, keepdim=True)) / torch.sqrt(means.var(dim=-1, keepdim=True) + 1e-5)
    return F.instance_norm(x, eps=1e-5), means[..., None, None]


class InstanceNormPlusPlus2d(nn.Module):
    r"""Instance normalisation++: gamma * (IN(x) + alpha * mu_tilde) + beta, the NCSNv2 normalisation."""

    def __init__(self, num_features: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        h, means = _instance_norm_plus_plus_parts(x)
        return self.gamma[:, None, None] * (h + self.alpha[:, None, None] * means) + self.beta[:, None, None]


class ConditionalInstanceNormPlusPlus2d(nn.Module):
    r"""Conditional instance normalisation++ (NCSN v1): gamma, alpha and beta are rows of a per-level embedding."""

    def __init__(self, num_features: int, num_noise_levels: int):
        super().__init__()
        self.embed = nn.Embedding(num_noise_levels, 3 * num_features)
        self.embed.weight.data[:, : 2 * num_features].normal_(1.0, 0.02)
        self.embed.weight.data[:, 2 * num_features :].zero_()

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h, means = _instance_norm_plus_plus_parts(x)
        gamma, alpha, beta = (p[..., None, None] for p in self.embed(level).chunk(3, dim=-1))  # (B, C, 1, 1) each
        return gamma * (h + alpha * means) + beta


class ConvMeanPool(nn.Module):
    """A convolution followed by 2x2 mean pooling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        # 2x2 mean, summed in the authors' order so that converted checkpoints agree to float32 rounding.
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2] + h[:, :, 1::2, 1::2]) / 4


def _conv3x3(in_channels: int, out_channels: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))).

    With `resample=True` the block opens a new stage of the encoder: a plain block (`dilation=1`) halves the
    resolution (mean pooling after its second convolution and in its shortcut); a dilated block keeps the resolution
    and widens the receptive field instead.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: NormFactory,
        act: nn.Module,
        resample: bool = False,
        dilation: int = 1,
    ):
        super().__init__()
        self.act = act
        hidden = in_channels if resample else out_channels
        self.norm1 = norm(in_channels)
        self.conv1 = _conv3x3(in_channels, hidden, dilation)
        self.norm2 = norm(hidden)
        if resample and dilation == 1:
            self.conv2 = ConvMeanPool(hidden, out_channels, 3)
            self.shortcut = ConvMeanPool(in_channels, out_channels, 1)
        else:
            self.conv2 = _conv3x3(hidden, out_channels, dilation)
            if resample or in_channels != out_channels:
                self.shortcut = _conv3x3(in_channels, out_channels, dilation)
            else:
                self.shortcut = None

    def forward(self, x: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, level)))
        h = self.conv2(self.act(self.norm2(h, level)))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class ResidualConvUnit(nn.Module):
    """RefineNet's RCU: `num_blocks` residual units, each of two (norm,) act, conv stages."""

    def __init__(self, channels: int, num_blocks: int, norm: NormFactory | None, act: nn.Module):
        super().__init__()
        self.act = act
        self.convs = nn.ModuleList(
            nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(2)) for _ in range(num_blocks)
        )
        self.norms = None
        if norm is not None:
            self.norms = nn.ModuleList(nn.ModuleList(norm(channels) for _ in range(2)) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        for i, convs in enumerate(self.convs):
            h = x
            for j, conv in enumerate(convs):
                if self.norms is not None:
                    h = self.norms[i][j](h, level)
                h = conv(self.act(h))
            x = x + h
        return x


class ChainedResidualPooling(nn.Module):
    """RefineNet's CRP: x = act(x), then x += p_k for a chain p_k = conv(pool(p_{k-1})) of 5x5 stride-1 poolings."""

    def __init__(self, channels: int, norm: NormFactory | None, act: nn.Module, pool: str):
        super().__init__()
        self.act = act
        self.pool = pool
        self.convs = nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(2))
        self.norms = None if norm is None else nn.ModuleList(norm(channels) for _ in range(2))

    def forward(self, x: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        x = self.act(x)
        path = x
        for k, conv in enumerate(self.convs):
            if self.norms is not None:
                path = self.norms[k](path, level)
            if self.pool == "max":
                path = F.max_pool2d(path, 5, stride=1, padding=2)
            else:  # NCSN v1; count_include_pad, as nn.AvgPool2d's default, so borders average in zeros
                path = F.avg_pool2d(path, 5, stride=1, padding=2)
            path = conv(path)
            x = x + path
        return x


class MultiResolutionFusion(nn.Module):
    """RefineNet's MSF: each input through (norm,) conv, bilinearly resized to the finest resolution, summed."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, norm: NormFactory | None):
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(c, channels) for c in in_channels)
        self.norms = None if norm is None else nn.ModuleList(norm(c) for c in in_channels)

    def forward(self, xs: list[torch.Tensor], level: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        out = 0
        for k, (x, conv) in enumerate(zip(xs, self.convs)):
            if self.norms is not None:
                x = self.norms[k](x, level)
            out = out + F.interpolate(conv(x), size=size, mode="bilinear", align_corners=True)
        return out


class RefineBlock(nn.Module):
    """A RefineNet block: an RCU per input, MSF (when there are two inputs), CRP and an output RCU."""

    def __init__(
        self,
        in_channels: tuple[int, ...],
        channels: int,
        norm: NormFactory | None,
        act: nn.Module,
        pool: str,
        is_last: bool = False,
    ):
        super().__init__()
        self.adapt_convs = nn.ModuleList(ResidualConvUnit(c, 2, norm, act) for c in in_channels)
        self.msf = MultiResolutionFusion(in_channels, channels, norm) if len(in_channels) > 1 else None
        self.crp = ChainedResidualPooling(channels, norm, act, pool)
        self.output_convs = ResidualConvUnit(channels, 3 if is_last else 1, norm, act)

    def forward(self, xs: list[torch.Tensor], level: torch.Tensor | None) -> torch.Tensor:
        hs = [rcu(x, level) for rcu, x in zip(self.adapt_convs, xs)]
        h = hs[0] if self.msf is None else self.msf(hs, level, xs[0].shape[-2:])
        return self.output_convs(self.crp(h, level), level)


class RefineNetBackbone(nn.Module):
    """The encoder stages and the RefineNet decoder shared by NCSN v1 and NCSNv2 (without input and output layers).

    Stage k has `base_channels * channel_multipliers[k]` channels and two residual blocks; each stage after the first
    opens with a resampling block (see [`ResidualBlock`]). The decoder refines from the deepest stage up, fusing each
    stage's features with the refined features of the stage below it.
    """

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: tuple[int, ...],
        dilations: tuple[int, ...],
        norm: NormFactory,
        refine_norm: NormFactory | None,
        act: nn.Module,
        pool: str,
    ):
        super().__init__()
        channels = [base_channels * m for m in channel_multipliers]
        self.down_blocks = nn.ModuleList()
        for k, (ch, dilation) in enumerate(zip(channels, dilations)):
            prev = channels[max(k - 1, 0)]
            first = ResidualBlock(prev, ch, norm, act, resample=k > 0, dilation=dilation)
            self.down_blocks.append(nn.ModuleList([first, ResidualBlock(ch, ch, norm, act, dilation=dilation)]))
        # Refine blocks from the deepest stage up; the block of stage k > 0 outputs the channels of stage k - 1, which
        # it feeds next, the deepest one keeps its own.
        outputs = [channels[max(k - 1, 0)] for k in range(len(channels) - 1)] + [channels[-1]]
        self.up_blocks = nn.ModuleList([RefineBlock((channels[-1],), outputs[-1], refine_norm, act, pool)])
        for k in range(len(channels) - 2, -1, -1):
            self.up_blocks.append(
                RefineBlock((channels[k], outputs[k + 1]), outputs[k], refine_norm, act, pool, is_last=k == 0)
            )

    def forward(self, h: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        features = []
        for stage in self.down_blocks:
            for block in stage:
                h = block(h, level)
            features.append(h)
        h = self.up_blocks[0]([features[-1]], level)
        for block, skip in zip(self.up_blocks[1:], reversed(features[:-1])):
            h = block([skip, h], level)
        return h


def check_refinenet_config(base_channels: int, channel_multipliers: tuple[int, ...], dilations: tuple[int, ...]):
    """Raises a ValueError for a stage layout the RefineNet cannot build."""
    if len(channel_multipliers) != len(dilations) or len(dilations) < 2:
        raise ValueError(
            f"`channel_multipliers` {tuple(channel_multipliers)} and `dilations` {tuple(dilations)} need one entry "
            "per encoder stage, at least two."
        )
    if base_channels < 1 or min(channel_multipliers) < 1 or min(dilations) < 1:
        raise ValueError("`base_channels`, `channel_multipliers` and `dilations` must be positive integers.")


def check_refinenet_sample(sample: torch.Tensor, in_channels: int, dilations: tuple[int, ...]):
    """Raises a ValueError for a sample the RefineNet cannot take: wrong shape, or a side its poolings cannot halve."""
    if sample.ndim != 4 or sample.shape[1] != in_channels:
        raise ValueError(f"`sample` has shape {tuple(sample.shape)}, expected (batch, {in_channels}, height, width).")
    factor = 2 ** sum(d == 1 for d in dilations[1:])
    if sample.shape[-2] % factor or sample.shape[-1] % factor:
        raise ValueError(
            f"`sample` is {sample.shape[-2]}x{sample.shape[-1]}, but this network halves it {factor.bit_length() - 1} "
            f"time(s); height and width must be multiples of {factor}."
        )
