"""The model/scheduler pairing rules of NCSNPipeline: which network samples with which scheduler, and how to fix a
pair that does not."""

import torch
from diffusers import UNet2DModel

from ..models import NCSNppModel, NCSNRefineNet, NCSNUNet2DModel, NCSNv2Model
from ..schedulers import SCORE_SCHEDULERS
from .timestep_adapter import is_timestep_scheduler


def is_denoiser_scheduler(scheduler) -> bool:
    """A diffusers scheduler that steps with a denoiser D(x, sigma) through `precondition_outputs` (the EDM family)."""
    return not isinstance(scheduler, SCORE_SCHEDULERS) and callable(getattr(scheduler, "precondition_outputs", None))


def check_guidable(scheduler):
    """Classifier guidance adds to a VE score conditioned on sigma = the timestep: refuses any other score chain."""
    if is_timestep_scheduler(scheduler):
        raise ValueError(
            f"class_labels guide a VE score model, but {type(scheduler).__name__} steps a DDPM epsilon model; sample "
            "an NCSN score model (VE, 'score') with one of the package's schedulers."
        )
    noise_space = getattr(scheduler.config, "noise_space", "ve")
    if noise_space != "ve" or scheduler.config.prediction_type != "score":
        raise ValueError(
            f"class_labels guide a VE score model, but the scheduler has noise_space={noise_space!r}, "
            f"prediction_type={scheduler.config.prediction_type!r}; sample an NCSN score model (VE, 'score')."
        )


def check_components(unet, scheduler):
    """
    Raises a ValueError for a U-Net and scheduler that cannot sample together, saying how to pair them. The one place
    that says which pairs sample: `NCSNPipeline` calls it at construction and again at every call.
    """
    names = ", ".join(cls.__name__ for cls in SCORE_SCHEDULERS)
    if is_denoiser_scheduler(scheduler):
        if isinstance(unet, NCSNRefineNet):
            raise ValueError(
                f"{type(scheduler).__name__} calls the network at sigmas of its own, but NCSNRefineNet knows only the "
                "levels of its ladder; sample it with AnnealedLangevinScheduler (or PC / CAS) on that ladder."
            )
        if isinstance(unet, UNet2DModel):
            raise ValueError(
                f"{type(scheduler).__name__} drives a score model through the denoiser x + sigma**2 s(x, sigma), but "
                "this is a DDPM UNet2DModel; sample it with AnnealedLangevinScheduler.from_config(DDPMScheduler("
                "...).config), or pair the EDM scheduler with an NCSNUNet2DModel."
            )
        if scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"{type(scheduler).__name__} has prediction_type={scheduler.config.prediction_type!r}; keep its own "
                "'epsilon' (the default): NCSNPipeline converts the score into what that scheduler expects. Build it "
                "with e.g. EDMEulerScheduler(sigma_min=..., sigma_max=...) rather than from the NCSN config."
            )
        return
    if is_timestep_scheduler(scheduler):
        check_timestep_pair(unet, scheduler)
        return
    if not isinstance(scheduler, SCORE_SCHEDULERS):
        raise ValueError(
            f"NCSNPipeline needs one of {names}, a diffusers EDM scheduler (EDMEulerScheduler, "
            "EDMDPMSolverMultistepScheduler) or, for a DDPM epsilon UNet2DModel, a DDPM-family one (DDPMScheduler, "
            f"DDIMScheduler, DPMSolverMultistepScheduler, ...), got {type(scheduler).__name__}; convert it with "
            f"AnnealedLangevinScheduler.from_config(scheduler.config)."
        )
    noise_space = getattr(scheduler.config, "noise_space", "ve")
    prediction_type = scheduler.config.prediction_type
    if isinstance(unet, (NCSNUNet2DModel, NCSNRefineNet, NCSNv2Model, NCSNppModel)):
        if noise_space != "ve" or prediction_type != "score":
            raise ValueError(
                f"{type(unet).__name__} returns the score s(x, sigma) but the scheduler has noise_space={noise_space!r}, "
                f"prediction_type={prediction_type!r}; use {type(scheduler).__name__}(prediction_type='score', "
                "...) in VE coordinates (noise_space='ve')."
            )
        if isinstance(unet, NCSNRefineNet) and not (
            len(scheduler.sigmas) == len(unet.sigmas)
            and torch.allclose(scheduler.sigmas.float(), unet.sigmas, rtol=1e-5)
        ):
            raise ValueError(
                "NCSNRefineNet has one embedding per level of its own ladder (sigma_max="
                f"{unet.config.sigma_max}, sigma_min={unet.config.sigma_min}, num_noise_levels="
                f"{unet.config.num_noise_levels}); give the scheduler the same three values."
            )
    elif isinstance(unet, UNet2DModel) and unet.config.time_embedding_type == "positional" and noise_space != "vp":
        raise ValueError(
            f"This UNet2DModel takes integer DDPM timesteps (an epsilon model) but the scheduler is in "
            f"noise_space={noise_space!r} with prediction_type={prediction_type!r}, which conditions on sigma; use "
            "AnnealedLangevinScheduler.from_config(DDPMScheduler(...).config) for DDPM (VP) coordinates."
        )


def check_score_chain(pipeline, scheduler):
    """Img2img and inpainting run the package's score chains (their `add_noise` at a sigma, the chain's levels): a
    DDPM-family scheduler (what `train_ncsn.py --objective epsilon` saves) is refused with the conversion to use."""
    if is_timestep_scheduler(scheduler):
        raise ValueError(
            f"{type(pipeline).__name__} runs the package's score chains, not {type(scheduler).__name__}; for this DDPM "
            "U-Net set pipe.scheduler = AnnealedLangevinScheduler.from_config(pipe.scheduler.config) (VP "
            "coordinates, the same DDPM schedule)."
        )


def check_timestep_pair(unet, scheduler):
    """A DDPM-family scheduler calls the network at integer timesteps t and steps with what it predicts (epsilon): only
    a DDPM U-Net (`UNet2DModel` with its positional timestep embedding) or another timestep model samples with it."""
    name = type(scheduler).__name__
    if isinstance(unet, (NCSNUNet2DModel, NCSNRefineNet, NCSNv2Model, NCSNppModel)) or (
        isinstance(unet, UNet2DModel) and unet.config.time_embedding_type != "positional"
    ):
        raise ValueError(
            f"{name} calls the network at integer DDPM timesteps and steps with its epsilon, but "
            f"{type(unet).__name__} is a score network conditioned on sigma; sample it with the package's schedulers "
            "(PredictorCorrectorScheduler, StochasticHeunScheduler, ...) or diffusers' EDM schedulers."
        )
