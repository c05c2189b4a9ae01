"""FIR up- and down-sampling by 2 (StyleGAN2's `upfirdn2d`, as NCSN++ uses it), in plain PyTorch.

`upfirdn2d` upsamples by zero insertion, pads, filters with a 2-D FIR kernel k and keeps every `down`-th pixel. NCSN++
uses the separable kernel k = outer(f, f) / sum(f)**2 with f = (1, 3, 3, 1): times 4 when upsampling, so that a
constant image keeps its value, and fused with a 3x3 convolution for learned down-sampling.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def fir_kernel(taps: tuple[int, ...] | list[int], gain: float = 1.0) -> torch.Tensor:
    """The 2-D kernel outer(f, f) / sum(outer(f, f)) * gain of the 1-D taps f (float32)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    kernel = torch.outer(f, f)
    return kernel / kernel.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample (zero insertion) by `up`, pad by `pad` = (before, after) on both axes, convolve with `kernel`, keep
    every `down`-th pixel. x: (B, C, H, W) -> (B, C, (H * up + pad0 + pad1 - kh) // down + 1, ...)."""
    batch, channels, height, width = x.shape
    h = x.reshape(batch * channels, 1, height, width)
    if up > 1:
        zeros = h.new_zeros(batch * channels, 1, height * up, width * up)
        zeros[:, :, ::up, ::up] = h
        h = zeros
    h = F.pad(h, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1))[None, None].to(h.dtype)  # a true convolution: the kernel flipped
    h = F.conv2d(h, weight, stride=down)
    return h.reshape(batch, channels, h.shape[-2], h.shape[-1])


def fir_upsample(x: torch.Tensor, taps) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): zero insertion, then the FIR kernel (gain 4)."""
    kernel = fir_kernel(taps, gain=4.0).to(x.device)
    p = kernel.shape[0] - 2
    return upfirdn2d(x, kernel, up=2, pad=((p + 1) // 2 + 1, p // 2))


def fir_downsample(x: torch.Tensor, taps) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/2, W/2): the FIR kernel, then every second pixel."""
    kernel = fir_kernel(taps).to(x.device)
    p = kernel.shape[0] - 2
    return upfirdn2d(x, kernel, down=2, pad=((p + 1) // 2, p // 2))


def nearest_upsample(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W), each pixel repeated 2x2."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def mean_downsample(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/2, W/2), the mean of each 2x2 block."""
    return F.avg_pool2d(x, 2, stride=2)


class FIRDownsampleConv2d(nn.Module):
    """A 3x3 convolution of stride 2 after the FIR filter, padded once (StyleGAN2's `conv_downsample_2d`)."""

    def __init__(self, in_channels: int, out_channels: int, taps=(1, 3, 3, 1), kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.taps = tuple(taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = fir_kernel(self.taps).to(x.device)  # no buffer: a non-persistent one stays on "meta" when loading
        p = kernel.shape[0] - 2 + self.weight.shape[-1] - 1
        x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
        return F.conv2d(x, self.weight, stride=2) + self.bias.reshape(1, -1, 1, 1)
