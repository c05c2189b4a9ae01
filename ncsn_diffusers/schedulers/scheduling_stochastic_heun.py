"""The stochastic sampler of Karras et al. (NeurIPS 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"), Algorithm 2, for score models, as a diffusers scheduler."""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import sample_from_score, score_from_model_output
from .compatible_configs import ScoreConfigMixin
from .noise_ladders import karras_sigmas
from .scheduling_utils import (
    SCORE_COMPATIBLES,
    ScoreChainMixin,
    ScoreSchedulerOutput,
    check_choice,
    check_data_range,
    check_nonnegative_float,
    check_num_calls,
    check_positive_float,
    check_sigma_range,
    resolve,
)

PREDICTION_TYPES = ("score", "epsilon", "sample")


class StochasticHeunScheduler(ScoreConfigMixin, ScoreChainMixin, SchedulerMixin, ConfigMixin):
    """
    The stochastic sampler of Karras et al. (2022, Algorithm 2) for a score model s(x, sigma), through Tweedie's
    denoiser D(x, sigma) = x + sigma**2 s(x, sigma). On N noise levels t_0 = sigma_max > ... > t_{N-1} = sigma_min
    spaced with exponent rho (t_N = 0), step i first raises the noise ("churn") and then takes a Heun step of the
    probability-flow ODE dx/dt = (x - D(x, t)) / t:

        gamma_i = min(S_churn / N, gamma_max) if S_tmin <= t_i <= S_tmax else 0,   t^_i = (1 + gamma_i) t_i
        x^_i = x_i + sqrt(t^_i**2 - t_i**2) S_noise z
        d_i = (x^_i - D(x^_i, t^_i)) / t^_i,   x_{i+1} = x^_i + (t_{i+1} - t^_i) d_i                      (Euler)
        d'_i = (x_{i+1} - D(x_{i+1}, t_{i+1})) / t_{i+1},   x_{i+1} = x^_i + (t_{i+1} - t^_i) (d_i + d'_i) / 2  (Heun)

    EDM caps gamma_i at gamma_max = sqrt(2) - 1, so that no level adds more noise than the sample holds; a network
    whose score is less accurate gains from more (`s_gamma_max=1.0`, README). The last step, to t_N = 0, is Euler's alone and returns D(x^_{N-1}, t^_{N-1}): N levels cost 2N - 1 model calls.
    So the chain always ends with Tweedie's denoiser, what `final_denoise=True` means in the other schedulers: it
    has no such setting.
    The first step adds no churn: the chain starts from pure noise, x_0 ~ N(centre, sigma_max**2 I), where more noise
    would only move the start above sigma_max. The churn lets the chain correct the score's errors as Langevin
    dynamics does; S_churn = 0 is the deterministic Heun sampler (Algorithm 1).

    `timesteps` holds the sigma of each model call (t^_i, then t_{i+1}), so a model trained with continuous sigma
    samples with any number of calls: `set_timesteps(num_inference_steps)` takes N = (calls + 1) // 2 levels, i.e.
    2N - 1 calls, one fewer than asked for when the number is even.

    Args:
        sigma_max (`float`, defaults to 80.0):
            t_0, the largest noise level (EDM's value for images in [-1, 1]).
        sigma_min (`float`, defaults to 0.002):
            t_{N-1}, the smallest noise level before the last step to 0.
        num_noise_levels (`int`, defaults to 18):
            N when `set_timesteps` is given no number of calls (EDM's CIFAR-10 sampler: 18 levels, 35 calls).
        rho (`float`, defaults to 7.0):
            The exponent of the level spacing; larger values take smaller steps near sigma_min.
        s_churn (`float`, defaults to 80.0):
            S_churn, the total churn, spread as gamma_i = S_churn / N over the levels and capped at `s_gamma_max` per
            level; 0 turns the noise off (EDM's values for VE models: 80, 0.05, 50, 1.007).
        s_tmin (`float`, defaults to 0.05):
            S_tmin, the lowest t_i that gets churn.
        s_tmax (`float`, defaults to 50.0):
            S_tmax, the highest t_i that gets churn.
        s_noise (`float`, defaults to 1.007):
            S_noise, the scale of the churn's noise; slightly above 1 offsets the detail a denoiser loses.
        s_gamma_max (`float`, defaults to sqrt(2) - 1):
            The cap on gamma_i (EDM's sqrt(2) - 1: t^_i at most sqrt(2) t_i).
        prediction_type (`str`, defaults to `"score"`):
            What the model returns: `"score"`, `"epsilon"` (score = -epsilon / sigma) or `"sample"` (x_0 hat).
        data_range (`tuple[float, float]`, *optional*):
            The range of the training data, (0, 1) if `None`. The chain starts at N(its centre, sigma_max**2 I).
    """

    _compatibles = list(SCORE_COMPATIBLES)

    @register_to_config
    def __init__(
        self,
        sigma_max: float = 80.0,
        sigma_min: float = 0.002,
        num_noise_levels: int = 18,
        rho: float = 7.0,
        s_churn: float = 80.0,
        s_tmin: float = 0.05,
        s_tmax: float = 50.0,
        s_noise: float = 1.007,
        s_gamma_max: float = math.sqrt(2) - 1,
        prediction_type: str = "score",
        data_range: tuple[float, float] | None = None,
    ):
        check_sigma_range(sigma_max, sigma_min)
        check_num_calls("num_noise_levels", num_noise_levels)
        check_positive_float("rho", rho, "EDM uses 7.")
        check_positive_float("s_gamma_max", s_gamma_max, "EDM uses sqrt(2) - 1.")
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.data_range = check_data_range((0.0, 1.0) if data_range is None else data_range)
        self._run_settings()
        self.sigmas = karras_sigmas(sigma_max, sigma_min, num_noise_levels, rho).float()
        self.init_noise_sigma = float(sigma_max)

    def __len__(self):
        return 2 * self.config.num_noise_levels - 1

    def _run_settings(self, s_churn=None, s_noise=None) -> dict:
        """The config with this call's overrides, checked in one place for the constructor and `set_timesteps`."""
        run = resolve(self.config, dict(s_churn=s_churn, s_noise=s_noise, s_tmin=None, s_tmax=None))
        check_nonnegative_float("s_churn", run["s_churn"], "0 turns the churn off.")
        check_nonnegative_float("s_tmin", run["s_tmin"], "0 churns down to the last level.")
        check_nonnegative_float("s_tmax", run["s_tmax"], "float('inf') churns every level.", allow_inf=True)
        check_positive_float("s_noise", run["s_noise"], "EDM uses 1.007; 1 is plain Gaussian noise.")
        if run["s_tmax"] < run["s_tmin"]:
            raise ValueError(
                f"s_tmax={run['s_tmax']} is below s_tmin={run['s_tmin']}: the churn applies to s_tmin <= t_i <= s_tmax; "
                "swap the two values."
            )
        return run

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        s_churn: float | None = None,
        s_noise: float | None = None,
    ):
        """
        Lays the N levels out as `timesteps`, one entry per model call: t^_0, t_1, t^_1, t_2, ..., t^_{N-1}.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of model calls; N = (calls + 1) // 2 levels. `None` gives N = `num_noise_levels`.
            device (`str` or `torch.device`, *optional*):
                The device to put `timesteps` on.
            s_churn (`float`, *optional*):
                Overrides S_churn for this run.
            s_noise (`float`, *optional*):
                Overrides S_noise for this run.
        """
        run = self._run_settings(s_churn, s_noise)
        if num_inference_steps is None:
            num_levels = self.config.num_noise_levels
        else:
            check_num_calls("num_inference_steps", num_inference_steps)
            num_levels = (num_inference_steps + 1) // 2
        t = karras_sigmas(self.config.sigma_max, self.config.sigma_min, num_levels, self.config.rho).tolist() + [0.0]
        gamma = [
            min(run["s_churn"] / num_levels, self.config.s_gamma_max)
            if i > 0 and run["s_tmin"] <= t_i <= run["s_tmax"]
            else 0
            for i, t_i in enumerate(t[:-1])
        ]
        self.sigmas = torch.tensor(t[:-1], dtype=torch.float32)
        self._t, self._t_hat, self._s_noise = t, [(1 + g) * t_i for g, t_i in zip(gamma, t)], run["s_noise"]
        levels, call_sigmas, self._is_correction = [], [], []
        for i in range(num_levels):
            levels.append(i)
            call_sigmas.append(self._t_hat[i])
            self._is_correction.append(False)
            if t[i + 1] > 0:
                levels.append(i)
                call_sigmas.append(t[i + 1])
                self._is_correction.append(True)
        self._x_hat = self._d = None
        self._lay_out(levels, call_sigmas, None, torch.tensor(call_sigmas, dtype=torch.float32), device)

    def _check_begin_index(self, begin_index: int):
        """A chain begins at the Euler half of a step (an even index): a Heun correction needs the Euler half before
        it."""
        if self._is_correction[begin_index]:
            raise ValueError(
                f"begin_index={begin_index} is the Heun correction of step {self._levels[begin_index]}, which needs "
                f"that step's Euler half; begin at an Euler call, e.g. {begin_index - 1} or {begin_index + 1}."
            )

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> ScoreSchedulerOutput | tuple:
        """
        The Euler half of step i (at x^_i, t^_i) or its Heun correction (at the Euler point, t_{i+1}), whichever the
        current model call is; the correction also adds the churn of step i + 1.

        Args:
            model_output (`torch.Tensor`):
                The model's output at `sample` and `timestep`, of the kind named by `prediction_type`.
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (the sigma the model was called at).
            sample (`torch.Tensor`):
                The current sample: x^_i, or the Euler point x_{i+1} for the correction.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                The source of the churn's noise z.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`ScoreSchedulerOutput`] or a tuple.

        Returns:
            [`ScoreSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)` when `return_dict` is `False`.
            `prev_sample` is where the model is called next (or the final sample).
        """
        j = self._step_index_for(timestep, model_output, sample)
        i, sigma = self._levels[j], self._call_sigmas[j]
        x = sample.float()
        s = score_from_model_output(model_output.float(), x, sigma, 1.0, self.config.prediction_type)
        denoised = sample_from_score(s, x, sigma)
        t_next, t_hat = self._t[i + 1], self._t_hat[i]
        if not self._is_correction[j]:
            # Euler: d_i = (x^_i - D) / t^_i = -t^_i s, and x^_i + (t_{i+1} - t^_i) d_i (= D when t_{i+1} = 0)
            self._x_hat, self._d = x, s.mul(-t_hat)
            prev_sample = denoised if t_next == 0 else torch.add(x, self._d, alpha=t_next - t_hat)
        else:
            # Heun: x^_i + (t_{i+1} - t^_i) (d_i + d'_i) / 2 with d'_i = -t_{i+1} s, then the churn of level i + 1
            d_mean = torch.add(self._d, s, alpha=-t_next).mul_(0.5)
            prev_sample = torch.add(self._x_hat, d_mean, alpha=t_next - t_hat)
            churn = self._t_hat[i + 1] ** 2 - t_next**2
            if churn > 0:
                z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
                prev_sample.add_(z, alpha=math.sqrt(churn) * self._s_noise)
            self._x_hat = self._d = None
        self._after_step(j, prev_sample)
        return self._output(prev_sample, denoised, sample.dtype, return_dict)
