"""The networks of the NCSN papers: NCSN v1's conditional RefineNet and NCSNv2's RefineNets."""

from .ncsn_refinenet import NCSNRefineNet
from .ncsnv2 import NCSNv2Model

__all__ = ["NCSNRefineNet", "NCSNv2Model"]
