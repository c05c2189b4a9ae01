"""NCSNPosteriorPipeline: posterior sampling p(x | y) for y = A x + n with a score network as the prior."""

import math
from collections.abc import Callable
from functools import partial

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..inverse import (
    METHODS,
    LinearMeasurement,
    check_measurement,
    check_operator,
    dps_correction,
    measurement_in_data_range,
    posterior_score,
)
from ..parameterization import model_output_from_score, score_from_model_output
from ..schedulers.scheduling_utils import check_nonnegative_float, check_positive_float, check_positive_int
from .edm_adapter import edm_output_from_score, edm_sigma, takes_denoised_sample
from .pairing import check_components, check_score_chain, is_denoiser_scheduler
from .pipeline_ncsn import NCSNPipeline
from .pipeline_utils import (
    check_callback,
    check_generator,
    check_generator_per_output,
    format_images,
    run_callback,
    samples_to_unit_range,
    saved_num_inference_steps,
    scheduler_overrides,
)
from .task_samplers import ConditionalTaskSamplerMixin

DPS_STEP_SIZE = 2.0


def chain_noise_level(scheduler, t) -> tuple[float, float]:
    """(sigma, a) of x_t = a x_0 + sigma z at the score scheduler's timestep `t`: (t, 1) in VE, where timesteps are the
    sigmas; (sqrt(1 - abar_t), sqrt(abar_t)) at DDPM timestep t in VP."""
    if getattr(scheduler.config, "noise_space", "ve") == "vp":
        alpha_bar = scheduler.alphas_cumprod[int(t)].item()
        return math.sqrt(1.0 - alpha_bar), math.sqrt(alpha_bar)
    return float(t), 1.0


def check_finite_chain(sample: torch.Tensor, method: str, step: int, sigma: float) -> None:
    """Fails loudly rather than returning NaN images when a chain has diverged."""
    if not torch.isfinite(sample).all():
        bad = int((~torch.isfinite(sample.flatten(1))).any(1).sum())
        raise FloatingPointError(
            f"method={method!r} diverged: {bad} of {len(sample)} chains are not finite after step {step} "
            f"(sigma={sigma:.4g}). Use gentler likelihood steps (a smaller dps_step_size for 'dps', a larger gamma for "
            "'langevin'), more num_inference_steps, or method='mmps'."
        )


class NCSNPosteriorPipeline(ConditionalTaskSamplerMixin, NCSNPipeline):
    r"""
    Pipeline for posterior sampling in linear inverse problems y = A x + n, n ~ N(0, sigma_y**2 I), with a noise
    conditional score network s(x, sigma) as the prior p(x).

    Every step replaces the prior's score by the posterior's, s(x, sigma) + grad_x log p(y | x_sigma), the likelihood
    term approximated by `method` (see `ncsn_diffusers/inverse/likelihood_score.py`): `"langevin"` (Jalal et al.,
    2021) or `"mmps"` (Rozet et al., 2024; exact for Gaussian data); `"dps"` (Chung et al., 2023, Algorithm 1) instead
    steps with the prior's score and then moves the sample by -zeta grad ||y - A D(x)||. Every sampler of
    [`NCSNPipeline`] runs it: the package's score schedulers, diffusers' EDM solvers through the denoiser
    D = x + sigma**2 s, and DDPM epsilon models on [`AnnealedLangevinScheduler`] in VP coordinates, where the
    likelihood is taken at x_0 = x_t / sqrt(abar_t) (the VP-to-VE map).

    It takes the same components as [`NCSNPipeline`] and loads from the same folders: `from_pretrained(folder)` and
    `from_pipe(pipe)` run the sampler measured best for the task (annealed Langevin, 10 levels x 10 steps + denoising,
    over the saved noise range; see `task_samplers.py`) unless a `scheduler=` is passed.

    Parameters:
        unet ([`NCSNUNet2DModel`], [`NCSNRefineNet`], [`NCSNv2Model`] or [`~diffusers.UNet2DModel`]):
            The prior: s_theta(x, sigma) for a score model, epsilon_theta(x_t, t) for a DDPM model.
        scheduler ([`AnnealedLangevinScheduler`], [`PredictorCorrectorScheduler`],
            [`ConsistentAnnealedSamplingScheduler`], [`StochasticHeunScheduler`] or a diffusers EDM scheduler):
            The sampler.
    """

    @torch.no_grad()
    def __call__(
        self,
        measurement: torch.Tensor,
        operator,
        noise_std: float,
        method: str = "mmps",
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        gamma: float = 1.0,
        cg_iterations: int = 3,
        dps_step_size: float = DPS_STEP_SIZE,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["NCSNPosteriorPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **scheduler_settings,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Draws `batch_size` samples of p(x | y) for each measurement y.

        Args:
            measurement (`torch.Tensor` of shape `(N, ...)`):
                y = A x + n of N images x in [0, 1] (the pipeline's output range); one measurement may come without
                its batch axis.
            operator:
                A, any linear operator with deepinv's method names `A(x)` and `A_adjoint(y)` on images
                `(B, C, H, W)`: deepinv's `LinearPhysics` as they are, or `ncsn_diffusers.inverse`'s `MaskOperator`,
                `AveragePoolOperator`, `GaussianBlurOperator`, `IdentityOperator`, `MatrixOperator`.
            noise_std (`float`):
                sigma_y >= 0, the standard deviation of n, in the units of images in [0, 1] (`"dps"` ignores it).
            method (`str`, defaults to `"mmps"`):
                The likelihood term grad_x log p(y | x_sigma): `"langevin"`, `"dps"` or `"mmps"`.
            batch_size (`int`, *optional*, defaults to 1):
                Posterior samples per measurement; those of measurement k are entries `k * batch_size` to
                `(k + 1) * batch_size - 1`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A generator, or one per output image (`N * batch_size`).
            num_inference_steps (`int`, *optional*):
                The number of U-Net calls (see [`NCSNPipeline`]).
            gamma (`float`, defaults to 1.0):
                `"langevin"`: the likelihood's variance is sigma_y**2 + gamma sigma**2 at noise level sigma.
            cg_iterations (`int`, defaults to 3):
                `"mmps"`: conjugate-gradient steps per call, each one vector-Jacobian product of the network.
            dps_step_size (`float`, defaults to 2.0):
                `"dps"`: zeta, each call's displacement -zeta grad_x ||y - A D(x)|| after the sampler's step (Chung et
                al.'s zeta_i = zeta / ||y - A D||), in the model's data units; 2.0 is measured on the digits
                (`docs/inverse_problems.md`); it grows with the image's size.
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
                Settings of the scheduler for this call only, as in [`NCSNPipeline`].

        Examples:

        ```py
        >>> import torch
        >>> from ncsn_diffusers import NCSNPosteriorPipeline, load_digits_images
        >>> from ncsn_diffusers.inverse import AveragePoolOperator

        >>> pipe = NCSNPosteriorPipeline.from_pretrained("ncsn-digits")
        >>> digits = load_digits_images(resolution=16, split="test")[0][:4]  # (4, 1, 16, 16) in [0, 1]
        >>> A = AveragePoolOperator(4)  # 16x16 -> 4x4
        >>> y = A.A(digits) + 0.05 * torch.randn(4, 1, 4, 4)
        >>> samples = pipe(y, A, noise_std=0.05, batch_size=8, output_type="pt").images  # (32, 1, 16, 16)
        ```

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images, in a tuple when `return_dict` is `False`.
        """
        check_components(self.unet, self.scheduler)
        check_score_chain(self, self.scheduler)
        scheduler = self.scheduler
        overrides = scheduler_overrides(scheduler, **scheduler_settings)
        check_generator(generator)
        check_callback(callback_on_step_end)
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not supported; choose one of {list(METHODS)}.")
        check_nonnegative_float("gamma", gamma, "It weighs the chain's noise sigma**2 in the likelihood (1 = Jalal).")
        check_positive_int("cg_iterations", cg_iterations)
        check_positive_float("dps_step_size", dps_step_size)
        image_shape = (self.unet.config.in_channels, *self._sample_size())
        y, noise_std = check_measurement(measurement, check_operator(operator, image_shape), noise_std)
        num_outputs = check_generator_per_output(generator, len(y), batch_size, "measurement(s)")
        self.check_inputs(batch_size, None, output_type, callback_on_step_end_tensor_inputs or ["sample"])

        device = self._execution_device
        data_range = self.data_range
        y, noise_std = measurement_in_data_range(y.to(device), operator, noise_std, data_range, image_shape)
        problem = LinearMeasurement(y.repeat_interleave(batch_size, dim=0), operator, noise_std)
        shape = (num_outputs, *image_shape)
        uses_denoiser = is_denoiser_scheduler(scheduler)
        num_inference_steps = num_inference_steps or saved_num_inference_steps(self.scheduler)
        if uses_denoiser:
            num_inference_steps = num_inference_steps or scheduler.config.num_train_timesteps
            sample = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
            sample = sample * scheduler.init_noise_sigma
        else:
            sample = scheduler.initial_sample(shape, generator, device, torch.float32)
        scheduler.set_timesteps(num_inference_steps, device=device, **overrides)
        takes_denoised = uses_denoiser and takes_denoised_sample(scheduler)
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            if uses_denoiser:
                sigma, signal_scale = edm_sigma(scheduler, sample, t), 1.0
                unet_t = sigma
            else:
                (sigma, signal_scale), unet_t = chain_noise_level(scheduler, t), t
            score_fn = partial(self._prior_score, unet_t=unet_t, sigma=sigma, signal_scale=signal_scale)
            if method == "dps":
                score, displacement = dps_correction(score_fn, sample, sigma, signal_scale, problem, dps_step_size)
            else:
                score = posterior_score(
                    method, score_fn, sample, sigma, signal_scale, problem, gamma=gamma, cg_iterations=cg_iterations
                )
            if uses_denoiser:
                model_output = edm_output_from_score(scheduler, score, sample, sigma, takes_denoised)
                step_kwargs = {"pred_original_sample": model_output} if takes_denoised else {}
            else:
                prediction_type = scheduler.config.prediction_type
                model_output = model_output_from_score(score, sample, sigma, signal_scale, prediction_type)
                step_kwargs = {}
            sample = scheduler.step(model_output, t, sample, generator=generator, **step_kwargs).prev_sample
            if method == "dps":
                sample = sample + displacement
            check_finite_chain(sample, method, i, sigma)
            sample = run_callback(self, callback_on_step_end, i, t, sample)

        image = format_images(samples_to_unit_range(sample, data_range), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def _prior_score(self, x: torch.Tensor, unet_t, sigma: float, signal_scale: float) -> torch.Tensor:
        """s(x_t), the prior's score in the chain's coordinates, from one U-Net call at its timestep `unet_t`."""
        output = self.unet(x.to(self.unet.dtype), unet_t).sample.float()
        if is_denoiser_scheduler(self.scheduler):  # EDM solvers drive a score model at the real sigma
            return output
        return score_from_model_output(output, x, sigma, signal_scale, self.scheduler.config.prediction_type)
