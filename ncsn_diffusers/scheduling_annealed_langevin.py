"""The module path that pipelines saved before the `schedulers/` subpackage name in their `model_index.json`."""

# diffusers' loader finds a component's load method by looking its base classes up in the module the index names.
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .schedulers.scheduling_annealed_langevin import AnnealedLangevinScheduler, AnnealedLangevinSchedulerOutput

__all__ = ["AnnealedLangevinScheduler", "AnnealedLangevinSchedulerOutput", "SchedulerMixin"]
