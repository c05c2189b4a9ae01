"""Predictor-corrector sampling of the VE SDE, Song et al. (ICLR 2021), Algorithm 2, as a diffusers scheduler."""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import sample_from_score, score_from_model_output
from .compatible_configs import ScoreConfigMixin
from .noise_ladders import geometric_sigmas
from .scheduling_utils import (
    MAX_MODEL_CALLS,
    SCORE_COMPATIBLES,
    ScoreChainMixin,
    ScoreSchedulerOutput,
    check_bool,
    check_choice,
    check_data_range,
    check_num_calls,
    check_positive_float,
    check_positive_int,
    check_sigma_range,
    resolve,
)

PREDICTION_TYPES = ("score", "epsilon", "sample")
CORRECTOR_NORMS = ("per_sample", "batch_mean")
PREDICTORS = ("reverse_diffusion", "ancestral")


class PredictorCorrectorScheduler(ScoreConfigMixin, ScoreChainMixin, SchedulerMixin, ConfigMixin):
    """
    Predictor-corrector sampling of the variance-exploding SDE (Song et al., 2021, Algorithm 2 with the
    reverse-diffusion predictor and the Langevin corrector), for a score model s(x, sigma).

    On a geometric ladder sigma_1 > ... > sigma_N (sigma_{N+1} = 0), each level i runs k Langevin corrector steps
    x <- x + eps_i s(x, sigma_i) + sqrt(2 eps_i) z, whose step size follows the signal-to-noise ratio r,
    eps_i = 2 (r ||z|| / ||s||)**2 (norms per sample, or their means over the batch), and then one reverse-diffusion predictor step
    x <- x + (sigma_i**2 - sigma_{i+1}**2) s(x, sigma_i) + sqrt(sigma_i**2 - sigma_{i+1}**2) z, or with
    `predictor="ancestral"` the same mean with the exact posterior variance sigma_{i+1}**2 (sigma_i**2 -
    sigma_{i+1}**2) / sigma_i**2 (score SDE's ancestral sampling predictor). The reverse-diffusion step adds
    sigma_i**2 (1 - sigma_{i+1}**2 / sigma_i**2)**2 more variance than the next level holds: nothing on a fine ladder,
    a sixth of sigma_i**2 per level on 25 levels over 8.5 -> 0.02, which leaves the grain of too few levels in the
    final samples (docs/sampling.md). `k = 0` with the ancestral predictor is ancestral sampling.
    The predictor's last step goes to sigma = 0; with `final_denoise` it adds no noise there, which makes it
    Tweedie's denoiser x + sigma_N**2 s(x, sigma_N) (score SDE's `noise_removal`) at no extra model call.

    `timesteps` holds the sigma of each model call (k + 1 per level), so a model trained with continuous sigma
    samples on a ladder of any length: `set_timesteps(num_inference_steps)` lays out exactly that many calls over
    N = ceil(calls / (k + 1)) levels, the first levels taking fewer corrector steps where the calls do not divide.

    Args:
        sigma_max (`float`, defaults to 50.0):
            sigma_1, the largest noise level (score SDE's CIFAR-10 VE models use 50 for data in [0, 1]).
        sigma_min (`float`, defaults to 0.01):
            sigma_N, the smallest noise level.
        num_noise_levels (`int`, defaults to 1000):
            N, the levels of the ladder when `set_timesteps` is given no number of calls.
        corrector_steps (`int`, defaults to 1):
            k, the Langevin corrector steps per level; 0 gives ancestral sampling (the predictor alone).
        snr (`float`, defaults to 0.16):
            r, the corrector's signal-to-noise ratio (0.16 for the CIFAR-10 VE models of Song et al.).
        predictor (`str`, defaults to `"reverse_diffusion"`):
            The predictor's noise: `"reverse_diffusion"` (variance sigma_i**2 - sigma_{i+1}**2, score SDE's default and
            what earlier releases saved) or `"ancestral"` (the posterior variance, exact at any ladder length).
        final_denoise (`bool`, defaults to `True`):
            End the chain with Tweedie's denoiser: the last model call returns x + sigma_N**2 s(x, sigma_N) instead of
            a noisy update. Every scheduler's `final_denoise` means this and, for a given `num_inference_steps`, costs no extra call. Here that call is the last predictor step (sigma_N -> 0) itself, which
            then returns its mean without noise (score SDE's `noise_removal`), so no chain has an extra call.
        prediction_type (`str`, defaults to `"score"`):
            What the model returns: `"score"`, `"epsilon"` (score = -epsilon / sigma) or `"sample"` (x_0 hat).
        data_range (`tuple[float, float]`, *optional*):
            The range of the training data, (0, 1) if `None`. The chain starts at N(its centre, sigma_1**2 I).
        corrector_norms (`str`, defaults to `"per_sample"`):
            The norms in the corrector's step size: `"per_sample"`, each image's own ||z|| / ||s|| (an image's chain
            does not depend on the rest of its batch); `"batch_mean"`, their means over the batch, as in Song et
            al.'s code and diffusers' `ScoreSdeVeScheduler` (from whose config it is set). A step that follows each
            sample's own score norm is larger where ||s|| is small, which widens the stationary law: on N(0.5, 0.1**2)
            in 48 dimensions at 200 calls the per-sample rule gives std 0.104, the batch mean 0.1007.
    """

    _compatibles = list(SCORE_COMPATIBLES)

    @register_to_config
    def __init__(
        self,
        sigma_max: float = 50.0,
        sigma_min: float = 0.01,
        num_noise_levels: int = 1000,
        corrector_steps: int = 1,
        snr: float = 0.16,
        final_denoise: bool = True,
        predictor: str = "reverse_diffusion",
        prediction_type: str = "score",
        data_range: tuple[float, float] | None = None,
        corrector_norms: str = "per_sample",
    ):
        check_sigma_range(sigma_max, sigma_min)
        check_num_calls("num_noise_levels", num_noise_levels)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("corrector_norms", corrector_norms, CORRECTOR_NORMS)
        self.data_range = check_data_range((0.0, 1.0) if data_range is None else data_range)
        self._run_settings()
        self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_noise_levels).float()
        self.init_noise_sigma = float(sigma_max)

    def __len__(self):
        return self.config.num_noise_levels * (self.config.corrector_steps + 1)

    def _run_settings(self, corrector_steps=None, snr=None, final_denoise=None, predictor=None) -> dict:
        """The config with this call's overrides, checked in one place for the constructor and `set_timesteps`."""
        overrides = dict(corrector_steps=corrector_steps, snr=snr, final_denoise=final_denoise, predictor=predictor)
        run = resolve(self.config, overrides)
        check_choice("predictor", run["predictor"], PREDICTORS)
        check_positive_int("corrector_steps", run["corrector_steps"], minimum=0, maximum=MAX_MODEL_CALLS)
        check_positive_float("snr", run["snr"], "It is r of the Langevin corrector; Song et al. use 0.16.")
        check_bool("final_denoise", run["final_denoise"])
        return run

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        corrector_steps: int | None = None,
        snr: float | None = None,
        final_denoise: bool | None = None,
        predictor: str | None = None,
    ):
        """
        Lays the N levels of k corrector steps and one predictor step out as `timesteps`, one entry per model call.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of model calls; `None` gives N = `num_noise_levels` levels of k + 1 calls.
            device (`str` or `torch.device`, *optional*):
                The device to put `timesteps` on.
            corrector_steps (`int`, *optional*):
                Overrides k for this run.
            snr (`float`, *optional*):
                Overrides r for this run.
            final_denoise (`bool`, *optional*):
                Overrides the noise-free last predictor step for this run.
            predictor (`str`, *optional*):
                Overrides the predictor's noise for this run.
        """
        run = self._run_settings(corrector_steps, snr, final_denoise, predictor)
        k = run["corrector_steps"]
        if num_inference_steps is None:
            check_num_calls("num_noise_levels x (corrector_steps + 1)", self.config.num_noise_levels * (k + 1))
            num_levels, sigmas = self.config.num_noise_levels, self.sigmas
            calls_per_level = [k + 1] * num_levels
        else:
            check_num_calls("num_inference_steps", num_inference_steps)
            num_levels = math.ceil(num_inference_steps / (k + 1))
            sigmas = geometric_sigmas(self.config.sigma_max, self.config.sigma_min, num_levels).float()
            # N calls over the levels, the last levels taking one more: each level gets k + 1 or fewer, one at least
            base, extra = divmod(num_inference_steps, num_levels)
            calls_per_level = [base + int(i >= num_levels - extra) for i in range(num_levels)]
        levels = [i for i, n in enumerate(calls_per_level) for _ in range(n)]
        # the last call of each level is its predictor step; the others are corrector steps
        self._is_predictor = [j + 1 == len(levels) or levels[j + 1] != levels[j] for j in range(len(levels))]
        self._next_sigma = sigmas[1:].tolist() + [0.0]
        self._snr, self._final_denoise, self._ancestral = (
            run["snr"],
            run["final_denoise"],
            run["predictor"] == "ancestral",
        )
        call_sigmas = [sigmas[i].item() for i in levels]
        self._lay_out(levels, call_sigmas, None, torch.tensor(call_sigmas, dtype=torch.float32), device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> ScoreSchedulerOutput | tuple:
        """
        One corrector step or the level's predictor step, whichever the current model call is.

        Args:
            model_output (`torch.Tensor`):
                The model's output at `sample` and `timestep`, of the kind named by `prediction_type`.
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (sigma_i).
            sample (`torch.Tensor`):
                The current sample x.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                The source of the noise z.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`ScoreSchedulerOutput`] or a tuple.

        Returns:
            [`ScoreSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)` when `return_dict` is `False`.
        """
        j = self._step_index_for(timestep, model_output, sample)
        sigma_i = self._call_sigmas[j]
        x = sample.float()
        s = score_from_model_output(model_output.float(), x, sigma_i, 1.0, self.config.prediction_type)
        pred_original_sample = sample_from_score(s, x, sigma_i)
        if self._is_predictor[j]:
            # reverse diffusion: x + (sigma_i^2 - sigma_{i+1}^2) s + sqrt(sigma_i^2 - sigma_{i+1}^2) z; ancestral: the
            # same mean, noise variance sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2
            sigma_next = self._next_sigma[self._levels[j]]
            variance = sigma_i**2 - sigma_next**2
            prev_sample = torch.add(x, s, alpha=variance)
            if not (self._final_denoise and j == len(self._levels) - 1):
                z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
                noise_variance = variance * sigma_next**2 / sigma_i**2 if self._ancestral else variance
                prev_sample.add_(z, alpha=math.sqrt(noise_variance))
        else:
            # Langevin corrector: eps = 2 (r ||z|| / ||s||)^2, then x + eps s + sqrt(2 eps) z
            z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            per_sample = (x.shape[0],) + (1,) * (x.ndim - 1)
            z_norm = torch.linalg.vector_norm(z.flatten(1), dim=1).reshape(per_sample)
            s_norm = torch.linalg.vector_norm(s.flatten(1), dim=1).reshape(per_sample)
            if self.config.corrector_norms == "batch_mean":
                z_norm, s_norm = z_norm.mean(), s_norm.mean()
            eps = 2 * (self._snr * z_norm / s_norm) ** 2
            prev_sample = torch.addcmul(x, eps, s).addcmul_((2 * eps).sqrt(), z)
        self._after_step(j, prev_sample)
        return self._output(prev_sample, pred_original_sample, sample.dtype, return_dict)
