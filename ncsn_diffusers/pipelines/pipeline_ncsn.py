"""NCSNPipeline: unconditional image generation by annealed Langevin dynamics (Song & Ermon, 2019)."""

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor

from ..guidance import DEFAULT_GUIDANCE_SCALE, check_guidance, guided_score
from ..models import NCSNppModel, NCSNRefineNet, NCSNUNet2DModel, NCSNv2Model, NoiseConditionalClassifier
from ..schedulers import (
    SCORE_SCHEDULERS,
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)
from .edm_adapter import edm_model_output, takes_denoised_sample
from .encoding import encode_latents
from .pairing import check_components, check_guidable, is_denoiser_scheduler
from .pipeline_folder import HUB_KWARGS, resolve_pipeline_folder
from .pipeline_utils import (
    OUTPUT_TYPES,
    SAVED_CALLS_KEY,
    check_callback,
    check_generator,
    check_latents,
    format_images,
    prepare_images,
    run_callback,
    samples_to_unit_range,
    saved_num_inference_steps,
    scheduler_overrides,
)
from .score_sde_ve_folder import converted_components, package_scheduler
from .timestep_adapter import is_timestep_scheduler, timestep_model_output, timestep_step_kwargs

# The range of the data when the scheduler does not record it (diffusers' EDM schedulers): diffusers' images.
DEFAULT_DATA_RANGE = (-1.0, 1.0)


def without_float32_cast_warning(record: logging.LogRecord) -> bool:
    """A logging filter that drops diffusers' warning that modules kept in float32 are being cast."""
    return "should be kept in float32" not in record.getMessage()


def drop_unset_entries(model_index: Path) -> None:
    """Removes the entries of a saved `model_index.json` that hold nothing (no classifier, no default step count):
    diffusers' own pipelines (`DDPMPipeline.from_pretrained`) warn of every key they do not take, and this package's
    loading fills both from their defaults."""
    index = json.loads(model_index.read_text())
    unset = [key for key, value in index.items() if value is None or value == [None, None]]
    if unset:
        model_index.write_text(json.dumps({k: v for k, v in index.items() if k not in unset}, indent=2) + "\n")


class NCSNPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation with a noise conditional score network and annealed Langevin dynamics
    or another sampler for score models.

    It samples two kinds of model: a score network conditioned on sigma ([`NCSNUNet2DModel`]) and a DDPM
    epsilon-prediction [`~diffusers.UNet2DModel`]. An epsilon model samples with diffusers' DDPM-family schedulers
    ([`~diffusers.DDPMScheduler`], [`~diffusers.DDIMScheduler`], [`~diffusers.DPMSolverMultistepScheduler`], ...) in
    their standard loop, as `DDPMPipeline` runs them, or with [`AnnealedLangevinScheduler`] in VP coordinates, where
    score = -epsilon / sqrt(1 - alphabar_t). A score network samples with any of the package's schedulers
    ([`AnnealedLangevinScheduler`], [`PredictorCorrectorScheduler`], [`ConsistentAnnealedSamplingScheduler`],
    [`StochasticHeunScheduler`]) or with
    diffusers' EDM solvers as they are ([`~diffusers.EDMEulerScheduler`],
    [`~diffusers.EDMDPMSolverMultistepScheduler`]), driven through the denoiser D(x, sigma) = x + sigma**2 s(x, sigma):
    the network sees the unscaled x and the real sigma.

    This model inherits from [`~diffusers.DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Parameters:
        unet ([`NCSNUNet2DModel`], [`NCSNRefineNet`], [`NCSNv2Model`], [`NCSNppModel`] or [`~diffusers.UNet2DModel`]):
            The network: s_theta(x, sigma) for a score model, epsilon_theta(x_t, t) for a DDPM model.
        scheduler ([`AnnealedLangevinScheduler`], [`PredictorCorrectorScheduler`],
            [`ConsistentAnnealedSamplingScheduler`], [`StochasticHeunScheduler`], a diffusers EDM scheduler, or for a
            DDPM U-Net a diffusers DDPM-family scheduler such as [`~diffusers.DDPMScheduler`]):
            The sampler, in the coordinates of the network.
        classifier ([`NoiseConditionalClassifier`], *optional*):
            p_phi(y | x, sigma), for class-conditional sampling with `class_labels` (classifier guidance).
        default_num_inference_steps (`int`, *optional*):
            The U-Net calls of a call without `num_inference_steps`: the count the sampler was measured at
            (`train_ncsn.py --objective epsilon` saves 20). It is kept in the scheduler's config (as
            `_default_num_inference_steps`, which diffusers' own pipelines ignore without a warning), so it goes with
            the scheduler and its `from_config` copies; a new scheduler runs at its own default. `None` keeps the
            scheduler's.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["classifier"]
    _callback_tensor_inputs = ["sample"]

    def __init__(
        self,
        unet: NCSNUNet2DModel | NCSNRefineNet | NCSNv2Model | NCSNppModel | UNet2DModel,
        scheduler: AnnealedLangevinScheduler
        | PredictorCorrectorScheduler
        | ConsistentAnnealedSamplingScheduler
        | StochasticHeunScheduler
        | EDMEulerScheduler
        | EDMDPMSolverMultistepScheduler
        | DDPMScheduler
        | DDIMScheduler
        | DPMSolverMultistepScheduler,
        classifier: NoiseConditionalClassifier | None = None,
        default_num_inference_steps: int | None = None,
    ):
        super().__init__()
        check_components(unet, scheduler)
        steps = default_num_inference_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"default_num_inference_steps={steps!r} must be a positive integer or None.")
        if steps is not None:
            scheduler.register_to_config(**{SAVED_CALLS_KEY: steps})
        self.register_modules(unet=unet, scheduler=scheduler, classifier=classifier)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Loads a pipeline from a local folder or a Hub repo id, as [`~diffusers.DiffusionPipeline.from_pretrained`].

        A repo is fetched whole with `huggingface_hub.snapshot_download` first and checked to hold `unet/` and
        `scheduler/` (`DiffusionPipeline.from_pretrained(repo_id)` loads it too, once `ncsn_diffusers` is imported).
        Hub arguments (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`) apply to that download.

        A diffusers `ScoreSdeVePipeline` folder (the Hub's `google/ncsnpp-*`) loads as it is: its U-Net as saved, its
        `ScoreSdeVeScheduler` as the [`PredictorCorrectorScheduler`] of the same sigma range, snr and data range
        [0, 1] (see `score_sde_ve_folder.py`). A `scheduler=` passed here replaces it, as for any folder.
        """
        local_dir = resolve_pipeline_folder(
            pretrained_model_name_or_path,
            **{k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs},
        )
        for name, component in converted_components(local_dir).items():
            kwargs.setdefault(name, component)
        return super().from_pretrained(local_dir, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        r"""
        Saves the pipeline as [`~diffusers.DiffusionPipeline.save_pretrained`] does (`model_index.json`, `unet/` with
        safetensors weights, `scheduler/`), without the `model_index.json` entries that hold nothing (see
        `drop_unset_entries`). It writes no model card: `ncsn_diffusers.hub.save_pipeline_with_card(pipe, folder,
        card)` saves the pipeline with its filled-in card, `ncsn_diffusers.hub.push_pipeline` uploads both.
        """
        super().save_pretrained(save_directory, *args, **kwargs)
        drop_unset_entries(Path(save_directory) / "model_index.json")

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs):
        r"""
        Builds this pipeline from the components of `pipeline`, as [`~diffusers.DiffusionPipeline.from_pipe`] does
        (which casts every component to `torch_dtype`, float32 by default). A diffusers `ScoreSdeVePipeline`'s
        `ScoreSdeVeScheduler` becomes the [`PredictorCorrectorScheduler`] of the same settings (unless `scheduler=` is
        passed). A float32 target keeps `sigma_proj` in float32, so diffusers' warning that it should be kept there is
        dropped; any other dtype still warns.
        """
        if "scheduler" not in kwargs:
            converted = package_scheduler(pipeline.scheduler)
            if converted is not pipeline.scheduler:
                kwargs["scheduler"] = converted
        dtype = kwargs.get("torch_dtype") or kwargs.get("dtype") or torch.float32
        if dtype != torch.float32:
            return super().from_pipe(pipeline, **kwargs)
        model_logger = logging.getLogger("diffusers.models.modeling_utils")
        model_logger.addFilter(without_float32_cast_warning)
        try:
            return super().from_pipe(pipeline, **kwargs)
        finally:
            model_logger.removeFilter(without_float32_cast_warning)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        latents: torch.Tensor | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["NCSNPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **scheduler_settings,
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
                Defaults to the `default_num_inference_steps` saved with the sampler when it has one, else to the
                scheduler's configured chain (annealed Langevin: L x T, +1 for denoising; diffusers' schedulers: their `num_train_timesteps`,
                as `DDPMPipeline`).
            latents (`torch.Tensor`, *optional*):
                Standard normal noise z of shape `(batch_size, num_channels, height, width)` to start the chain from,
                instead of a draw from `generator`, as in diffusers (which scales latents by `init_noise_sigma`): every
                sampler starts at sigma_max, at the centre of the scheduler's `data_range` + sigma_max z (VE score
                schedulers; with `initial_distribution="uniform"`, Phi(z) over `data_range`), at z (VP), or at
                `init_noise_sigma` z (diffusers' EDM schedulers). `generator` still drives the chain's own noise.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                y, the class to sample: one for every image, or one per image. Needs `pipe.classifier`; every step
                then uses s(x, sigma) + w grad_x log p_phi(y | x, sigma) (see `guidance.py`).
            guidance_scale (`float`, *optional*, defaults to 4.0 when `class_labels` are given):
                w; 1 samples p(x | y) for an exact classifier, larger values sharpen it, 0 samples unguided without
                calling the classifier. The default is the measured one: on the digits w = 4 puts 98-100% of the
                samples in the requested class, w = 1 66-88% (docs/controllable_generation.md).
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
            scheduler_settings (*optional*):
                Settings of the scheduler for this call only: any keyword its `set_timesteps` accepts, checked by the
                scheduler itself, e.g. `steps_per_level`, `epsilon`, `final_denoise` ([`AnnealedLangevinScheduler`]),
                `corrector_steps`, `snr`, `final_denoise` ([`PredictorCorrectorScheduler`]), `epsilon`,
                `final_denoise` ([`ConsistentAnnealedSamplingScheduler`]), `s_churn`, `s_noise`
                ([`StochasticHeunScheduler`]). `None` keeps the configured value; a keyword the scheduler does not
                take fails with the list of those it does.

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
        check_callback(callback_on_step_end)
        # Again at each call: `pipe.unet = ...` or `pipe.scheduler = ...` after construction bypasses `__init__`.
        check_components(self.unet, self.scheduler)
        shape = (batch_size, self.unet.config.in_channels, *self._sample_size())
        num_inference_steps = num_inference_steps or saved_num_inference_steps(self.scheduler)
        device = self._execution_device

        scheduler = self.scheduler
        overrides = scheduler_overrides(scheduler, **scheduler_settings)
        uses_denoiser = is_denoiser_scheduler(scheduler)
        guidance = self.prepare_guidance(class_labels, guidance_scale, batch_size, device)

        # The chain lives in float32; only the U-Net sees its own dtype.
        latents = check_latents(latents, shape)
        uses_timesteps = is_timestep_scheduler(scheduler)
        if uses_denoiser or uses_timesteps:
            num_inference_steps = num_inference_steps or scheduler.config.num_train_timesteps
            if latents is None:
                latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
            sample = latents.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma
        else:
            sample = scheduler.initial_sample(shape, generator, device, torch.float32, latents=latents)
        scheduler.set_timesteps(num_inference_steps, device=device, **overrides)
        unet_dtype = self.unet.dtype  # a walk over every module: read once, not at each of the N calls
        takes_denoised = uses_denoiser and takes_denoised_sample(scheduler)
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            if uses_timesteps:  # diffusers' DDPM loop, as DDPMPipeline / DDIMPipeline run it
                model_output = timestep_model_output(scheduler, self.unet, sample, t, unet_dtype)
                sample = scheduler.step(model_output, t, sample, **timestep_step_kwargs(scheduler, generator))
                sample = sample.prev_sample
            else:
                model_output, step_kwargs = self._step_model_output(
                    sample, t, unet_dtype, uses_denoiser, takes_denoised, guidance
                )
                sample = scheduler.step(model_output, t, sample, generator=generator, **step_kwargs).prev_sample
            sample = run_callback(self, callback_on_step_end, i, t, sample)

        data_range = self.data_range
        image = format_images(samples_to_unit_range(sample, data_range), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    @torch.no_grad()
    def encode(
        self,
        images,
        num_inference_steps: int | None = None,
        solver: str = "rk45",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        num_steps: int = 100,
    ) -> torch.Tensor:
        r"""
        Encodes images into the `latents` from which this pipeline's sampler starts, through the probability-flow ODE
        dx/dsigma = -sigma s(x, sigma) from sigma_min to the sampler's sigma_max (`probability_flow.py`), so that a
        deterministic sampler decodes them: `pipe(latents=pipe.encode(images), ...)` with e.g.
        `StochasticHeunScheduler(s_churn=0)` (VE) or `DDIMScheduler` / `DPMSolverMultistepScheduler` (DDPM U-Nets).

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                In the pipeline's output forms, in [0, 1]: PIL images, `(B, H, W, C)` arrays, `(B, C, H, W)` tensors.
            num_inference_steps (`int`, *optional*):
                The calls of the decoding chain: a DDPM-family scheduler starts at its first timestep for that count.
            solver (`str`, defaults to `"rk45"`), rtol, atol (`float`, default to 1e-5), num_steps (`int`):
                The ODE solver: scipy's adaptive RK45 at `rtol` / `atol`, or `"heun"` with `num_steps` steps.

        Returns:
            `torch.Tensor` of shape `(B, C, H, W)`: z, the standard normal draw of `__call__`'s `latents` (VE: the
            ODE's end is centre + sigma_max z).
        """
        check_components(self.unet, self.scheduler)
        data_range = self.data_range
        low, high = data_range
        unit = prepare_images(images, self.unet.config.in_channels, self.unet.config.sample_size, name="images")
        steps = (
            num_inference_steps
            or saved_num_inference_steps(self.scheduler)
            or self.scheduler.config.get("num_train_timesteps")
        )
        return encode_latents(
            self,
            low + (high - low) * unit,
            data_range,
            steps,
            solver=solver,
            rtol=rtol,
            atol=atol,
            num_steps=num_steps,
        )

    @property
    def data_range(self) -> tuple[float, float]:
        """The range of the model's data: the package's scheduler's `data_range`, [-1, 1] for diffusers' own (their
        config may carry a `data_range` they were converted from, which they ignore)."""
        return self.scheduler.data_range if isinstance(self.scheduler, SCORE_SCHEDULERS) else DEFAULT_DATA_RANGE

    def prepare_guidance(self, class_labels, guidance_scale: float | None, num_images: int, device) -> tuple:
        """(classifier, labels, w) for `guided_score`: labels `None` (no guidance) unless `class_labels` are given."""
        labels = check_guidance(self.classifier, class_labels, guidance_scale, num_images, device)
        if labels is not None and not is_denoiser_scheduler(self.scheduler):
            check_guidable(self.scheduler)
        return self.classifier, labels, DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale

    def _step_model_output(
        self, sample: torch.Tensor, t, unet_dtype: torch.dtype, uses_denoiser: bool, takes_denoised: bool, guidance
    ) -> tuple[torch.Tensor, dict]:
        """
        What `scheduler.step` takes at (sample, t), with its extra keyword arguments: the (guided) score for the
        package's schedulers, the denoiser D = x + sigma**2 s (or the output its `precondition_outputs` turns into D)
        for diffusers' EDM schedulers.
        """
        if uses_denoiser:
            output = edm_model_output(self.scheduler, self.unet, sample, t, unet_dtype, takes_denoised, guidance)
            return output, ({"pred_original_sample": output} if takes_denoised else {})
        return guided_score(self.unet(sample.to(unet_dtype), t).sample, sample, t, *guidance), {}

    def check_inputs(self, batch_size, generator, output_type, callback_on_step_end_tensor_inputs):
        check_generator(generator)
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
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
            raise ValueError(
                f"pipe.unet.config.sample_size={self.unet.config.sample_size!r} is no image size; set a positive "
                "height and width with pipe.unet.register_to_config(sample_size=32) or sample_size=(32, 48)."
            )
        return size
