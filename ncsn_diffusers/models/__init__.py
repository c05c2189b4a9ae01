"""The score networks (the U-Net conditioned on sigma, NCSN v1's conditional RefineNet, NCSNv2's RefineNets and
score_sde's NCSN++ / DDPM++) and the noise-conditional classifier of classifier guidance."""

from .ncsn_refinenet import NCSNRefineNet
from .ncsnv2 import NCSNv2Model
from .noise_conditional_classifier import NoiseConditionalClassifier
from .unet_ncsn import NCSNUNet2DModel
from .unet_ncsnpp import NCSNppModel

__all__ = ["NCSNRefineNet", "NCSNUNet2DModel", "NCSNppModel", "NCSNv2Model", "NoiseConditionalClassifier"]
