"""Lets diffusers' loaders resolve this package's classes by name, so that saved folders do not depend on where a
class's file lives.

diffusers resolves what a saved `model_index.json` names in two places that know nothing of other packages:

- `_class_name` ("NCSNPipeline") is looked up in the top-level `diffusers` namespace only;
- a component entry `[library, class]` is imported from `library` only if that is a key of diffusers' registry of
  loadable libraries, `LOADABLE_CLASSES` (as `"transformers"` is), or a module already imported, or a file
  `{component}/{library}.py` of the folder (remote code).

So the pipelines (and the schedulers, for diffusers' `compatibles`, which resolves `_compatibles` in the same
namespace) are registered in the first place and the package name in the second: `save_pretrained` then writes
`["ncsn_diffusers", "NCSNUNet2DModel"]`, which loads through the top-level export whatever module defines the class.
Folders saved by earlier releases name module paths (`ncsn_diffusers.unet_ncsn`,
`ncsn_diffusers.scheduling_annealed_langevin`, `ncsn_diffusers.schedulers.scheduling_*`): each stays a registered,
importable module path, the moved ones as aliases of the modules that now hold their classes (no shim files). Both
are additions that leave every diffusers name as it was.
"""

import importlib
import sys
import types

import diffusers
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.pipelines import pipeline_loading_utils

PACKAGE = "ncsn_diffusers"

# module path of an earlier release -> the module that holds its classes now
MOVED_MODULES = {
    "ncsn_diffusers.unet_ncsn": "ncsn_diffusers.models.unet_ncsn",
    "ncsn_diffusers.scheduling_annealed_langevin": "ncsn_diffusers.schedulers.scheduling_annealed_langevin",
    "ncsn_diffusers.noise_ladders": "ncsn_diffusers.schedulers.noise_ladders",
    "ncsn_diffusers.ncsnv2_techniques": "ncsn_diffusers.schedulers.ncsnv2_ladder_design",
    "ncsn_diffusers.pipeline_ncsn": "ncsn_diffusers.pipelines.pipeline_ncsn",
    "ncsn_diffusers.pipeline_ncsn_inpaint": "ncsn_diffusers.pipelines.pipeline_ncsn_inpaint",
    "ncsn_diffusers.pipeline_utils": "ncsn_diffusers.pipelines.pipeline_utils",
}


def alias_moved_modules() -> None:
    """Makes each old module path of `MOVED_MODULES` import (and resolve, for diffusers' loader) as its new module."""
    package = sys.modules[PACKAGE]
    for old, new in MOVED_MODULES.items():
        module = importlib.import_module(new)
        sys.modules.setdefault(old, module)
        setattr(package, old.rsplit(".", 1)[1], module)
        pipeline_loading_utils.LOADABLE_CLASSES.setdefault(old, {})


def register_with_diffusers(*objects: type | types.ModuleType) -> None:
    """
    Makes `DiffusionPipeline.from_pretrained` resolve the given classes: pipelines by their name in `_class_name`,
    models and schedulers through the package name (new saves) and the module path that defines them (saves of earlier
    releases). A module is registered as such a path. Anything else is skipped.
    """
    pipeline_loading_utils.LOADABLE_CLASSES.setdefault(PACKAGE, {})
    for cls in objects:
        if isinstance(cls, types.ModuleType):
            pipeline_loading_utils.LOADABLE_CLASSES.setdefault(cls.__name__, {})
        elif not isinstance(cls, type):
            continue
        elif not issubclass(cls, (DiffusionPipeline, ModelMixin, SchedulerMixin)):
            continue
        # `_class_name` and `compatibles` (which reads `_compatibles`) resolve names in diffusers' namespace only
        if issubclass(cls, (DiffusionPipeline, SchedulerMixin)) and not hasattr(diffusers, cls.__name__):
            setattr(diffusers, cls.__name__, cls)  # never shadowing a class of diffusers' own
        if issubclass(cls, (ModelMixin, SchedulerMixin)):
            pipeline_loading_utils.LOADABLE_CLASSES.setdefault(cls.__module__, {})
