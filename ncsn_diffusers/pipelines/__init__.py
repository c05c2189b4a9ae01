"""The NCSN pipelines, and beside them what they share: the model/scheduler pairing rules, the EDM adapter, the
pipeline folder, the output formatting and the per-call scheduler settings."""

from .pairing import check_components, is_denoiser_scheduler
from .pipeline_folder import resolve_pipeline_folder
from .pipeline_ncsn import NCSNPipeline
from .pipeline_ncsn_img2img import NCSNImg2ImgPipeline
from .pipeline_ncsn_inpaint import NCSNInpaintPipeline
from .pipeline_ncsn_posterior import NCSNPosteriorPipeline

__all__ = [
    "NCSNImg2ImgPipeline",
    "NCSNInpaintPipeline",
    "NCSNPipeline",
    "NCSNPosteriorPipeline",
    "check_components",
    "is_denoiser_scheduler",
    "resolve_pipeline_folder",
]
