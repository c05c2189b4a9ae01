"""Lets diffusers' generic entry point, `DiffusionPipeline.from_pretrained(folder_or_repo)`, load this package's
pipelines once `ncsn_diffusers` is imported.

diffusers resolves what a saved `model_index.json` names in two places that know nothing of other packages:

- `_class_name` ("NCSNPipeline") is looked up in the top-level `diffusers` namespace only;
- a component entry `[library, class]` (here `["ncsn_diffusers.unet_ncsn", "NCSNUNet2DModel"]`, the module path that
  `save_pretrained` writes for classes defined outside diffusers) passes the Hub download only if `library` is a key
  of diffusers' registry of loadable libraries, `LOADABLE_CLASSES`, or a file `{component}/{library}.py` of the repo
  (remote code, which would then be loaded instead of the installed package).

So the pipelines are registered in the first place, and the modules that define components in the second (with no
base classes of their own: they load through diffusers' `ModelMixin` and `SchedulerMixin`). Both are additions that
leave every diffusers name as it was.
"""

import types

import diffusers
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.pipelines import pipeline_loading_utils


def register_with_diffusers(*objects: type | types.ModuleType) -> None:
    """
    Makes `DiffusionPipeline.from_pretrained` resolve the given classes: pipelines by their name in `_class_name`,
    models and schedulers by the module path of their `model_index.json` entry. A module is registered as such a
    path (for the paths that older saved pipelines name). Anything else is skipped.
    """
    for cls in objects:
        if isinstance(cls, types.ModuleType):
            pipeline_loading_utils.LOADABLE_CLASSES.setdefault(cls.__name__, {})
        elif not isinstance(cls, type):
            continue
        elif issubclass(cls, DiffusionPipeline):
            if not hasattr(diffusers, cls.__name__):  # never shadow a class of diffusers' own
                setattr(diffusers, cls.__name__, cls)
        elif issubclass(cls, (ModelMixin, SchedulerMixin)):
            pipeline_loading_utils.LOADABLE_CLASSES.setdefault(cls.__module__, {})
