"""NCSNPipeline: unconditional image generation by annealed Langevin dynamics (Song & Ermon, 2019)."""

import inspect
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    DiffusionPipeline,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import create_repo, snapshot_download

from .guidance import check_guidance, guided_score
from .model_card import write_model_card
from .models import NCSNRefineNet, NCSNv2Model
from .models.noise_conditional_classifier import NoiseConditionalClassifier
from .parameterization import denoiser_model_output, sample_from_score
from .pipeline_utils import OUTPUT_TYPES, format_images, samples_to_unit_range, scheduler_overrides
from .schedulers import (
    SCORE_SCHEDULERS,
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)
from .unet_ncsn import NCSNUNet2DModel

# The range of the data when the scheduler does not record it (diffusers' EDM schedulers): diffusers' images.
DEFAULT_DATA_RANGE = (-1.0, 1.0)


class NCSNPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation with a noise conditional score network and annealed Langevin dynamics
    or another sampler for score models.

    It samples two kinds of model: a score network conditioned on sigma ([`NCSNUNet2DModel`]) and a DDPM
    epsilon-prediction [`~diffusers.UNet2DModel`] ([`AnnealedLangevinScheduler`] in VP coordinates, where
    score = -epsilon / sqrt(1 - alphabar_t)). A score network samples with any of the package's schedulers
    ([`AnnealedLangevinScheduler`], [`PredictorCorrectorScheduler`], [`ConsistentAnnealedSamplingScheduler`],
    [`StochasticHeunScheduler`]) or with
    diffusers' EDM solvers as they are ([`~diffusers.EDMEulerScheduler`],
    [`~diffusers.EDMDPMSolverMultistepScheduler`]), driven through the denoiser D(x, sigma) = x + sigma**2 s(x, sigma):
    the network sees the unscaled x and the real sigma.

    This model inherits from [`~diffusers.DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Parameters:
        unet ([`NCSNUNet2DModel`], [`NCSNRefineNet`], [`NCSNv2Model`] or [`~diffusers.UNet2DModel`]):
            The network: s_theta(x, sigma) for a score model, epsilon_theta(x_t, t) for a DDPM model.
        scheduler ([`AnnealedLangevinScheduler`], [`PredictorCorrectorScheduler`],
            [`ConsistentAnnealedSamplingScheduler`], [`StochasticHeunScheduler`], or a diffusers EDM scheduler):
            The sampler, in the coordinates of the network.
        classifier ([`NoiseConditionalClassifier`], *optional*):
            p_phi(y | x, sigma), for class-conditional sampling with `class_labels` (classifier guidance).
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["classifier"]
    _callback_tensor_inputs = ["sample"]

    def __init__(
        self,
        unet: NCSNUNet2DModel | NCSNRefineNet | NCSNv2Model | UNet2DModel,
        scheduler: AnnealedLangevinScheduler
        | PredictorCorrectorScheduler
        | ConsistentAnnealedSamplingScheduler
        | StochasticHeunScheduler
        | EDMEulerScheduler
        | EDMDPMSolverMultistepScheduler,
        classifier: NoiseConditionalClassifier | None = None,
    ):
        super().__init__()
        check_components(unet, scheduler)
        self.register_modules(unet=unet, scheduler=scheduler, classifier=classifier)
        self.model_card_kwargs = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Loads a pipeline from a local folder or a Hub repo id, as [`~diffusers.DiffusionPipeline.from_pretrained`].

        A repo is fetched whole with `huggingface_hub.snapshot_download` first and checked to hold `unet/` and
        `scheduler/` (`DiffusionPipeline.from_pretrained(repo_id)` loads it too, once `ncsn_diffusers` is imported).
        Hub arguments (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`) apply to that download.
        """
        local_dir = resolve_pipeline_folder(
            pretrained_model_name_or_path,
            **{k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs},
        )
        return super().from_pretrained(local_dir, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, repo_id: str | None = None, **kwargs):
        r"""
        Saves the pipeline as [`~diffusers.DiffusionPipeline.save_pretrained`] does (`model_index.json`, `unet/` with
        safetensors weights, `scheduler/`) and writes the filled-in model card `README.md` from `model_card.md`, with
        what `pipe.model_card_kwargs` holds (`training`, `results`, `datasets`, `license`).
        """
        super().save_pretrained(save_directory, *args, **kwargs)
        self.write_model_card(save_directory, repo_id=repo_id)

    def write_model_card(self, save_directory: str | os.PathLike, repo_id: str | None = None) -> Path:
        """Writes `README.md` with Hub metadata for this pipeline into `save_directory`."""
        return write_model_card(
            save_directory,
            unet_config=json.loads(self.unet.to_json_string()),
            scheduler_config=json.loads(self.scheduler.to_json_string()),
            repo_id=repo_id,
            **self.model_card_kwargs,
        )

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> str:
        r"""
        Uploads the pipeline and its filled-in model card to the Hub repo `repo_id` (created if needed).

        diffusers' own `push_to_hub` replaces the card that `save_pretrained` writes with an empty one; this keeps it.
        """
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmpdir:
            self.save_pretrained(tmpdir, safe_serialization=safe_serialization, variant=variant, repo_id=repo_id)
            return self._upload_folder(
                tmpdir, repo_id, token=token, commit_message=commit_message, create_pr=create_pr
            )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        steps_per_level: int | None = None,
        epsilon: float | None = None,
        final_denoise: bool | None = None,
        corrector_steps: int | None = None,
        snr: float | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["NCSNPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        The call function to the pipeline for generation.

        Args:
            batch_size (`int`, *optional*, defaults to 1):
                The number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A [`torch.Generator`](https://pytorch.org/docs/stable/generated/torch.Generator.html), or one per
                image, to make generation deterministic.
            num_inference_steps (`int`, *optional*):
                The number of U-Net calls, spread over the noise levels (see the scheduler's `set_timesteps`).
                Defaults to the scheduler's configured chain (annealed Langevin: L x T, +1 for denoising; diffusers'
                schedulers: their `num_train_timesteps`).
            steps_per_level (`int`, *optional*):
                T, the Langevin steps per noise level, for this call only (annealed Langevin).
            epsilon (`float`, *optional*):
                The step size epsilon, for this call only (annealed Langevin, consistent annealed sampling).
            final_denoise (`bool`, *optional*):
                Whether to end with the denoising step x + sigma_L**2 * s(x, sigma_L), for this call only.
            corrector_steps (`int`, *optional*):
                k, the Langevin corrector steps per level, for this call only (predictor-corrector).
            snr (`float`, *optional*):
                r, the corrector's signal-to-noise ratio, for this call only (predictor-corrector).
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                y, the class to sample: one for every image, or one per image. Needs `pipe.classifier`; every step
                then uses s(x, sigma) + w grad_x log p_phi(y | x, sigma) (see `guidance.py`).
            guidance_scale (`float`, *optional*, defaults to 1.0 when `class_labels` are given):
                w; 1 samples p(x | y), larger values sharpen it, 0 samples unguided without calling the classifier.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (`PIL.Image.Image`), `"np"` (`np.ndarray` of shape `(B, H, W, C)`) or `"pt"` (`torch.Tensor` of
                shape `(B, C, H, W)`), in [0, 1].
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`~pipelines.ImagePipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called after each step as `callback_on_step_end(self, i, t, callback_kwargs)`; it may return a dict
                with a replacement `"sample"`.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                The tensors passed in `callback_kwargs`; only `"sample"` is available.

        Examples:

        ```py
        >>> import ncsn_diffusers
        >>> from ncsn_diffusers import NCSNPipeline

        >>> pipe = NCSNPipeline.from_pretrained("ncsn-digits")
        >>> image = pipe(batch_size=16).images[0]
        ```

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images, in a tuple when `return_dict` is `False`.
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["sample"]
        self.check_inputs(batch_size, generator, output_type, callback_on_step_end_tensor_inputs)
        # Again at each call: `pipe.unet = ...` or `pipe.scheduler = ...` after construction bypasses `__init__`.
        check_components(self.unet, self.scheduler)
        shape = (batch_size, self.unet.config.in_channels, *self._sample_size())
        device = self._execution_device

        scheduler = self.scheduler
        overrides = scheduler_overrides(
            scheduler,
            steps_per_level=steps_per_level,
            epsilon=epsilon,
            final_denoise=final_denoise,
            corrector_steps=corrector_steps,
            snr=snr,
        )
        uses_denoiser = is_denoiser_scheduler(scheduler)
        labels = check_guidance(self.classifier, class_labels, guidance_scale, batch_size, device)
        if labels is not None and not uses_denoiser:
            check_guidable(scheduler)
        guidance = (self.classifier, labels, 1.0 if guidance_scale is None else guidance_scale)

        # The chain lives in float32; only the U-Net sees its own dtype.
        if uses_denoiser:
            num_inference_steps = num_inference_steps or scheduler.config.num_train_timesteps
            sample = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
            sample = sample * scheduler.init_noise_sigma
        else:
            sample = scheduler.initial_sample(shape, generator=generator, device=device, dtype=torch.float32)
        scheduler.set_timesteps(num_inference_steps, device=device, **overrides)
        unet_dtype = self.unet.dtype  # a walk over every module: read once, not at each of the N calls
        # A step that takes the denoised sample itself (EDMEulerScheduler) gets D = x + sigma**2 s, one kernel, and
        # skips its `precondition_outputs`; the others get the output that `precondition_outputs` turns into D.
        takes_denoised = uses_denoiser and "pred_original_sample" in inspect.signature(scheduler.step).parameters
        step_kwargs = {}
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            if uses_denoiser:
                model_output = self._denoiser_model_output(sample, t, unet_dtype, takes_denoised, guidance)
                step_kwargs = {"pred_original_sample": model_output} if takes_denoised else {}
            else:
                model_output = guided_score(self.unet(sample.to(unet_dtype), t).sample, sample, t, *guidance)
            sample = scheduler.step(model_output, t, sample, generator=generator, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_kwargs = {"sample": sample}
                sample = callback_on_step_end(self, i, t, callback_kwargs).pop("sample", sample)

        data_range = getattr(scheduler, "data_range", DEFAULT_DATA_RANGE)
        image = format_images(samples_to_unit_range(sample, data_range), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def _denoiser_model_output(
        self, sample: torch.Tensor, t: torch.Tensor, unet_dtype: torch.dtype, denoised: bool, guidance: tuple
    ) -> torch.Tensor:
        """A diffusers EDM scheduler's step: the score model at the unscaled x and the real sigma, handed over as the
        denoiser D(x, sigma) = x + sigma**2 s itself (`denoised`) or as the model output that the scheduler's
        `precondition_outputs` turns into D. `guidance` (classifier, labels, w) makes s the guided score."""
        # only to let the scheduler find its step index: the network takes x unscaled, so scale no image
        self.scheduler.scale_model_input(sample[:0], t)
        sigma = self.scheduler.sigmas[self.scheduler.step_index].item()  # sigmas live on the CPU: no device sync
        score = guided_score(self.unet(sample.to(unet_dtype), sigma).sample.float(), sample, sigma, *guidance)
        if denoised:
            return sample_from_score(score, sample.float(), sigma)
        return denoiser_model_output(self.scheduler, score, sample, sigma)

    def check_inputs(self, batch_size, generator, output_type, callback_on_step_end_tensor_inputs):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} generators but batch_size={batch_size}; pass one generator, "
                "or one per image."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not supported; choose one of {list(OUTPUT_TYPES)}.")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not available; use ['sample']."
            )

    def _sample_size(self) -> tuple[int, int]:
        size = self.unet.config.sample_size
        if size is None:
            raise ValueError(
                "pipe.unet.config.sample_size is None, so the pipeline does not know what size of image to draw; set "
                "it with pipe.unet.register_to_config(sample_size=32) (height and width, or (height, width)), or build "
                "the U-Net with sample_size=..."
            )
        return (size, size) if isinstance(size, int) else tuple(size)


_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")


def is_denoiser_scheduler(scheduler) -> bool:
    """A diffusers scheduler that steps with a denoiser D(x, sigma) through `precondition_outputs` (the EDM family)."""
    return not isinstance(scheduler, SCORE_SCHEDULERS) and callable(getattr(scheduler, "precondition_outputs", None))


def check_guidable(scheduler):
    """Classifier guidance adds to a VE score conditioned on sigma = the timestep: refuse any other chain."""
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
    if not isinstance(scheduler, SCORE_SCHEDULERS):
        raise ValueError(
            f"NCSNPipeline needs one of {names} or a diffusers EDM scheduler (EDMEulerScheduler, "
            f"EDMDPMSolverMultistepScheduler), got {type(scheduler).__name__}; convert it with "
            f"AnnealedLangevinScheduler.from_config(scheduler.config)."
        )
    noise_space = getattr(scheduler.config, "noise_space", "ve")
    prediction_type = scheduler.config.prediction_type
    if isinstance(unet, (NCSNUNet2DModel, NCSNRefineNet, NCSNv2Model)):
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


def resolve_pipeline_folder(pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs) -> str:
    """
    Returns a local folder holding a saved pipeline: the folder itself, or a snapshot of a Hub repo id. Pass the
    result to any pipeline's `from_pretrained`, e.g. `DDPMPipeline.from_pretrained(resolve_pipeline_folder(repo_id))`
    for a DDPM pipeline whose scheduler is an `AnnealedLangevinScheduler`.
    """
    path = Path(pretrained_model_name_or_path)
    if not path.is_dir():
        if path.exists() or str(pretrained_model_name_or_path).count("/") > 1:
            raise ValueError(f"{pretrained_model_name_or_path} is neither a pipeline folder nor a Hub repo id.")
        path = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs))
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{pretrained_model_name_or_path} is not a saved pipeline: model_index.json is missing. Save one with "
            "pipe.save_pretrained(folder), or load a lone U-Net with NCSNUNet2DModel.from_pretrained(folder)."
        )
    components = json.loads(index.read_text())
    missing = [name for name in ("unet", "scheduler") if name not in components or not (path / name).is_dir()]
    if missing:
        raise ValueError(
            f"{pretrained_model_name_or_path} is not an NCSN pipeline: it lacks {', '.join(missing)} "
            "(model_index.json entry and folder). An NCSN pipeline holds unet/ and scheduler/."
        )
    return str(path)
