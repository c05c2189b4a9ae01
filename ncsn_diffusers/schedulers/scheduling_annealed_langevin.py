"""Annealed Langevin dynamics, Algorithm 1 of Song & Ermon (2019), as a diffusers scheduler."""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import append_dims, sample_from_score, score_from_model_output
from .noise_ladders import BETA_SCHEDULES, ddpm_alphas_cumprod, geometric_sigmas, vp_level_timesteps
from .scheduling_utils import (
    INITIAL_DISTRIBUTIONS,
    SCORE_SCHEDULER_NAMES,
    ScoreChainMixin,
    ScoreSchedulerOutput,
    check_bool,
    check_choice,
    check_data_range,
    check_num_calls,
    check_positive_float,
    check_positive_int,
    check_sigma_range,
    is_foreign_config,
    resolve,
)

PREDICTION_TYPES = {"ve": ("score", "epsilon", "sample"), "vp": ("score", "epsilon", "sample", "v_prediction")}
LANGEVIN_CONVENTIONS = ("official", "paper")
# drift coefficient c of x + c alpha_i s + sqrt(2 c alpha_i) z
LANGEVIN_DRIFT = {"official": 1.0, "paper": 0.5}
# The config of another scheduler: 100 levels of 10 steps (1000 calls), the step relative to sigma_L**2 that linear
# DDPM betas give epsilon = 2e-5, and (VP) the final denoising step with which DDPM's own sampler ends clean.
FOREIGN_NUM_NOISE_LEVELS = 100
FOREIGN_STEPS_PER_LEVEL = 10
FOREIGN_RELATIVE_EPSILON = 0.2

AnnealedLangevinSchedulerOutput = ScoreSchedulerOutput


class AnnealedLangevinScheduler(ScoreChainMixin, SchedulerMixin, ConfigMixin):
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
      L = 100 levels of T = 10 steps (DDPM's 1000 model calls), a step relative to sigma_L**2
      (`relative_epsilon=0.2`, right for every beta schedule) and the final denoising step, so the scheduler drops
      into `DDPMPipeline`.

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
        relative_epsilon (`float`, *optional*):
            epsilon / sigma_L**2 (eta of Jolicoeur-Martineau et al., 2021), the step relative to the smallest level's
            variance. When set it replaces `epsilon`, with epsilon = relative_epsilon * sigma_L**2 for whatever ladder
            the run uses: the chain then behaves alike for any sigma_L (any DDPM beta schedule). Stable below 2
            (`"official"`) or 4 (`"paper"`).
        langevin_convention (`str`, defaults to `"official"`):
            `"official"`: x + alpha_i * s + sqrt(2 alpha_i) z, the authors' code, in which NCSN v1's 2e-5 and NCSNv2's
            6.2e-6 (CIFAR-10) are published. `"paper"`: x + alpha_i / 2 * s + sqrt(alpha_i) z, Algorithm 1 as printed.
        final_denoise (`bool`, defaults to `False`):
            End the chain with Tweedie's denoiser: the last model call returns x + sigma_L**2 * s(x, sigma_L), the
            denoised estimate, instead of a noisy update (NCSNv2; the paper, v1, has none). Every scheduler's `final_denoise` means this and, for a given `num_inference_steps`, costs no extra call. Here
            that call follows the Langevin steps: N calls are N - 1 Langevin steps and the denoising call, and the
            configured chain (`num_inference_steps=None`) is the L x T steps and then the denoising call, as in
            NCSNv2's code.
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

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["ScoreSdeVeScheduler", *SCORE_SCHEDULER_NAMES]

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
        relative_epsilon: float | None = None,
    ):
        check_choice("noise_space", noise_space, ("ve", "vp"))
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES[noise_space])
        check_choice("langevin_convention", langevin_convention, LANGEVIN_CONVENTIONS)
        check_choice("initial_distribution", initial_distribution, INITIAL_DISTRIBUTIONS)
        check_num_calls("num_noise_levels", num_noise_levels)
        if noise_space == "ve":
            check_sigma_range(sigma_max, sigma_min)
            self.alphas_cumprod = None
            self.level_timesteps = None
            self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_noise_levels).float()
        else:
            if trained_betas is None and beta_schedule not in BETA_SCHEDULES:
                raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; use one of {BETA_SCHEDULES}.")
            check_positive_int("num_train_timesteps", num_train_timesteps)
            alphas_cumprod = ddpm_alphas_cumprod(
                num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
            )
            self.alphas_cumprod = alphas_cumprod.float()
            self.level_timesteps = vp_level_timesteps(alphas_cumprod, num_noise_levels)
            self.sigmas = (1.0 - alphas_cumprod[self.level_timesteps]).sqrt().float()
        if data_range is None:
            data_range = (-1.0, 1.0) if noise_space == "vp" else (0.0, 1.0)
        self.data_range = check_data_range(data_range)
        self._run_settings(self.sigmas[-1].item())  # the checks every per-call override goes through too

        # The chain starts at sigma_1 (VE) or from N(0, I) (VP).
        self.init_noise_sigma = float(sigma_max) if noise_space == "ve" else 1.0

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # The config of another scheduler (named by `_class_name`, or, for a freshly constructed one whose config has
        # no `_class_name`, recognised by lacking our `noise_space`): a beta schedule means DDPM, so VP coordinates.
        # Its values are kept even where they are that class's defaults, which `from_config` would otherwise drop,
        # so that `from_config(DDPMScheduler().config)` keeps prediction_type="epsilon" and the DDPM betas.
        if is_foreign_config(cls, config_dict):
            config_dict = {k: v for k, v in config_dict.items() if k != "_use_default_values"}
            is_ddpm = "beta_schedule" in config_dict or "trained_betas" in config_dict
            if is_ddpm:
                config_dict.setdefault("noise_space", "vp")
                config_dict.setdefault("prediction_type", "epsilon")
                config_dict.setdefault("final_denoise", True)
            # A ladder from another family spans sigma 0.002..80 (EDM) or 0.01..~157 (VP, VE-equivalent): 10 levels
            # leave neighbours too far apart to overlap (NCSNv2, Technique 2) and mixing across modes fails.
            num_train_timesteps = config_dict.get("num_train_timesteps") or 1000
            config_dict.setdefault("num_noise_levels", min(FOREIGN_NUM_NOISE_LEVELS, num_train_timesteps))
            config_dict.setdefault("steps_per_level", FOREIGN_STEPS_PER_LEVEL)
            if config_dict.get("epsilon") is None:  # none, or CAS's "the run's own window"
                config_dict.pop("epsilon", None)
                config_dict.setdefault("relative_epsilon", FOREIGN_RELATIVE_EPSILON)
        return super().extract_init_dict(config_dict, **kwargs)

    def __len__(self):
        if self.config.noise_space == "vp":
            return self.config.num_train_timesteps
        # the model calls of the configured chain, the denoising call included
        return self.config.num_noise_levels * self.config.steps_per_level + int(self.config.final_denoise)

    def _run_settings(self, sigma_L: float, steps_per_level=None, epsilon=None, final_denoise=None) -> dict:
        """
        The settings of one run: the config with this call's overrides, all checked here, for the constructor and
        for `set_timesteps` alike. A per-call `epsilon` is absolute; otherwise `relative_epsilon` (if configured)
        gives epsilon = relative_epsilon * sigma_L**2.
        """
        config = self.config
        if epsilon is None and config.relative_epsilon is not None:
            check_positive_float("relative_epsilon", config.relative_epsilon, "It is epsilon / sigma_L**2, e.g. 0.2.")
            epsilon = config.relative_epsilon * sigma_L**2
        run = resolve(config, dict(steps_per_level=steps_per_level, epsilon=epsilon, final_denoise=final_denoise))
        check_num_calls("steps_per_level", run["steps_per_level"])
        check_bool("final_denoise", run["final_denoise"])
        check_positive_float("epsilon", run["epsilon"], "The paper uses 2e-5 for data in [0, 1].")
        # alpha_i / sigma_i**2 = epsilon / sigma_L**2 is the same at every level; a Gaussian of variance sigma**2
        # contracts under the update only while c * alpha_i / sigma_i**2 stays below 2.
        bound = 2.0 / LANGEVIN_DRIFT[config.langevin_convention] * sigma_L**2
        if run["epsilon"] >= bound:
            raise ValueError(
                f"epsilon={run['epsilon']:.4g} is past the stability bound {bound:.3g} of the smallest noise level "
                f"sigma_L={sigma_L:.4g} ({config.langevin_convention} convention); the chain would diverge. Choose "
                f"epsilon well below it, e.g. {bound / 10:.3g}."
            )
        return run

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
        sigmas, level_timesteps = self.sigmas, self.level_timesteps
        run = self._run_settings(sigmas[-1].item(), steps_per_level, epsilon, final_denoise)
        num_levels = self.config.num_noise_levels
        if num_inference_steps is None:
            check_num_calls("num_noise_levels x steps_per_level", num_levels * run["steps_per_level"])
            steps = [run["steps_per_level"]] * num_levels
        else:
            check_num_calls("num_inference_steps", num_inference_steps)
            num_langevin = num_inference_steps - int(run["final_denoise"])
            if num_langevin < 1:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} leaves no Langevin step after the final denoising "
                    "step; pass at least 2, or final_denoise=False."
                )
            if num_langevin < num_levels:
                num_levels = num_langevin
                sigmas, level_timesteps = self._ladder(num_levels)
            steps = [num_langevin // num_levels + int(i < num_langevin % num_levels) for i in range(num_levels)]

        levels = [i for i, n in enumerate(steps) for _ in range(n)]
        if run["final_denoise"]:
            levels.append(num_levels - 1)
        call_sigmas = [sigmas[i].item() for i in levels]
        if level_timesteps is None:
            timesteps, signal_scales = torch.tensor(call_sigmas, dtype=torch.float32), None
        else:
            timesteps = level_timesteps[levels]
            signal_scales = [self.alphas_cumprod[t].sqrt().item() for t in timesteps.tolist()]
        self._epsilon, self._sigma_L, self._final_denoise = run["epsilon"], call_sigmas[-1], run["final_denoise"]
        self._lay_out(levels, call_sigmas, signal_scales, timesteps, device)

    def _ladder(self, num_levels: int):
        if self.config.noise_space == "ve":
            return geometric_sigmas(self.config.sigma_max, self.config.sigma_min, num_levels).float(), None
        level_timesteps = vp_level_timesteps(self.alphas_cumprod.double(), num_levels)
        return (1.0 - self.alphas_cumprod[level_timesteps]).sqrt(), level_timesteps

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
        if self.config.noise_space == "ve":
            return super().add_noise(original_samples, noise, timesteps)
        timesteps = torch.as_tensor(timesteps, device=original_samples.device)
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
    ) -> ScoreSchedulerOutput | tuple:
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
                Whether to return a [`ScoreSchedulerOutput`] or a tuple.

        Returns:
            [`ScoreSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)` when `return_dict` is `False`.
        """
        j = self._step_index_for(timestep, model_output, sample)  # the model call; its level i gives sigma_i
        sigma_i, a = self._call_sigmas[j], self._call_signal_scales[j]
        x = sample.float()  # step arithmetic in float32 whatever the sample's dtype
        s = score_from_model_output(model_output.float(), x, sigma_i, a, self.config.prediction_type)
        pred_original_sample = sample_from_score(s, x, sigma_i, a)
        if self._final_denoise and j == len(self._levels) - 1:
            prev_sample = pred_original_sample
        else:
            alpha_i = self._epsilon * sigma_i**2 / self._sigma_L**2
            c = LANGEVIN_DRIFT[self.config.langevin_convention]
            z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            # x + c alpha_i s + sqrt(2 c alpha_i) z, as two fused multiply-adds
            prev_sample = torch.add(x, s, alpha=c * alpha_i).add_(z, alpha=math.sqrt(2 * c * alpha_i))
        self._after_step(j, prev_sample)
        return self._output(prev_sample, pred_original_sample, sample.dtype, return_dict)
