"""Annealed Langevin dynamics, Algorithm 1 of Song & Ermon (2019), as a diffusers scheduler."""

import math
import warnings
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .noise_ladders import BETA_SCHEDULES, ddpm_alphas_cumprod, geometric_sigmas, vp_level_timesteps
from .parameterization import append_dims, sample_from_score, score_from_epsilon, score_from_sample

PREDICTION_TYPES = {"ve": ("score", "epsilon", "sample"), "vp": ("score", "epsilon", "sample", "v_prediction")}
LANGEVIN_CONVENTIONS = ("official", "paper")
INITIAL_DISTRIBUTIONS = ("gaussian", "uniform")
VP_DEFAULT_NUM_NOISE_LEVELS = 100
VP_DEFAULT_STEPS_PER_LEVEL = 10


@dataclass
class AnnealedLangevinSchedulerOutput(BaseOutput):
    """
    Output class for the scheduler's `step` function.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample after this Langevin step (after the final denoising step: the denoised sample). Feed it to the
            model at the next timestep.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The current denoised estimate E[x_0 | x] by Tweedie's formula, x + sigma_i**2 * s(x, sigma_i) (VE).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor

    def __post_init__(self) -> None:
        # BaseOutput's generic version inspects `dataclasses.fields` on every call, ~15 us: a quarter of a GPU step.
        for name in ("prev_sample", "pred_original_sample"):
            value = getattr(self, name)
            if value is not None:
                self[name] = value


class AnnealedLangevinScheduler(SchedulerMixin, ConfigMixin):
    """
    Implements Algorithm 1 of Song & Ermon (2019), annealed Langevin dynamics, flattened into diffusers timesteps.

    For each noise level sigma_1 > ... > sigma_L it runs T Langevin steps with step size
    alpha_i = epsilon * sigma_i**2 / sigma_L**2 on the score s(x, sigma_i) of the data perturbed at that level. In the
    `"official"` convention (that of the authors' code, in which all published epsilons are given) a step is
    x <- x + alpha_i * s + sqrt(2 * alpha_i) * z; in the `"paper"` convention (Algorithm 1 as printed) it is
    x <- x + alpha_i / 2 * s + sqrt(alpha_i) * z, so the same epsilon takes half the step.

    Two coordinate systems share the algorithm:
    - `noise_space="ve"` (NCSN): geometric sigmas from `sigma_max` to `sigma_min`; `timesteps` holds the float sigma
      of every model call, which the model is conditioned on, so a model trained on one ladder samples on another.
    - `noise_space="vp"` (DDPM): the levels are L integer timesteps of the DDPM schedule, sigma_i = sqrt(1 -
      alphabar_{t_i}), score = -epsilon / sqrt(1 - alphabar_t), alpha_i proportional to 1 - alphabar_{t_i}.
      `from_config(ddpm_scheduler.config)` selects it, keeps the DDPM schedule and prediction type, and defaults to
      L = 100 levels of T = 10 steps (DDPM's 1000 model calls), so the scheduler drops into `DDPMPipeline`.

    `num_inference_steps` is the number of model calls: the L * T Langevin steps, plus one for `final_denoise`.

    Args:
        sigma_max (`float`, defaults to 1.0):
            sigma_1, the largest noise level (VE). The paper's 1.0 assumes data in [0, 1]; use 2.0 for [-1, 1].
        sigma_min (`float`, defaults to 0.01):
            sigma_L, the smallest noise level (VE). The paper's 0.01 assumes data in [0, 1]; use 0.02 for [-1, 1].
        num_noise_levels (`int`, defaults to 10):
            L, the number of noise levels.
        steps_per_level (`int`, defaults to 100):
            T, the Langevin steps per noise level.
        epsilon (`float`, defaults to 2e-5):
            The step size epsilon of Algorithm 1; alpha_i = epsilon * sigma_i**2 / sigma_L**2. Stable only for
            epsilon < 2 * sigma_L**2 (`"official"`) or 4 * sigma_L**2 (`"paper"`). Its meaning follows from
            `langevin_convention`, like every published value; data in [-1, 1] needs 4x the [0, 1] value.
        langevin_convention (`str`, defaults to `"official"`):
            `"official"`: x + alpha_i * s + sqrt(2 alpha_i) z, the authors' code, in which NCSN v1's 2e-5 and NCSNv2's
            6.2e-6 (CIFAR-10) are published. `"paper"`: x + alpha_i / 2 * s + sqrt(alpha_i) z, Algorithm 1 as printed.
        final_denoise (`bool`, defaults to `False`):
            Append one denoising step x <- x + sigma_L**2 * s(x, sigma_L) (Tweedie; NCSNv2). The paper (v1) has none.
        prediction_type (`str`, defaults to `"score"`):
            What the model returns: `"score"` (s, NCSN), `"epsilon"` (score = -epsilon / sigma), `"sample"` (x_0 hat;
            score = (x_0 hat - x) / sigma**2), or, in VP only, `"v_prediction"`.
        noise_space (`str`, defaults to `"ve"`):
            `"ve"` for NCSN's x + sigma z, `"vp"` for DDPM's sqrt(alphabar_t) x + sqrt(1 - alphabar_t) z.
        initial_distribution (`str`, defaults to `"gaussian"`):
            The chain's start: `"gaussian"` is N(mean of `data_range`, sigma_1**2 I) in VE and N(0, I) in VP, the
            consistent prior for large sigma_1; `"uniform"` is uniform over `data_range`, as in the paper.
        data_range (`tuple[float, float]`, *optional*):
            The range of the data the model was trained on; `None` means (0, 1) in VE (the papers') and (-1, 1) in
            VP (diffusers'). Pipelines map this range to images.
        num_train_timesteps (`int`, defaults to 1000):
            VP only: the number of DDPM timesteps.
        beta_start (`float`, defaults to 0.0001):
            VP only: the first beta of the DDPM schedule.
        beta_end (`float`, defaults to 0.02):
            VP only: the last beta of the DDPM schedule.
        beta_schedule (`str`, defaults to `"linear"`):
            VP only: `"linear"`, `"scaled_linear"` or `"squaredcos_cap_v2"`.
        trained_betas (`list[float]`, *optional*):
            VP only: explicit betas, overriding `beta_start`, `beta_end` and `beta_schedule`.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["ScoreSdeVeScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        num_noise_levels: int = 10,
        steps_per_level: int = 100,
        epsilon: float = 2e-5,
        langevin_convention: str = "official",
        final_denoise: bool = False,
        prediction_type: str = "score",
        noise_space: str = "ve",
        initial_distribution: str = "gaussian",
        data_range: tuple[float, float] | None = None,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
    ):
        _check_choice("noise_space", noise_space, ("ve", "vp"))
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES[noise_space])
        _check_choice("langevin_convention", langevin_convention, LANGEVIN_CONVENTIONS)
        _check_choice("initial_distribution", initial_distribution, INITIAL_DISTRIBUTIONS)
        _check_positive_int("num_noise_levels", num_noise_levels)
        _check_positive_int("steps_per_level", steps_per_level)
        if noise_space == "ve":
            if not sigma_min > 0 or not sigma_max > 0:
                raise ValueError(f"sigma_min={sigma_min} and sigma_max={sigma_max} must both be positive.")
            if sigma_min >= sigma_max:
                raise ValueError(
                    f"sigma_min={sigma_min} must be smaller than sigma_max={sigma_max}: the ladder anneals from "
                    "sigma_max down to sigma_min; swap the two values."
                )
            self.alphas_cumprod = None
            self.level_timesteps = None
            self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_noise_levels).float()
        else:
            if trained_betas is None and beta_schedule not in BETA_SCHEDULES:
                raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; use one of {BETA_SCHEDULES}.")
            alphas_cumprod = ddpm_alphas_cumprod(
                num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
            )
            self.alphas_cumprod = alphas_cumprod.float()
            self.level_timesteps = vp_level_timesteps(alphas_cumprod, num_noise_levels)
            self.sigmas = (1.0 - alphas_cumprod[self.level_timesteps]).sqrt().float()

        if data_range is None:
            data_range = (-1.0, 1.0) if noise_space == "vp" else (0.0, 1.0)
        if len(data_range) != 2 or not data_range[0] < data_range[1]:
            raise ValueError(f"data_range={data_range} must be (low, high) with low < high, e.g. (-1.0, 1.0).")
        self.data_range = (float(data_range[0]), float(data_range[1]))

        # alpha_L / sigma_L**2 = epsilon / sigma_L**2 is the same at every level; a Gaussian of variance sigma**2
        # contracts under the update only while the drift coefficient times 1 / sigma**2 stays below 2.
        drift_per_alpha = 1.0 if langevin_convention == "official" else 0.5
        if not epsilon > 0:
            raise ValueError(f"epsilon={epsilon} must be positive; the paper uses 2e-5 for data in [0, 1].")
        bound = 2.0 / drift_per_alpha * self.sigmas[-1].item() ** 2
        if epsilon >= bound:
            raise ValueError(
                f"epsilon={epsilon} is past the stability bound {bound:.3g} of the smallest noise level "
                f"sigma_L={self.sigmas[-1].item():.4g} ({langevin_convention} convention); the chain would diverge. "
                f"Choose epsilon well below it, e.g. {bound / 10:.3g}."
            )

        # The chain starts at sigma_1 (VE) or from N(0, I) (VP).
        self.init_noise_sigma = float(sigma_max) if noise_space == "ve" else 1.0
        self.timesteps = None
        self.num_inference_steps = None
        self._step_index = None

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # The config of another scheduler (named by `_class_name`, or, for a freshly constructed one whose config has
        # no `_class_name`, recognised by lacking our `noise_space`): a beta schedule means DDPM, so VP coordinates.
        # Its values are kept even where they are that class's defaults, which `from_config` would otherwise drop,
        # so that `from_config(DDPMScheduler().config)` keeps prediction_type="epsilon" and the DDPM betas.
        source = config_dict.get("_class_name")
        is_foreign = source != cls.__name__ if source is not None else "noise_space" not in config_dict
        if is_foreign:
            config_dict = {k: v for k, v in config_dict.items() if k != "_use_default_values"}
            if "beta_schedule" in config_dict or "trained_betas" in config_dict:
                config_dict.setdefault("noise_space", "vp")
                config_dict.setdefault("prediction_type", "epsilon")
                # The VP ladder spans sigma 0.01 -> ~157 (VE-equivalent): 10 levels leave neighbours too far apart
                # to overlap (NCSNv2, Technique 2) and mixing across modes fails; 100 x 10 keeps DDPM's 1000 calls.
                num_train_timesteps = config_dict.get("num_train_timesteps") or 1000
                config_dict.setdefault("num_noise_levels", min(VP_DEFAULT_NUM_NOISE_LEVELS, num_train_timesteps))
                config_dict.setdefault("steps_per_level", VP_DEFAULT_STEPS_PER_LEVEL)
        return super().extract_init_dict(config_dict, **kwargs)

    def __len__(self):
        if self.config.noise_space == "vp":
            return self.config.num_train_timesteps
        return self.config.num_noise_levels * self.config.steps_per_level

    @property
    def step_index(self):
        """The index of the next model call in `timesteps`, or `None` before the first `step`."""
        return self._step_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        steps_per_level: int | None = None,
        epsilon: float | None = None,
        final_denoise: bool | None = None,
    ):
        """
        Lays the L x T loop of Algorithm 1 out as `timesteps`, one entry per model call.

        With `num_inference_steps=None` every level gets `steps_per_level` steps. Otherwise the N model calls (one of
        them the denoising step, if enabled) are spread over the levels: each level gets N // L steps and the first
        N % L levels one more; with fewer calls than levels, a shorter ladder over the same range takes one step
        per level. The step size alpha_i = epsilon * sigma_i**2 / sigma_L**2 does not depend on N.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of model calls.
            device (`str` or `torch.device`, *optional*):
                The device to put `timesteps` on.
            steps_per_level (`int`, *optional*):
                Overrides the configured T for this run (ignored when `num_inference_steps` is given).
            epsilon (`float`, *optional*):
                Overrides the configured step size epsilon for this run.
            final_denoise (`bool`, *optional*):
                Overrides the configured final denoising step for this run.
        """
        config = self.config
        steps_per_level = config.steps_per_level if steps_per_level is None else steps_per_level
        epsilon = config.epsilon if epsilon is None else epsilon
        final_denoise = config.final_denoise if final_denoise is None else final_denoise
        _check_positive_int("steps_per_level", steps_per_level)

        sigmas, level_timesteps = self.sigmas, self.level_timesteps
        if num_inference_steps is None:
            steps = [steps_per_level] * config.num_noise_levels
        else:
            _check_positive_int("num_inference_steps", num_inference_steps)
            num_langevin = num_inference_steps - int(final_denoise)
            if num_langevin < 1:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} leaves no Langevin step after the final denoising "
                    "step; pass at least 2, or final_denoise=False."
                )
            num_levels = min(config.num_noise_levels, num_langevin)
            if num_levels < config.num_noise_levels:
                sigmas, level_timesteps = self._ladder(num_levels)
            steps = [num_langevin // num_levels + int(i < num_langevin % num_levels) for i in range(num_levels)]

        sigma_L = sigmas[-1].item()
        drift_per_alpha = 1.0 if config.langevin_convention == "official" else 0.5
        if epsilon * drift_per_alpha >= 2 * sigma_L**2:
            raise ValueError(
                f"epsilon={epsilon} is past the stability bound {2 * sigma_L**2 / drift_per_alpha:.3g} of sigma_L="
                f"{sigma_L:.4g}; choose a smaller epsilon."
            )

        # Per model call: the level, the Langevin coefficients of x + drift * s + noise_scale * z, and the signal
        # scale a (x_noisy = a * x_0 + sigma * z; a = 1 in VE).
        levels = [i for i, n in enumerate(steps) for _ in range(n)]
        if final_denoise:
            levels.append(len(steps) - 1)
        self._levels = levels
        self._sigma = [sigmas[i].item() for i in levels]
        self._signal = [1.0] * len(levels)
        if level_timesteps is not None:
            alphas_cumprod = self.alphas_cumprod[level_timesteps]
            self._signal = [alphas_cumprod[i].sqrt().item() for i in levels]
        alphas = [epsilon * s**2 / sigma_L**2 for s in self._sigma]
        self._drift = [a * drift_per_alpha for a in alphas]
        self._noise_scale = [math.sqrt(2 * d) for d in self._drift]
        self._is_denoise_step = [False] * len(levels)
        if final_denoise:
            self._is_denoise_step[-1] = True

        if level_timesteps is None:
            timesteps = torch.tensor(self._sigma, dtype=torch.float32)
        else:
            timesteps = level_timesteps[levels]
        self._timestep_values = timesteps.tolist()
        self.timesteps = timesteps.to(device)
        self.num_inference_steps = len(levels)
        self._step_index = None
        self._warned_not_finite = False

    def _ladder(self, num_levels: int):
        if self.config.noise_space == "ve":
            return geometric_sigmas(self.config.sigma_max, self.config.sigma_min, num_levels).float(), None
        level_timesteps = vp_level_timesteps(self.alphas_cumprod.double(), num_levels)
        return (1.0 - self.alphas_cumprod[level_timesteps]).sqrt(), level_timesteps

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """
        Returns `sample` unchanged: the model sees x itself (NCSN) or x_t itself (DDPM). Present for interchangeability
        with schedulers that scale the model input.

        Args:
            sample (`torch.Tensor`):
                The input sample.
            timestep (`float` or `torch.Tensor`, *optional*):
                The current timestep (unused).
        """
        return sample

    def initial_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """
        Draws the chain's starting point x_0 of Algorithm 1, as configured by `initial_distribution`.

        Args:
            shape (`tuple[int, ...]`):
                The sample shape `(batch_size, num_channels, height, width)`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator, or one per sample, as in `randn_tensor`.
            device (`torch.device`, *optional*):
                The device of the sample.
            dtype (`torch.dtype`, *optional*):
                The dtype of the sample.
        """
        z = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        low, high = self.data_range
        if self.config.initial_distribution == "uniform":
            # Phi(z) of a standard normal is uniform on [0, 1], so one randn_tensor draw serves both priors.
            sample = low + (high - low) * torch.special.ndtr(z)
        elif self.config.noise_space == "vp":
            sample = z
        else:
            sample = 0.5 * (low + high) + self.init_noise_sigma * z
        return sample.to(dtype or torch.float32)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float
    ) -> torch.Tensor:
        """
        Perturbs data for training: x + sigma z (VE, `timesteps` are the sigmas) or sqrt(alphabar_t) x +
        sqrt(1 - alphabar_t) z (VP, `timesteps` are integer DDPM timesteps).

        Args:
            original_samples (`torch.Tensor` of shape `(batch_size, ...)`):
                The clean data x.
            noise (`torch.Tensor`):
                z ~ N(0, I), of the same shape.
            timesteps (`torch.Tensor` of shape `(batch_size,)` or a scalar):
                The noise level of each sample.
        """
        timesteps = torch.as_tensor(timesteps, device=original_samples.device)
        if self.config.noise_space == "ve":
            sigma = append_dims(timesteps.to(original_samples.dtype), original_samples.ndim)
            return original_samples + sigma * noise
        alphas_cumprod = self.alphas_cumprod.to(original_samples.device)[timesteps.long()]
        alphas_cumprod = append_dims(alphas_cumprod, original_samples.ndim).to(original_samples.dtype)
        return alphas_cumprod.sqrt() * original_samples + (1 - alphas_cumprod).sqrt() * noise

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> AnnealedLangevinSchedulerOutput | tuple:
        """
        One Langevin step at the current noise level (line 6 of Algorithm 1), or the final denoising step.

        Args:
            model_output (`torch.Tensor`):
                The model's output at `sample` and `timestep`, of the kind named by `prediction_type`.
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps`.
            sample (`torch.Tensor`):
                The current sample x.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                The source of the Langevin noise z.
            return_dict (`bool`, defaults to `True`):
                Whether to return an [`AnnealedLangevinSchedulerOutput`] or a tuple.

        Returns:
            [`AnnealedLangevinSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)` when
            `return_dict` is `False`.
        """
        i = self._index_for_step(timestep)
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has {tuple(sample.shape)}; the model "
                "must return one value per sample element (check out_channels)."
            )
        if i > 0 and self._levels[i] != self._levels[i - 1]:
            self._warn_if_not_finite(sample, self._levels[i - 1])

        # Step arithmetic in float32 whatever the sample's dtype.
        x = sample.float()
        sigma, a = self._sigma[i], self._signal[i]
        score = self._score(model_output.float(), x, sigma, a)
        pred_original_sample = sample_from_score(score, x, sigma, a)
        if self._is_denoise_step[i]:
            prev_sample = pred_original_sample
        else:
            z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            # x_t = x_{t-1} + alpha_i * s(x_{t-1}, sigma_i) + sqrt(2 alpha_i) z_t  (official convention)
            prev_sample = torch.add(x, score, alpha=self._drift[i]).add_(z, alpha=self._noise_scale[i])
        self._step_index = i + 1
        if i + 1 == len(self._levels):
            self._warn_if_not_finite(prev_sample, self._levels[i])

        if sample.dtype != torch.float32:
            prev_sample, pred_original_sample = prev_sample.to(sample.dtype), pred_original_sample.to(sample.dtype)
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return AnnealedLangevinSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _score(self, model_output: torch.Tensor, x: torch.Tensor, sigma: float, a: float) -> torch.Tensor:
        prediction_type = self.config.prediction_type
        if prediction_type == "score":
            return model_output
        if prediction_type == "epsilon":
            return score_from_epsilon(model_output, sigma)
        if prediction_type == "sample":
            return score_from_sample(model_output, x, sigma, a)
        # v = a * epsilon - sigma * x_0 with a**2 + sigma**2 = 1, hence epsilon = a * v + sigma * x.
        return score_from_epsilon(a * model_output + sigma * x, sigma)

    def _index_for_step(self, timestep: float | torch.Tensor) -> int:
        if self.timesteps is None:
            raise ValueError("`step` was called before `set_timesteps`; call scheduler.set_timesteps(...) first.")
        i = 0 if self._step_index is None else self._step_index
        if i >= len(self._timestep_values):
            raise ValueError(
                f"All {len(self._timestep_values)} steps of the schedule have been taken; call set_timesteps again to "
                "start a new chain."
            )
        if isinstance(timestep, torch.Tensor):
            if timestep.device.type != "cpu":
                return i  # reading it back would synchronise the device at every step
            if timestep.ndim > 0:
                if not (timestep == timestep.flatten()[0]).all():
                    raise ValueError("All samples of a batch must share one timestep in annealed Langevin dynamics.")
                timestep = timestep.flatten()[0]
            timestep = timestep.item()
        expected = self._timestep_values[i]
        if not math.isclose(float(timestep), expected, rel_tol=1e-5, abs_tol=1e-7):
            where = "is not in the schedule" if not self._in_schedule(timestep) else "is out of order"
            raise ValueError(
                f"timestep {timestep} {where}: step {i} of the schedule expects {expected}. Pass the entries of "
                "scheduler.timesteps in order, or call set_timesteps again to restart."
            )
        return i

    def _in_schedule(self, timestep: float) -> bool:
        return any(math.isclose(float(timestep), t, rel_tol=1e-5, abs_tol=1e-7) for t in self._timestep_values)

    def _warn_if_not_finite(self, sample: torch.Tensor, level: int):
        if not self._warned_not_finite and not torch.isfinite(sample).all():
            self._warned_not_finite = True
            warnings.warn(
                f"Samples became non-finite at noise level {level + 1} of {len(set(self._levels))} "
                f"(sigma={self._sigma[self._levels.index(level)]:.4g}); lower epsilon or check the model.",
                RuntimeWarning,
                stacklevel=3,
            )


def _check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")


def _check_positive_int(name: str, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
