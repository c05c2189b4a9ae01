"""The score networks (the U-Net conditioned on sigma, NCSN v1's conditional RefineNet and NCSNv2's RefineNets) and
the noise-conditional classifier of classifier guidance."""

from .ncsn_refinenet import NCSNRefineNet
from .ncsnv2 import NCSNv2Model
from .noise_conditional_classifier import NoiseConditionalClassifier
from .unet_ncsn import NCSNUNet2DModel

__all__ = ["NCSNRefineNet", "NCSNUNet2DModel", "NCSNv2Model", "NoiseConditionalClassifier"]
