"""Noise Conditional Score Networks (Song & Ermon, 2019) for Hugging Face diffusers."""

from .scheduling_annealed_langevin import AnnealedLangevinScheduler, AnnealedLangevinSchedulerOutput

__version__ = "0.1.0"

__all__ = ["AnnealedLangevinScheduler", "AnnealedLangevinSchedulerOutput"]
