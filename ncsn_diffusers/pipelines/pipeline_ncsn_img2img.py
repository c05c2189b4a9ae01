"""NCSNImg2ImgPipeline: image-to-image translation and editing with a score model (SDEdit, Meng et al., ICLR 2022)."""

from collections.abc import Callable

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..schedulers import StochasticHeunScheduler
from .edm_adapter import takes_denoised_sample
from .pairing import check_components, check_score_chain, is_denoiser_scheduler
from .pipeline_ncsn import DEFAULT_DATA_RANGE, NCSNPipeline
from .pipeline_utils import (
    check_callback,
    check_generator,
    check_generator_per_output,
    format_images,
    prepare_images,
    prepare_mask,
    run_callback,
    samples_to_unit_range,
    scheduler_overrides,
)


class NCSNImg2ImgPipeline(NCSNPipeline):
    r"""
    Pipeline for image-to-image generation with a score model: SDEdit (Meng et al., 2022, Algorithm 1, VE).

    The guide y is perturbed to the noise level sigma_0 of the chain's step at which the run begins,
    x = y + sigma_0 z, and the chain's remaining steps run from there: a small `strength` stays close to the guide,
    a large one makes the result realistic. With an exact score of Gaussian data N(mu, s**2 I), the reverse SDE returns
    N(mu + a (y - mu), (1 - a**2) s**2 I) with a = s**2 / (s**2 + sigma_0**2), and the probability-flow ODE (the EDM
    solvers, or `StochasticHeunScheduler(s_churn=0)`) returns N(mu + sqrt(a) (y - mu), (1 - a) s**2 I).

    With `mask_image` (white = edit) the pixels outside the mask are reset before every model call to the guide
    perturbed to that call's level with the draw z of the start, y + sigma_j z (SDEdit's `image_editing.py`), and are
    returned as the input's own values.

    It runs every scheduler [`NCSNPipeline`] runs, and guidance (`class_labels`) as [`NCSNPipeline`] does. Build it
    from any loaded pipeline with `NCSNImg2ImgPipeline.from_pipe(pipe)`, or load it with `from_pretrained`.
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        strength: float = 0.5,
        mask_image=None,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["NCSNImg2ImgPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **scheduler_settings,
    ) -> ImagePipelineOutput | tuple:
        r"""
        The call function to the pipeline for image-to-image generation.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The guide image(s) y, in [0, 1]: PIL images, arrays `(H, W, C)` / `(B, H, W, C)` or tensors
                `(C, H, W)` / `(B, C, H, W)`, as diffusers' image processor takes them.
            strength (`float`, *optional*, defaults to 0.5):
                The fraction of the chain's `num_inference_steps` model calls that runs (diffusers' meaning): 0
                returns the image, 1 runs the whole chain from y + sigma_max z (y leaks through only as
                s**2 / (s**2 + sigma_max**2)). The run begins at the first call of a noise level; SDEdit's t0 = 0.5 is
                `strength=0.5`.
            mask_image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them, *optional*):
                White (1) where the image is edited, black (0) where it is kept: `(H, W)`, `(B, H, W)`,
                `(B, 1, H, W)` or PIL, one for all images or one per image, binarised at 0.5.
            batch_size (`int`, *optional*, defaults to 1):
                The number of edits of each image; those of image k are entries `k * batch_size` to
                `(k + 1) * batch_size - 1`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A generator, or one per output image.
            num_inference_steps (`int`, *optional*):
                The number of model calls of the whole chain, of which the last `strength` fraction runs.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                Guide every step towards class y with `pipe.classifier`, as [`NCSNPipeline`] does (one label, or one
                per output image).
            guidance_scale (`float`, *optional*, defaults to 4.0 when `class_labels` are given):
                w of the guided score s + w grad_x log p_phi(y | x, sigma).
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (`(B, H, W, C)`) or `"pt"` (`(B, C, H, W)`), in [0, 1].
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`~pipelines.ImagePipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called after each step as `callback_on_step_end(self, i, t, callback_kwargs)`; it may return a dict
                with a replacement `"sample"`.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                The tensors passed in `callback_kwargs`; only `"sample"` is available.
            scheduler_settings (*optional*):
                Settings of the scheduler for this call only, as in [`NCSNPipeline`] (any keyword its
                `set_timesteps` accepts).

        Examples:

        ```py
        >>> from ncsn_diffusers import NCSNImg2ImgPipeline, NCSNPipeline, load_digits_images

        >>> pipe = NCSNImg2ImgPipeline.from_pipe(NCSNPipeline.from_pretrained("ncsn-digits"))
        >>> digits = load_digits_images(resolution=16, split="test")[0][:4]  # (4, 1, 16, 16) in [0, 1]
        >>> edits = pipe(digits, strength=0.5, batch_size=3, output_type="pt").images  # (12, 1, 16, 16)
        ```

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images, in a tuple when `return_dict` is `False`.
        """
        check_components(self.unet, self.scheduler)
        check_score_chain(self, self.scheduler)
        scheduler = self.scheduler
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f"strength={strength!r} must lie in [0, 1] (0 returns the image, 1 ignores it).")
        overrides = scheduler_overrides(scheduler, **scheduler_settings)
        check_generator(generator)
        check_callback(callback_on_step_end)
        reference = prepare_images(image, self.unet.config.in_channels, self.unet.config.sample_size)
        edit = None if mask_image is None else prepare_mask(mask_image, reference)  # (N, 1, H, W), True = edit
        num_outputs = check_generator_per_output(generator, len(reference), batch_size, "image(s)")
        self.check_inputs(batch_size, None, output_type, callback_on_step_end_tensor_inputs or ["sample"])
        device = self._execution_device
        uses_denoiser = is_denoiser_scheduler(scheduler)
        guidance = self.prepare_guidance(class_labels, guidance_scale, num_outputs, device)

        reference = reference.repeat_interleave(batch_size, dim=0).to(device)
        if edit is not None:
            edit = edit.repeat_interleave(batch_size, dim=0).to(device)
        if uses_denoiser:
            num_inference_steps = num_inference_steps or scheduler.config.num_train_timesteps
        scheduler.set_timesteps(num_inference_steps, device=device, **overrides)
        begin = begin_index(scheduler, strength)
        if begin == len(scheduler.timesteps):  # strength 0: nothing runs, the image comes back as it was
            image = format_images(reference, output_type)
            return ImagePipelineOutput(images=image) if return_dict else (image,)

        low, high = getattr(scheduler, "data_range", DEFAULT_DATA_RANGE)
        y = low + (high - low) * reference  # the guide in the model's data range
        z = randn_tensor(y.shape, generator=generator, device=device, dtype=torch.float32)
        scheduler.set_begin_index(begin)
        timesteps = scheduler.timesteps[begin:]
        sample = self._perturb(y, z, begin)
        unet_dtype = self.unet.dtype
        takes_denoised = uses_denoiser and takes_denoised_sample(scheduler)
        for i, t in enumerate(self.progress_bar(timesteps)):
            if edit is not None:
                sample = torch.where(edit, sample, self._perturb(y, z, begin + i))
            model_output, step_kwargs = self._step_model_output(
                sample, t, unet_dtype, uses_denoiser, takes_denoised, guidance
            )
            sample = scheduler.step(model_output, t, sample, generator=generator, **step_kwargs).prev_sample
            sample = run_callback(self, callback_on_step_end, i, t, sample)

        image = samples_to_unit_range(sample, (low, high))
        if edit is not None:  # the kept pixels are the input's own values, not a round trip through the chain
            image = torch.where(edit, image, reference)
        image = format_images(image, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def _perturb(self, y: torch.Tensor, z: torch.Tensor, index: int) -> torch.Tensor:
        """y perturbed to the level of model call `index`: y + sigma z (VE; the scheduler's own add_noise in VP)."""
        if is_denoiser_scheduler(self.scheduler):
            return y + self.scheduler.sigmas[index].item() * z
        return self.scheduler.add_noise(y, z, self.scheduler.timesteps[index])


def begin_index(scheduler, strength: float) -> int:
    """
    The model call at which a run of the last `strength` fraction of `scheduler.timesteps` begins (diffusers'
    `num_inference_steps - int(num_inference_steps * strength)`), moved back to the first call of its noise level
    so that the chain starts where a level does; `len(timesteps)` for strength 0.
    """
    timesteps = scheduler.timesteps.tolist()
    num_calls = len(timesteps)
    if strength == 0:
        return num_calls
    begin = min(num_calls - int(num_calls * strength), num_calls - 1)
    while begin > 0 and not starts_a_level(scheduler, timesteps, begin):
        begin -= 1
    return begin


def starts_a_level(scheduler, timesteps: list[float], index: int) -> bool:
    """Whether model call `index` is the first of a noise level: a new sigma (a level's Langevin steps share one),
    and for the stochastic Heun sampler an Euler call (even index), not the Heun correction that follows it."""
    if isinstance(scheduler, StochasticHeunScheduler):
        return index % 2 == 0
    return timesteps[index] != timesteps[index - 1]
