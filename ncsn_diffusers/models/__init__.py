"""The score networks: the U-Net conditioned on sigma, NCSN v1's conditional RefineNet and NCSNv2's RefineNets."""

from .ncsn_refinenet import NCSNRefineNet
from .ncsnv2 import NCSNv2Model
from .unet_ncsn import NCSNUNet2DModel

__all__ = ["NCSNRefineNet", "NCSNUNet2DModel", "NCSNv2Model"]
