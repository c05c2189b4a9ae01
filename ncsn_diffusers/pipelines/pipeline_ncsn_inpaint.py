"""NCSNInpaintPipeline: image inpainting by annealed Langevin dynamics (Song & Ermon, 2019, Sec. 5 and Fig. 6)."""

from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .pairing import check_components, check_score_chain, is_denoiser_scheduler
from .pipeline_ncsn import NCSNPipeline
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
from .task_samplers import ConditionalTaskSamplerMixin

ImageInput = (
    PIL.Image.Image | np.ndarray | torch.Tensor | list[PIL.Image.Image] | list[np.ndarray] | list[torch.Tensor]
)


class NCSNInpaintPipeline(ConditionalTaskSamplerMixin, NCSNPipeline):
    r"""
    Pipeline for image inpainting with a noise conditional score network and annealed Langevin dynamics.

    Implements the inpainting procedure of Song & Ermon (2019), Sec. 5 (the authors' `anneal_Langevin_dynamics_
    inpainting`): at each noise level sigma_i the known pixels are set to the reference image perturbed to that level,
    x_known = y + sigma_i z (VE; sqrt(alphabar_t) y + sqrt(1 - alphabar_t) z in VP, through the scheduler's
    `add_noise`), with one draw z per level, and the unknown pixels follow the scheduler's Langevin steps. The whole
    image thus stays on the sigma_i-perturbed data distribution, and the unknown pixels sample p_sigma_i(x_unknown |
    x_known) at each level. The returned images hold the input's known pixels exactly. With `class_labels` (and a
    `classifier`) every step uses the guided score s + w grad_x log p_phi(y | x, sigma), as [`NCSNPipeline`] does.

    Every score-model scheduler of [`NCSNPipeline`] runs the chain ([`AnnealedLangevinScheduler`], the paper's;
    [`PredictorCorrectorScheduler`], [`ConsistentAnnealedSamplingScheduler`], [`StochasticHeunScheduler`]); diffusers'
    EDM schedulers, which have no perturbation of the reference at the chain's level, do not.

    It takes the same components as [`NCSNPipeline`] and loads from the same folders and Hub repos:
    `NCSNInpaintPipeline.from_pretrained("ncsn-digits")` or `NCSNInpaintPipeline.from_pipe(ncsn_pipeline)`. Loaded
    so, it runs the sampler measured best for inpainting (annealed Langevin over the saved noise range, see
    `task_samplers.py`), not the one saved for unconditional sampling, unless a `scheduler=` is passed.

    Parameters:
        unet ([`NCSNUNet2DModel`] or [`~diffusers.UNet2DModel`]):
            The network: s_theta(x, sigma) for a score model, epsilon_theta(x_t, t) for a DDPM model.
        scheduler ([`AnnealedLangevinScheduler`]):
            The annealed Langevin sampler, in the coordinates of the network.
        classifier ([`NoiseConditionalClassifier`], *optional*):
            p_phi(y | x, sigma), for classifier guidance with `class_labels`.
    """

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["NCSNInpaintPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **scheduler_settings,
    ) -> ImagePipelineOutput | tuple:
        r"""
        The call function to the pipeline for inpainting.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The reference image(s) y, in [0, 1]: PIL images, arrays of shape `(H, W, C)` or `(B, H, W, C)`, or
                tensors of shape `(C, H, W)` or `(B, C, H, W)`, as diffusers' image processor takes them. PIL images
                are converted to the model's mode (grayscale or RGB).
            mask_image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The mask, white (1) where pixels are to be generated and black (0) where they are kept, of the image's
                height and width: PIL, arrays or tensors of shape `(H, W)`, `(B, H, W)` or `(B, 1, H, W)`; one mask for
                all images or one per image. Values must lie in [0, 1]; they are binarised at 0.5.
            batch_size (`int`, *optional*, defaults to 1):
                The number of completions of each image.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A generator, or one per output image (`len(images) * batch_size`), to make inpainting deterministic.
            num_inference_steps (`int`, *optional*):
                The number of U-Net calls, spread over the noise levels (see
                [`AnnealedLangevinScheduler.set_timesteps`]). Defaults to the scheduler's L x T (+1 for denoising).
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                Guide every step towards class y with `pipe.classifier`, as [`NCSNPipeline`] does (one label, or one
                per output image): at `guidance_scale=1` the generated pixels sample p(x_unknown | x_known, y).
            guidance_scale (`float`, *optional*, defaults to 4.0 when `class_labels` are given):
                w of the guided score s + w grad_x log p_phi(y | x, sigma); 0 is unguided, bit for bit.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (`(B, H, W, C)`) or `"pt"` (`(B, C, H, W)`), in [0, 1]; the completions of image k
                are entries `k * batch_size` to `(k + 1) * batch_size - 1`.
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
        >>> import torch
        >>> from ncsn_diffusers import NCSNInpaintPipeline, load_digits_images

        >>> pipe = NCSNInpaintPipeline.from_pretrained("ncsn-digits")
        >>> digits = load_digits_images(resolution=16, split="test")[0][:4]  # (4, 1, 16, 16) in [0, 1]
        >>> mask = torch.zeros(1, 16, 16)
        >>> mask[:, 8:] = 1  # generate the bottom half
        >>> images = pipe(digits, mask, batch_size=3, output_type="pt").images  # (12, 1, 16, 16)
        ```

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images, in a tuple when `return_dict` is `False`.
        """
        check_components(self.unet, self.scheduler)
        check_score_chain(self, self.scheduler)
        if is_denoiser_scheduler(self.scheduler):
            raise ValueError(
                f"NCSNInpaintPipeline perturbs the known pixels with the chain's own scheduler.add_noise, which "
                f"{type(self.scheduler).__name__} (a denoiser scheduler) does not provide at its step's sigma; use "
                "AnnealedLangevinScheduler, PredictorCorrectorScheduler, ConsistentAnnealedSamplingScheduler or "
                "StochasticHeunScheduler."
            )
        overrides = scheduler_overrides(self.scheduler, **scheduler_settings)
        check_generator(generator)
        check_callback(callback_on_step_end)
        reference, generate = self.prepare_image_and_mask(image, mask_image)  # (N, C, H, W) in [0, 1], (N, 1, H, W)
        num_outputs = check_generator_per_output(generator, len(reference), batch_size, "image(s)")
        # the generator list was checked above, against the number of outputs rather than batch_size
        self.check_inputs(batch_size, None, output_type, callback_on_step_end_tensor_inputs or ["sample"])
        device = self._execution_device
        guidance = self.prepare_guidance(class_labels, guidance_scale, num_outputs, device)
        reference = reference.repeat_interleave(batch_size, dim=0).to(device)
        generate = generate.repeat_interleave(batch_size, dim=0).to(device)
        low, high = self.scheduler.data_range
        y = low + (high - low) * reference  # the reference in the model's data range

        sample = self.scheduler.initial_sample(y.shape, generator=generator, device=device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=device, **overrides)
        timesteps = self.scheduler.timesteps.cpu()
        new_level = torch.ones(len(timesteps), dtype=torch.bool)
        new_level[1:] = timesteps[1:] != timesteps[:-1]
        unet_dtype = self.unet.dtype
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if new_level[i]:
                # x_known = y + sigma_i z (VE), one z per level, held for the level's T steps as in the authors' code
                z = randn_tensor(y.shape, generator=generator, device=device, dtype=torch.float32)
                known = self.scheduler.add_noise(y, z, t)
            sample = torch.where(generate, sample, known)
            model_output, _ = self._step_model_output(sample, t, unet_dtype, False, False, guidance)
            sample = self.scheduler.step(model_output, t, sample, generator=generator).prev_sample
            sample = run_callback(self, callback_on_step_end, i, t, sample)

        # The known pixels are the input's own values in [0, 1], not a round trip through the data range.
        image = torch.where(generate, samples_to_unit_range(sample, self.scheduler.data_range), reference)
        image = format_images(image, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def prepare_image_and_mask(self, image: ImageInput, mask_image: ImageInput) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The reference images as a float32 tensor `(N, C, H, W)` in [0, 1] and the mask as a boolean tensor
        `(N, 1, H, W)`, True where pixels are generated; raises a ValueError naming what does not fit.
        """
        if image is None or mask_image is None:
            raise ValueError("NCSNInpaintPipeline needs both `image` and `mask_image` (white = pixels to generate).")
        reference = prepare_images(image, self.unet.config.in_channels, self.unet.config.sample_size)
        return reference, prepare_mask(mask_image, reference)
