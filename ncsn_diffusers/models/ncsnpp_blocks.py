"""The layers of NCSN++ / DDPM++ (Song et al., ICLR 2021): the residual block (BigGAN and DDPM style), self-attention,
the input pyramid's combiner, resampling layers and the sinusoidal embedding (the Gaussian Fourier one is
`unet_ncsn.Float32GaussianFourierProjection`).

All normalisations are GroupNorm with min(C // 4, 32) groups and eps 1e-6; a residual sum is divided by sqrt(2) when
`skip_rescale` is set.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fir_resampling import (
    FIRDownsampleConv2d,
    fir_downsample,
    fir_upsample,
    mean_downsample,
    nearest_upsample,
)

ACTIVATIONS = {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)


def residual_sum(x: torch.Tensor, h: torch.Tensor, skip_rescale: bool) -> torch.Tensor:
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


def upsample(x: torch.Tensor, fir: bool, taps) -> torch.Tensor:
    return fir_upsample(x, taps) if fir else nearest_upsample(x)


def downsample(x: torch.Tensor, fir: bool, taps) -> torch.Tensor:
    return fir_downsample(x, taps) if fir else mean_downsample(x)


class ResnetBlock(nn.Module):
    """The residual block of NCSN++: DDPM's (`resample=None`) or BigGAN's, whose x2 resampling (`"up"` / `"down"`)
    sits between the first activation and the first convolution. A 1x1 convolution carries the shortcut whenever the
    shape changes."""

    def __init__(self, in_channels, out_channels, temb_channels, act, skip_rescale, dropout=0.0, resample=None,
                 fir=False, taps=(1, 3, 3, 1)):  # fmt: skip
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.time_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_channels, out_channels)
        changes_shape = in_channels != out_channels or resample is not None
        self.skip_conv = nn.Conv2d(in_channels, out_channels, 1) if changes_shape else None
        self.act, self.resample, self.fir, self.taps, self.skip_rescale = act, resample, fir, taps, skip_rescale

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.act(self.norm1(x))
        if self.resample == "up":
            h, x = upsample(h, self.fir, self.taps), upsample(x, self.fir, self.taps)
        elif self.resample == "down":
            h, x = downsample(h, self.fir, self.taps), downsample(x, self.fir, self.taps)
        h = self.conv1(h)
        if temb is not None:
            h = h + self.time_proj(self.act(temb))[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        if self.skip_conv is not None:
            x = self.skip_conv(x)
        return residual_sum(x, h, self.skip_rescale)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H x W positions (DDPM's), with a residual connection."""

    def __init__(self, channels: int, skip_rescale: bool):
        super().__init__()
        self.norm = group_norm(channels)
        self.query, self.key, self.value, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        q, k, v = (layer(h).reshape(batch, channels, height * width) for layer in (self.query, self.key, self.value))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * channels**-0.5, dim=-1)  # (B, HW query, HW key)
        h = torch.bmm(v, weights.transpose(1, 2)).reshape(batch, channels, height, width)
        return residual_sum(x, self.proj_out(h), self.skip_rescale)


class Combine(nn.Module):
    """Joins the input pyramid (1x1-convolved to the features' channels) to the features, by sum or concatenation."""

    def __init__(self, pyramid_channels: int, channels: int, method: str):
        super().__init__()
        self.conv = nn.Conv2d(pyramid_channels, channels, 1)
        self.method = method

    def forward(self, pyramid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = self.conv(pyramid)
        return torch.cat([p, h], dim=1) if self.method == "cat" else p + h


class Upsample(nn.Module):
    """x2 up-sampling (nearest or FIR), followed by a 3x3 convolution when `with_conv` (nearest only)."""

    def __init__(self, in_channels: int, out_channels: int, with_conv: bool, fir: bool, taps):
        super().__init__()
        if with_conv and fir:
            raise ValueError(
                "FIR up-sampling with a convolution (resblock_type='ddpm' or progressive='residual' with fir=True) is "
                "not supported: the authors' PyTorch code cannot run it either (their upsample_conv_2d fails), and no "
                "released config uses it; set fir=False or resblock_type='biggan' with progressive 'none' / "
                "'output_skip'."
            )
        self.conv = conv3x3(in_channels, out_channels) if with_conv else None
        self.fir, self.taps = fir, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = upsample(x, self.fir, self.taps)
        return self.conv(h) if self.conv is not None else h


class Downsample(nn.Module):
    """x2 down-sampling: a stride-2 3x3 convolution (after the FIR filter when `fir`), or mean / FIR filtering."""

    def __init__(self, in_channels: int, out_channels: int, with_conv: bool, fir: bool, taps):
        super().__init__()
        self.conv = None
        if with_conv:
            self.conv = (
                FIRDownsampleConv2d(in_channels, out_channels, taps)
                if fir
                else conv3x3(in_channels, out_channels, stride=2, padding=0)
            )
        self.fir, self.taps = fir, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return downsample(x, self.fir, self.taps)
        if not self.fir:
            x = F.pad(x, (0, 1, 0, 1))  # stride 2, padding only after: the TF "SAME" layout of the authors
        return self.conv(x)


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
    """DDPM's (Transformer's) embedding of float timesteps (B,) -> (B, dim): [sin(t f_k), cos(t f_k)],
    f_k = max_positions**(-k / (dim / 2 - 1)), zero-padded to an odd `dim`."""
    half = dim // 2
    frequencies = torch.exp(
        torch.arange(half, dtype=torch.float32, device=timesteps.device) * -(math.log(max_positions) / (half - 1))
    )
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return F.pad(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1), (0, dim % 2))
