"""Noise Conditional Score Networks (Song & Ermon, 2019) for Hugging Face diffusers.

Importing the package makes its classes resolvable by diffusers' loaders, `DiffusionPipeline.from_pretrained`
included, under the package name and under the module paths of earlier releases (see `diffusers_registration.py`).
"""

# diffusers' loader finds a component's load method by looking its base classes up in the library that
# model_index.json names, here this package: ["ncsn_diffusers", "NCSNUNet2DModel"].
from diffusers import ModelMixin, SchedulerMixin  # noqa: F401

from .diffusers_registration import alias_moved_modules, register_with_diffusers
from .digits import load_digits_images
from .hub import render_model_card, write_model_card
from .likelihood import LikelihoodOutput, bits_per_dim_offset, log_likelihood
from .losses import dsm_loss, epsilon_loss, ssm_loss
from .models import NCSNppModel, NCSNRefineNet, NCSNUNet2DModel, NCSNv2Model, NoiseConditionalClassifier
from .parameterization import (
    denoiser_model_output,
    epsilon_from_score,
    sample_from_score,
    score_from_epsilon,
    score_from_model_output,
    score_from_sample,
)
from .pipelines import (
    NCSNImg2ImgPipeline,
    NCSNInpaintPipeline,
    NCSNPipeline,
    NCSNPosteriorPipeline,
    resolve_pipeline_folder,
)
from .schedulers import (
    AnnealedLangevinScheduler,
    AnnealedLangevinSchedulerOutput,
    ConsistentAnnealedSamplingScheduler,
    LogSigmaMultistepScheduler,
    PredictorCorrectorScheduler,
    ScoreSchedulerOutput,
    StochasticHeunScheduler,
)
from .schedulers.ncsnv2_ladder_design import ncsnv2_hyperparameters, ncsnv2_scheduler_config

__version__ = "0.1.0"


__all__ = [
    "AnnealedLangevinScheduler",
    "AnnealedLangevinSchedulerOutput",
    "ConsistentAnnealedSamplingScheduler",
    "LikelihoodOutput",
    "LogSigmaMultistepScheduler",
    "NCSNImg2ImgPipeline",
    "NCSNInpaintPipeline",
    "NCSNPipeline",
    "NCSNppModel",
    "NCSNPosteriorPipeline",
    "NCSNRefineNet",
    "NCSNv2Model",
    "NoiseConditionalClassifier",
    "NCSNUNet2DModel",
    "PredictorCorrectorScheduler",
    "ScoreSchedulerOutput",
    "StochasticHeunScheduler",
    "bits_per_dim_offset",
    "denoiser_model_output",
    "dsm_loss",
    "epsilon_from_score",
    "epsilon_loss",
    "load_digits_images",
    "log_likelihood",
    "ncsnv2_hyperparameters",
    "ncsnv2_scheduler_config",
    "render_model_card",
    "resolve_pipeline_folder",
    "sample_from_score",
    "score_from_epsilon",
    "score_from_model_output",
    "score_from_sample",
    "ssm_loss",
    "write_model_card",
]

# Every public pipeline, model and scheduler, so that classes added to __all__ are registered too; then the module
# paths of earlier releases.
register_with_diffusers(*(globals()[name] for name in __all__))
alias_moved_modules()
