"""Consistent annealed sampling, Algorithm 2 of Jolicoeur-Martineau et al. (ICLR 2021), as a diffusers scheduler."""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import sample_from_score, score_from_model_output
from .noise_ladders import geometric_sigmas
from .scheduling_utils import (
    SCORE_SCHEDULER_NAMES,
    ScoreChainMixin,
    ScoreSchedulerOutput,
    check_bool,
    check_choice,
    check_data_range,
    check_num_calls,
    check_positive_float,
    check_sigma_range,
    is_foreign_config,
    resolve,
)

PREDICTION_TYPES = ("score", "epsilon", "sample")
# epsilon=None: this multiple of the lower bound sigma_L**2 (1 - 1/gamma), capped at sigma_L**2. Near the bound beta
# is small and the drift alone carries the chain down the ladder; on the 2-D mixture at 20-100 calls it keeps more of
# each mode's variance than 1.5x or 2x the bound, and eta = 1 (denoise, then renoise) loses half of it.
DEFAULT_EPSILON_OVER_BOUND = 1.2


class ConsistentAnnealedSamplingScheduler(ScoreChainMixin, SchedulerMixin, ConfigMixin):
    """
    Consistent annealed sampling (Jolicoeur-Martineau et al., "Adversarial score matching and improved sampling for
    image generation", ICLR 2021, Algorithm 2): one step per level of a geometric ladder sigma_1 > ... > sigma_L with
    ratio gamma = sigma_i / sigma_{i+1}, whose injected noise keeps the chain's noise level equal to the sigma the
    model is conditioned on at the next step:

        alpha_i = epsilon * sigma_i**2 / sigma_L**2,  beta = sqrt(1 - (gamma * (1 - eta))**2),  eta = epsilon / sigma_L**2
        x <- x + alpha_i s(x, sigma_i) + beta sigma_{i+1} z      (sigma_{L+1} = 0: the last step adds no noise)

    A Gaussian of variance sigma_i**2 around the data leaves the drift with std sigma_i (1 - eta); the noise tops it up
    to exactly sigma_{i+1}. This needs sigma_L**2 (1 - 1/gamma) < epsilon < sigma_L**2 (1 + 1/gamma), a window that
    moves with the ladder's length; `epsilon=None` takes 1.2 times its lower end (at most sigma_L**2) for whatever
    ladder the run uses. `final_denoise` appends x + sigma_L**2 s(x, sigma_L), as the authors' code does by default.

    Args:
        sigma_max (`float`, defaults to 1.0):
            sigma_1, the largest noise level.
        sigma_min (`float`, defaults to 0.01):
            sigma_L, the smallest noise level.
        num_noise_levels (`int`, defaults to 100):
            L, the levels (= the steps) when `set_timesteps` is given no number of calls.
        epsilon (`float`, *optional*):
            The step size epsilon; `None` means min(1.2 sigma_L**2 (1 - 1/gamma), sigma_L**2) for the run's ladder.
        final_denoise (`bool`, defaults to `True`):
            End the chain with Tweedie's denoiser: the last model call returns x + sigma_L**2 s(x, sigma_L) instead of
            a noisy update. Every scheduler's `final_denoise` means this and, for a given `num_inference_steps`, costs no extra call. Here that call follows the steps of the ladder: N calls are N - 1 levels and the
            denoising call, and the configured chain is `num_noise_levels` steps and then that call, as in the
            authors' code.
        prediction_type (`str`, defaults to `"score"`):
            What the model returns: `"score"`, `"epsilon"` (score = -epsilon / sigma) or `"sample"` (x_0 hat).
        data_range (`tuple[float, float]`, *optional*):
            The range of the training data, (0, 1) if `None`. The chain starts at N(its centre, sigma_1**2 I).
    """

    _compatibles = list(SCORE_SCHEDULER_NAMES)

    @register_to_config
    def __init__(
        self,
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        num_noise_levels: int = 100,
        epsilon: float | None = None,
        final_denoise: bool = True,
        prediction_type: str = "score",
        data_range: tuple[float, float] | None = None,
    ):
        check_sigma_range(sigma_max, sigma_min)
        check_num_calls("num_noise_levels", num_noise_levels)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.data_range = check_data_range((0.0, 1.0) if data_range is None else data_range)
        self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_noise_levels).float()
        self._run_settings(self.sigmas)
        self.init_noise_sigma = float(sigma_max)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # Another scheduler's epsilon (annealed Langevin's) is no valid CAS step: its bounds depend on gamma.
        if is_foreign_config(cls, config_dict):  # saved or not: a fresh ALS config's epsilon is not CAS's
            config_dict = {k: v for k, v in config_dict.items() if k != "epsilon"}
        return super().extract_init_dict(config_dict, **kwargs)

    def __len__(self):
        return self.config.num_noise_levels + int(self.config.final_denoise)

    def _run_settings(self, sigmas: torch.Tensor, epsilon=None, final_denoise=None) -> dict:
        """The config with this call's overrides, checked in one place for the constructor and `set_timesteps`."""
        run = resolve(self.config, dict(epsilon=epsilon, final_denoise=final_denoise))
        check_bool("final_denoise", run["final_denoise"])
        sigma_L = sigmas[-1].item()
        # with one level there is no next sigma to be consistent with: any step 0 < eta < 2 is stable (1/gamma = 1)
        inv_gamma = (sigmas[1] / sigmas[0]).item() if len(sigmas) > 1 else 1.0
        low, high = sigma_L**2 * (1 - inv_gamma), sigma_L**2 * (1 + inv_gamma)
        if run["epsilon"] is None:
            run["epsilon"] = min(DEFAULT_EPSILON_OVER_BOUND * low, sigma_L**2) if low > 0 else sigma_L**2
        check_positive_float("epsilon", run["epsilon"], "None picks one that fits the ladder.")
        if not low < run["epsilon"] < high:
            raise ValueError(
                f"epsilon={run['epsilon']:.4g} leaves no consistent noise for a ladder of {len(sigmas)} levels "
                f"(gamma={1 / inv_gamma:.4g}); it must lie in ({low:.4g}, {high:.4g}). epsilon=None picks one for any "
                "ladder."
            )
        return run

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        epsilon: float | None = None,
        final_denoise: bool | None = None,
    ):
        """
        Lays one step per level out as `timesteps` (the sigmas), plus the denoising step if enabled.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of model calls; the ladder gets that many levels (one fewer with `final_denoise`).
                `None` gives `num_noise_levels` levels.
            device (`str` or `torch.device`, *optional*):
                The device to put `timesteps` on.
            epsilon (`float`, *optional*):
                Overrides epsilon for this run.
            final_denoise (`bool`, *optional*):
                Overrides the final denoising step for this run.
        """
        denoise = self.config.final_denoise if final_denoise is None else final_denoise
        if num_inference_steps is None:
            sigmas = self.sigmas
        else:
            check_num_calls("num_inference_steps", num_inference_steps)
            num_levels = num_inference_steps - int(denoise is True)
            if num_levels < 1:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} leaves no step after the final denoising step; pass "
                    "at least 2, or final_denoise=False."
                )
            sigmas = geometric_sigmas(self.config.sigma_max, self.config.sigma_min, num_levels).float()
        run = self._run_settings(sigmas, epsilon, final_denoise)
        levels = list(range(len(sigmas))) + [len(sigmas) - 1] * int(run["final_denoise"])
        self._next_sigma = sigmas[1:].tolist() + [0.0]
        self._epsilon, self._sigma_L, self._final_denoise = run["epsilon"], sigmas[-1].item(), run["final_denoise"]
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
        One step of Algorithm 2 (lines 3-5), or the final denoising step.

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
        i, sigma_i = self._levels[j], self._call_sigmas[j]
        x = sample.float()
        s = score_from_model_output(model_output.float(), x, sigma_i, 1.0, self.config.prediction_type)
        pred_original_sample = sample_from_score(s, x, sigma_i)
        if self._final_denoise and j == len(self._levels) - 1:
            prev_sample = pred_original_sample
        else:
            sigma_next = self._next_sigma[i]
            alpha_i = self._epsilon * sigma_i**2 / self._sigma_L**2
            prev_sample = torch.add(x, s, alpha=alpha_i)
            if sigma_next > 0:
                eta, gamma = self._epsilon / self._sigma_L**2, sigma_i / sigma_next
                beta = math.sqrt(1 - (gamma * (1 - eta)) ** 2)
                z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
                prev_sample.add_(z, alpha=beta * sigma_next)
        self._after_step(j, prev_sample)
        return self._output(prev_sample, pred_original_sample, sample.dtype, return_dict)
