"""A sigma schedule for few model calls, found by search against a many-call reference trajectory (the idea of GITS,
Chen et al. 2024, and Align Your Steps, Sabour et al. 2024): the schedule whose end point is closest to the reference
solver's, from the same starting noise."""

import math
from collections.abc import Callable

import torch

from .scheduling_log_sigma_multistep import LogSigmaMultistepScheduler

ScoreFunction = Callable[[torch.Tensor, float], torch.Tensor]


@torch.no_grad()
def run_deterministic_chain(scheduler, score: ScoreFunction, x: torch.Tensor, num_calls: int) -> torch.Tensor:
    """The chain of `scheduler` in `num_calls` model calls from the sample x (no noise is drawn: eta = 0)."""
    scheduler.set_timesteps(num_calls)
    for t in scheduler.timesteps:
        x = scheduler.step(score(x, float(t)), t, x).prev_sample
    return x


def _end_point_error(shape, scheduler_config, score, x_start, num_calls, reference) -> float:
    scheduler = LogSigmaMultistepScheduler.from_config(scheduler_config, schedule_shape=list(shape), eta=0.0)
    end = run_deterministic_chain(scheduler, score, x_start.clone(), num_calls)
    return (end - reference).square().mean().item()


@torch.no_grad()
def search_schedule_shape(
    score: ScoreFunction,
    x_start: torch.Tensor,
    scheduler_config,
    num_calls: int,
    reference_calls: int = 200,
    sweeps: int = 4,
    initial_step: float = 0.08,
) -> tuple[list[float], dict]:
    """
    The `schedule_shape` of `LogSigmaMultistepScheduler` for `num_calls` calls that brings its probability-flow ODE
    end point closest (mean square) to a `reference_calls`-call solution from the same start. Coordinate descent:
    each interior sigma moves up or down the log-sigma range by a step, kept when the error falls; the step halves
    after every sweep. The start is EDM's rho spacing of the config.

    Args:
        score (`Callable`): s(x, sigma), e.g. `lambda x, sigma: unet(x, sigma).sample`.
        x_start (`torch.Tensor`): starting samples at sigma_max (a batch of a few hundred suffices).
        scheduler_config: the config of the `LogSigmaMultistepScheduler` to tune (sigma range, order, corrector).
        num_calls (`int`): N, the calls the schedule is for (at least 3: two calls have no interior sigma).
        reference_calls (`int`, defaults to 200): the calls of the reference solution (EDM's rho spacing).
        sweeps (`int`, defaults to 4): passes over the interior sigmas.
        initial_step (`float`, defaults to 0.08): the first move, as a fraction of the log-sigma range.

    Returns:
        `tuple`: the shape (N fractions from 0 to 1, for `schedule_shape`) and `{"error": ..., "initial_error": ...,
        "model_calls": ...}`, the errors of the found and of the rho-spaced schedule.
    """
    if num_calls < 3:
        raise ValueError(f"num_calls={num_calls} must be at least 3: with fewer there is no interior sigma to move.")
    config = dict(scheduler_config)
    reference_scheduler = LogSigmaMultistepScheduler.from_config(config, schedule_shape=None, eta=0.0)
    reference = run_deterministic_chain(reference_scheduler, score, x_start.clone(), reference_calls)
    sigmas = LogSigmaMultistepScheduler.from_config(config, schedule_shape=None)._schedule(num_calls)
    log_max, log_min = math.log(sigmas[0]), math.log(sigmas[-1])
    shape = [(log_max - math.log(s)) / (log_max - log_min) for s in sigmas]
    shape[0], shape[-1] = 0.0, 1.0

    def error(candidate):
        return _end_point_error(candidate, config, score, x_start, num_calls, reference)

    best = initial = error(shape)
    evaluations, step = 1, initial_step
    for _ in range(sweeps):
        for i in range(1, num_calls - 1):
            for move in (step, -step):
                candidate = list(shape)
                candidate[i] += move
                if not candidate[i - 1] < candidate[i] < candidate[i + 1]:
                    continue
                value = error(candidate)
                evaluations += 1
                if value < best:
                    best, shape = value, candidate
                    break
        step /= 2
    calls = reference_calls + evaluations * num_calls
    return [round(v, 4) for v in shape], {"error": best, "initial_error": initial, "model_calls": calls}
