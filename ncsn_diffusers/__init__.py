"""Noise Conditional Score Networks (Song & Ermon, 2019) for Hugging Face diffusers.

Importing the package makes its classes resolvable by diffusers' loaders, `DiffusionPipeline.from_pretrained`
included (see `diffusers_registration.py`).
"""

# Pipelines saved before the schedulers/ subpackage name this module in model_index.json; diffusers loads a
# component only from a module already imported.
from . import scheduling_annealed_langevin  # noqa: F401
from .diffusers_registration import register_with_diffusers
from .digits import load_digits_images
from .losses import dsm_loss, epsilon_loss, ssm_loss
from .model_card import render_model_card, write_model_card
from .models import NCSNRefineNet, NCSNv2Model
from .models.noise_conditional_classifier import NoiseConditionalClassifier
from .ncsnv2_techniques import ncsnv2_hyperparameters, ncsnv2_scheduler_config
from .parameterization import (
    denoiser_model_output,
    epsilon_from_score,
    sample_from_score,
    score_from_epsilon,
    score_from_model_output,
    score_from_sample,
)
from .pipeline_ncsn import NCSNPipeline, resolve_pipeline_folder
from .pipeline_ncsn_img2img import NCSNImg2ImgPipeline
from .pipeline_ncsn_inpaint import NCSNInpaintPipeline
from .schedulers import (
    AnnealedLangevinScheduler,
    AnnealedLangevinSchedulerOutput,
    ConsistentAnnealedSamplingScheduler,
    PredictorCorrectorScheduler,
    ScoreSchedulerOutput,
    StochasticHeunScheduler,
)
from .unet_ncsn import NCSNUNet2DModel

__version__ = "0.1.0"


__all__ = [
    "AnnealedLangevinScheduler",
    "AnnealedLangevinSchedulerOutput",
    "ConsistentAnnealedSamplingScheduler",
    "NCSNImg2ImgPipeline",
    "NCSNInpaintPipeline",
    "NCSNPipeline",
    "NCSNRefineNet",
    "NCSNv2Model",
    "NoiseConditionalClassifier",
    "NCSNUNet2DModel",
    "PredictorCorrectorScheduler",
    "ScoreSchedulerOutput",
    "StochasticHeunScheduler",
    "denoiser_model_output",
    "dsm_loss",
    "epsilon_from_score",
    "epsilon_loss",
    "load_digits_images",
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

# Every public pipeline, model and scheduler, so that classes added to __all__ are registered too, and the old
# scheduler module path.
register_with_diffusers(scheduling_annealed_langevin, *(globals()[name] for name in __all__))
