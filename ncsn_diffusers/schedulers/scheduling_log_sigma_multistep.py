"""A multistep exponential integrator on Tweedie's denoiser in log sigma, for few-call sampling of VE score models,
as a diffusers scheduler (DPM-Solver++(kM) / DEIS form, UniPC's corrector, SA-Solver's stochastic variant)."""

import math

import numpy as np
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
    check_bool,
    check_choice,
    check_data_range,
    check_nonnegative_float,
    check_num_calls,
    check_positive_float,
    check_positive_int,
    check_sigma_range,
    resolve,
)

PREDICTION_TYPES = ("score", "epsilon", "sample")
MAX_SOLVER_ORDER = 4
# Gauss-Legendre nodes for the scalar weights: exact for the polynomial part, ~1e-15 for the exponential on any step
GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(24)


def integrator_weights(nodes: list[float], lambda_s: float, lambda_t: float, k: float) -> list[float]:
    """
    w_m = k * integral_{lambda_s}^{lambda_t} exp(k (lambda - lambda_t)) l_m(lambda) d lambda, with l_m the Lagrange
    basis polynomial of `nodes` (the log-sigma points where D is known): the weight of D_m in one step. They sum to
    1 - exp(-k h), h = lambda_t - lambda_s.
    """
    half = 0.5 * (lambda_t - lambda_s)
    lam = lambda_s + half * (GAUSS_NODES + 1.0)
    kernel = k * np.exp(k * (lam - lambda_t)) * GAUSS_WEIGHTS * half
    weights = []
    for m, node in enumerate(nodes):
        basis = np.ones_like(lam)
        for other_index, other in enumerate(nodes):
            if other_index != m:
                basis *= (lam - other) / (node - other)
        weights.append(float((kernel * basis).sum()))
    return weights


def shaped_sigmas(sigma_max: float, sigma_min: float, num_calls: int, shape: list[float]) -> list[float]:
    """N sigmas from sigma_max to sigma_min whose log follows `shape`: v(u) increasing from 0 (sigma_max) to 1
    (sigma_min), given at evenly spaced u and interpolated linearly, log sigma(u) = log sigma_max - v(u) log(sigma_max /
    sigma_min) (Align Your Steps' log-linear interpolation of an optimised schedule to other lengths)."""
    if num_calls == 1:
        return [sigma_max]
    u = np.linspace(0.0, 1.0, num_calls)
    v = np.interp(u, np.linspace(0.0, 1.0, len(shape)), shape)
    log_range = math.log(sigma_max / sigma_min)
    return [math.exp(math.log(sigma_max) - v_i * log_range) for v_i in v]


def check_schedule_shape(shape) -> None:
    if shape is None:
        return
    values = list(shape) if isinstance(shape, (list, tuple)) else None
    if (
        values is None
        or len(values) < 2
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        or values[0] != 0
        or values[-1] != 1
        or any(b <= a for a, b in zip(values, values[1:]))
    ):
        raise ValueError(
            f"schedule_shape={shape!r} must be a strictly increasing list from 0 (sigma_max) to 1 (sigma_min), the "
            "fraction of the log-sigma range at evenly spaced positions, e.g. [0.0, 0.3, 0.6, 1.0]; None gives EDM's "
            "rho spacing."
        )


class LogSigmaMultistepScheduler(ScoreConfigMixin, ScoreChainMixin, SchedulerMixin, ConfigMixin):
    """
    A multistep solver for few-call sampling of a score model s(x, sigma), on Tweedie's denoiser
    D(x, sigma) = x + sigma**2 s(x, sigma) in lambda = -log sigma.

    With tau = `eta`, k = 1 + tau**2, the reverse VE process dx = -(1 + tau**2) (x - D) d lambda + tau sqrt(2) sigma dw
    (tau = 0: the probability-flow ODE; tau = 1: the reverse SDE) is linear in x, so a step from sigma_s to sigma_t,
    h = lambda_t - lambda_s, is exactly

        x_t = exp(-k h) x_s + k integral_{lambda_s}^{lambda_t} exp(k (lambda - lambda_t)) D(lambda) d lambda
              + sigma_t sqrt(1 - exp(-2 tau**2 h)) z.

    The solver replaces D(lambda) by the polynomial through the last p denoised estimates (p = `solver_order`,
    fewer at the start): p = 1 is DDIM's step x_t = (sigma_t / sigma_s) x_s + (1 - sigma_t / sigma_s) D_s, p >= 2 the
    exponential multistep of DPM-Solver++(pM) and DEIS; tau > 0 SA-Solver's stochastic predictor (tau = 1 at p = 1 is
    ancestral sampling). With `corrector`, the estimate D_t made at the predicted x_t redoes the step with D_t among
    the points (UniPC's corrector, at no extra model call: the next step reuses D_t).

    The N calls are at sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min and the last call returns D(x, sigma_min),
    Tweedie's denoised estimate, so N calls are N - 1 steps and the final denoising. The sigmas follow EDM's rho
    spacing, or `schedule_shape`: a schedule found for few calls (`schedule_search.search_schedule_shape`, against a
    many-call reference trajectory as GITS and Align Your Steps do), interpolated to any N.

    Args:
        sigma_max (`float`, defaults to 80.0):
            sigma_0, the largest noise level (EDM's value for images in [-1, 1]).
        sigma_min (`float`, defaults to 0.002):
            sigma_{N-1}, the level of the last call, which returns D.
        num_noise_levels (`int`, defaults to 10):
            N, the model calls when `set_timesteps` is given none.
        solver_order (`int`, defaults to 3):
            p, the number of denoised estimates the polynomial runs through (1 to 4).
        corrector (`bool`, defaults to `True`):
            Redo each step with the new estimate D_t among the points (UniPC's corrector; no extra call).
        lower_order_final (`bool`, defaults to `True`):
            Lower the order to the number of steps left (the step into sigma_min is first order, the one before it
            second order at most), as DPM-Solver++ does below 15 steps.
        eta (`float`, defaults to 0.0):
            tau, the stochasticity: 0 solves the probability-flow ODE, 1 the reverse SDE; values between mix them.
        rho (`float`, defaults to 7.0):
            EDM's spacing exponent, when `schedule_shape` is `None`.
        schedule_shape (`list[float]`, *optional*):
            An optimised schedule: the fraction of log(sigma_max / sigma_min) covered at each of its evenly spaced
            calls, strictly increasing from 0 to 1; other call counts interpolate it.
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
        num_noise_levels: int = 10,
        solver_order: int = 3,
        corrector: bool = True,
        lower_order_final: bool = True,
        eta: float = 0.0,
        rho: float = 7.0,
        schedule_shape: list[float] | None = None,
        prediction_type: str = "score",
        data_range: tuple[float, float] | None = None,
    ):
        check_sigma_range(sigma_max, sigma_min)
        check_num_calls("num_noise_levels", num_noise_levels)
        check_positive_float("rho", rho, "EDM uses 7.")
        check_bool("corrector", corrector)
        check_bool("lower_order_final", lower_order_final)
        check_schedule_shape(schedule_shape)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.data_range = check_data_range((0.0, 1.0) if data_range is None else data_range)
        self._run_settings()
        self.sigmas = torch.tensor(self._schedule(num_noise_levels), dtype=torch.float32)
        self.init_noise_sigma = float(sigma_max)

    def __len__(self):
        return self.config.num_noise_levels

    def _run_settings(self, solver_order=None, eta=None) -> dict:
        """The config with this call's overrides, checked in one place for the constructor and `set_timesteps`."""
        run = resolve(self.config, dict(solver_order=solver_order, eta=eta))
        check_positive_int("solver_order", run["solver_order"], maximum=MAX_SOLVER_ORDER)
        check_nonnegative_float("eta", run["eta"], "0 solves the probability-flow ODE; 1 the reverse SDE.")
        return run

    def _schedule(self, num_calls: int) -> list[float]:
        config = self.config
        if config.schedule_shape is None:
            return karras_sigmas(config.sigma_max, config.sigma_min, num_calls, config.rho).tolist()
        return shaped_sigmas(config.sigma_max, config.sigma_min, num_calls, list(config.schedule_shape))

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        solver_order: int | None = None,
        eta: float | None = None,
    ):
        """
        Lays the N calls out as `timesteps`, their sigmas sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of model calls N; `None` gives `num_noise_levels`.
            device (`str` or `torch.device`, *optional*):
                The device to put `timesteps` on.
            solver_order (`int`, *optional*):
                Overrides p for this run.
            eta (`float`, *optional*):
                Overrides tau for this run.
        """
        run = self._run_settings(solver_order, eta)
        if num_inference_steps is None:
            num_inference_steps = self.config.num_noise_levels
        check_num_calls("num_inference_steps", num_inference_steps)
        sigmas = self._schedule(num_inference_steps)
        self.sigmas = torch.tensor(sigmas, dtype=torch.float32)
        self._lambdas = [-math.log(sigma) for sigma in sigmas]
        self._order, self._eta = run["solver_order"], run["eta"]
        self._history = []  # (lambda_i, D_i) of the calls so far, the newest last
        self._previous = None  # (x_s, z) of the last predictor step, for the corrector
        self._lay_out(list(range(num_inference_steps)), sigmas, None, torch.tensor(sigmas), device)

    def _step_order(self, j: int) -> int:
        """The predictor's order for the step from call j to j + 1."""
        order = min(self._order, len(self._history))
        if self.config.lower_order_final:
            order = min(order, len(self._levels) - 1 - j)
        return order

    def _transition(self, x_s, points, lambda_s: float, lambda_t: float, z):
        """x_t from x_s with D(lambda) the polynomial through `points` [(lambda_m, D_m)], and the noise z."""
        k, h = 1.0 + self._eta**2, lambda_t - lambda_s
        weights = integrator_weights([lam for lam, _ in points], lambda_s, lambda_t, k)
        x_t = x_s.mul(math.exp(-k * h))
        for weight, (_, denoised) in zip(weights, points):
            x_t.add_(denoised, alpha=weight)
        if z is not None:
            x_t.add_(z, alpha=math.exp(-lambda_t) * math.sqrt(-math.expm1(-2 * self._eta**2 * h)))
        return x_t

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> ScoreSchedulerOutput | tuple:
        """
        The corrector of the step that led here (with `corrector`), then the predictor step to the next call's sigma;
        at the last call, the denoised estimate D(x, sigma_min).

        Args:
            model_output (`torch.Tensor`):
                The model's output at `sample` and `timestep`, of the kind named by `prediction_type`.
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (sigma_j).
            sample (`torch.Tensor`):
                The current sample x_j (as predicted by the previous step).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                The source of the noise z when `eta` > 0.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`ScoreSchedulerOutput`] or a tuple.

        Returns:
            [`ScoreSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)` when `return_dict` is `False`.
        """
        j = self._step_index_for(timestep, model_output, sample)
        sigma, lambda_j = self._call_sigmas[j], self._lambdas[j]
        x = sample.float()
        s = score_from_model_output(model_output.float(), x, sigma, 1.0, self.config.prediction_type)
        denoised = sample_from_score(s, x, sigma)
        last = j == len(self._levels) - 1
        if self.config.corrector and self._previous is not None and not last:
            x_s, z, used = self._previous
            points = [(lambda_j, denoised)] + self._history[len(self._history) - used :]
            x = self._transition(x_s, points, self._lambdas[j - 1], lambda_j, z)
        self._history = (self._history + [(lambda_j, denoised)])[-MAX_SOLVER_ORDER:]
        if last:
            prev_sample = denoised
        else:
            order = self._step_order(j)
            z = None
            if self._eta > 0:
                z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            points = self._history[len(self._history) - order :]
            prev_sample = self._transition(x, points, lambda_j, self._lambdas[j + 1], z)
            self._previous = (x, z, order)  # the corrector adds D_{j+1} to the predictor's points
        self._after_step(j, prev_sample)
        return self._output(prev_sample, denoised, sample.dtype, return_dict)
