"""What the score-model schedulers share: their output, the checks of their settings, and the bookkeeping of a
flattened chain (one entry of `timesteps` per model call): a step counter with diffusers' `set_begin_index`, and the
check of the timestep passed to `step`."""

import math
import warnings
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import append_dims

INITIAL_DISTRIBUTIONS = ("gaussian", "uniform")
# The package's schedulers, each `from_config`-able from another's config: their `_compatibles`, which diffusers'
# `compatibles` resolves once they are registered in its namespace (diffusers_registration.py).
SCORE_SCHEDULER_NAMES = (
    "AnnealedLangevinScheduler",
    "PredictorCorrectorScheduler",
    "ConsistentAnnealedSamplingScheduler",
    "StochasticHeunScheduler",
    "LogSigmaMultistepScheduler",
)
# ... and diffusers' score scheduler, that of the Hub's ScoreSdeVe folders (compatible_configs.py reads its config).
SCORE_COMPATIBLES = (*SCORE_SCHEDULER_NAMES, "ScoreSdeVeScheduler")


@dataclass
class ScoreSchedulerOutput(BaseOutput):
    """
    Output class for the `step` function of the score-model schedulers.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample after this step (after a final denoising step: the denoised sample). Feed it to the model at
            the next timestep.
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


# The checks every setting goes through, in the constructor and in each per-call override alike.


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")


# The longest chain a scheduler lays out: the papers' longest is ~2,000 calls; 10**9 would be killed for memory while
# its schedule is built, with no message.
MAX_MODEL_CALLS = 10**6


def check_positive_int(name: str, value, minimum: int = 1, maximum: int | None = None):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}={value!r} must be {kind}.")
    if maximum is not None and value > maximum:
        raise ValueError(
            f"{name}={value} is more than {maximum:,}: a chain of that many model calls would not fit in memory "
            "(nor finish); the papers use at most a few thousand."
        )


def check_num_calls(name: str, value):
    """A count of model calls, or of what multiplies into them (levels, steps per level): 1 to MAX_MODEL_CALLS."""
    check_positive_int(name, value, maximum=MAX_MODEL_CALLS)


def check_positive_float(name: str, value, hint: str = ""):
    """A finite number > 0 (not a bool); `hint` says what a good value is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive finite number.{' ' + hint if hint else ''}")


def check_nonnegative_float(name: str, value, hint: str = "", allow_inf: bool = False):
    """A number >= 0 (not a bool, not NaN), finite unless `allow_inf`; `hint` says what 0 or a good value means."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
        or (math.isinf(value) and not allow_inf)
    ):
        kind = "a number >= 0" if allow_inf else "a finite number >= 0"
        raise ValueError(f"{name}={value!r} must be {kind}.{' ' + hint if hint else ''}")


def check_bool(name: str, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False.")


def check_sigma_range(sigma_max, sigma_min):
    check_positive_float(
        "sigma_max", sigma_max, "It is sigma_1, the largest noise level, e.g. 1.0 for data in [0, 1]."
    )
    check_positive_float("sigma_min", sigma_min, "It is sigma_L, the smallest noise level, e.g. 0.01.")
    if sigma_min >= sigma_max:
        raise ValueError(
            f"sigma_min={sigma_min} must be smaller than sigma_max={sigma_max}: the ladder anneals from "
            "sigma_max down to sigma_min; swap the two values."
        )


def check_data_range(data_range) -> tuple[float, float]:
    if (
        data_range is None
        or len(data_range) != 2
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in data_range)
        or not data_range[0] < data_range[1]
    ):
        raise ValueError(f"data_range={data_range} must be (low, high) with low < high, e.g. (-1.0, 1.0).")
    return float(data_range[0]), float(data_range[1])


def reading_synchronises(tensor: torch.Tensor) -> bool:
    """Whether reading `tensor` on the host waits for its device (every device but the CPU)."""
    return tensor.device.type != "cpu"


def resolve(config, overrides: dict) -> dict:
    """The config's values with this call's overrides (those not `None`) in their place."""
    return {name: getattr(config, name) if value is None else value for name, value in overrides.items()}


class ScoreChainMixin:
    """
    The chain of a score-model scheduler flattened into diffusers timesteps: `set_timesteps` records, per model call,
    the noise level index, its sigma and the signal scale a (x_noisy = a x_0 + sigma z; a = 1 in VE) through
    `_lay_out`; `step` serves the call that a step counter names, as diffusers' schedulers do.

    The counter starts at `begin_index` (0 unless `set_begin_index(k)` was called after `set_timesteps`, which makes
    `for t in scheduler.timesteps[k:]` run the tail of the chain) and advances by one per `step`. The timestep passed
    to `step` is checked to be the counter's entry of `timesteps`: a number or a CPU tensor at once; a tensor on
    another device on that device, into a per-call record read back only at steps 1, 2, 4, 8, ... and the last (no
    device synchronisation per step; a wrong timestep fails within a factor two of the steps it spoiled).
    """

    order = 1
    timesteps = None
    num_inference_steps = None
    _step_index = None
    _begin_index = None

    @property
    def step_index(self):
        """The index of the next model call in `timesteps`, or `None` before the first `step`."""
        return self._step_index

    @property
    def begin_index(self):
        """The index of the first model call of the chain, as set by `set_begin_index`; `None` means 0."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """
        Starts the chain at `timesteps[begin_index]`, as in diffusers: call it after `set_timesteps`, then loop over
        `scheduler.timesteps[begin_index:]`. The steps are those of the full chain from that point (same levels, step
        sizes and final step), so from the same sample and generator they give the full chain's tail.

        Args:
            begin_index (`int`, defaults to 0):
                The index in `timesteps` of the first model call.
        """
        if self.timesteps is None:
            raise ValueError(
                "set_begin_index was called before set_timesteps; call scheduler.set_timesteps(...) first."
            )
        n = len(self._timestep_values)
        if isinstance(begin_index, bool) or not isinstance(begin_index, int) or not 0 <= begin_index < n:
            raise ValueError(f"begin_index={begin_index!r} must be an integer in [0, {n - 1}], an index of timesteps.")
        if self._step_index is not None:
            raise ValueError(
                f"set_begin_index({begin_index}) after {self._step_index} steps of this chain; call set_timesteps "
                "again first, then set_begin_index, then step."
            )
        self._check_begin_index(begin_index)
        self._begin_index = begin_index

    def _check_begin_index(self, begin_index: int):
        """Refuses a begin index at which this scheduler cannot start (a call that needs the one before it)."""

    def index_for_timestep(
        self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None
    ) -> int:
        """
        The index of `timestep` in `schedule_timesteps` (default: `timesteps`). A level with several model calls
        repeats its timestep; the index is then that of the level's first call (the start of the level).
        """
        schedule = self._timestep_values if schedule_timesteps is None else schedule_timesteps.tolist()
        value = float(timestep)
        for i, t in enumerate(schedule):
            if math.isclose(value, t, rel_tol=1e-5, abs_tol=1e-7):
                return i
        raise ValueError(f"timestep {value} is not in the schedule {schedule}.")

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """
        Returns `sample` unchanged: a score model sees x itself (NCSN) or x_t itself (DDPM). Present for
        interchangeability with schedulers that scale the model input.

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
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Draws the chain's starting point: N(centre of `data_range`, sigma_1**2 I) in VE, N(0, I) in VP, or, with
        `initial_distribution="uniform"`, uniform over `data_range` (as in the NCSN paper).

        Args:
            shape (`tuple[int, ...]`):
                The sample shape `(batch_size, num_channels, height, width)`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator, or one per sample, as in `randn_tensor`.
            device (`torch.device`, *optional*):
                The device of the sample.
            dtype (`torch.dtype`, *optional*):
                The dtype of the sample.
            latents (`torch.Tensor`, *optional*):
                The standard normal draw z of the given shape to start from instead of one from `generator`: the
                start is then a function of z alone (the centre of `data_range` + sigma_1 z in VE).
        """
        if latents is None:
            z = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        else:
            z = latents.to(device=device, dtype=torch.float32)
        low, high = self.data_range
        if getattr(self.config, "initial_distribution", "gaussian") == "uniform":
            # Phi(z) of a standard normal is uniform on [0, 1], so one randn_tensor draw serves both priors.
            sample = low + (high - low) * torch.special.ndtr(z)
        elif getattr(self.config, "noise_space", "ve") == "vp":
            sample = z
        else:
            sample = 0.5 * (low + high) + self.init_noise_sigma * z
        return sample.to(dtype or torch.float32)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float
    ) -> torch.Tensor:
        """
        Perturbs data for training: x + sigma z, `timesteps` being the sigmas.

        Args:
            original_samples (`torch.Tensor` of shape `(batch_size, ...)`):
                The clean data x.
            noise (`torch.Tensor`):
                z ~ N(0, I), of the same shape.
            timesteps (`torch.Tensor` of shape `(batch_size,)` or a scalar):
                The noise level sigma of each sample.
        """
        sigma = torch.as_tensor(timesteps, device=original_samples.device).to(original_samples.dtype)
        return original_samples + append_dims(sigma, original_samples.ndim) * noise

    def _lay_out(self, levels: list[int], sigmas: list[float], signal_scales: list[float] | None, timesteps, device):
        """Records the chain of one run: per model call its level index, sigma_i and signal scale a_i."""
        self._levels = levels
        self._call_sigmas = sigmas
        self._call_signal_scales = signal_scales or [1.0] * len(levels)
        self._timestep_values = timesteps.tolist()
        self.timesteps = timesteps.to(device)
        self.num_inference_steps = len(levels)
        self._step_index = self._begin_index = None
        self._wrong_timesteps = None  # (calls,) bool on the device of device-tensor timesteps
        self._warned_not_finite = False

    def _step_index_for(self, timestep: float | torch.Tensor, model_output: torch.Tensor, sample: torch.Tensor) -> int:
        """The index i of the model call that `step` serves (the step counter), after checking that `timestep` is
        timesteps[i]."""
        if self.timesteps is None:
            raise ValueError("`step` was called before `set_timesteps`; call scheduler.set_timesteps(...) first.")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has {tuple(sample.shape)}; the model "
                "must return one value per sample element (check out_channels)."
            )
        begin = self._begin_index or 0
        i = begin if self._step_index is None else self._step_index
        n = len(self._timestep_values)
        if i >= n:
            raise ValueError(
                f"All {n} steps of the schedule have been taken; call set_timesteps again to start a new chain."
            )
        if isinstance(timestep, torch.Tensor) and reading_synchronises(timestep):
            self._record_on_device(timestep, i)
        else:
            if isinstance(timestep, torch.Tensor) and timestep.ndim > 0:
                if not (timestep == timestep.flatten()[0]).all():
                    raise ValueError("All samples of a batch must share one timestep in this scheduler.")
                timestep = timestep.flatten()[0]
            self._check_value(float(timestep), i)
        steps_taken = i - begin
        if steps_taken & (steps_taken - 1) == 0 and steps_taken > 0:  # steps 1, 2, 4, 8, ...: the rare device reads
            self._read_back_checks(sample, i)
        return i

    def _after_step(self, i: int, prev_sample: torch.Tensor):
        self._step_index = i + 1
        if i + 1 == len(self._timestep_values):
            self._read_back_checks(prev_sample, i + 1)

    def _record_on_device(self, timestep: torch.Tensor, i: int):
        """Marks call i, on the timestep's device and without a read, if `timestep` is not timesteps[i]."""
        if self._wrong_timesteps is None or self._wrong_timesteps.device != timestep.device:
            # one copy of the schedule per chain and device; float32 is exact for DDPM's integers too
            self._device_schedule = timestep.new_tensor(self._timestep_values, dtype=torch.float32)
            self._wrong_timesteps = timestep.new_zeros(len(self._timestep_values), dtype=torch.bool)
        close = torch.isclose(timestep.float(), self._device_schedule[i], rtol=1e-5, atol=1e-7)
        self._wrong_timesteps[i] = ~close.all()

    def _check_value(self, timestep: float, i: int):
        expected = self._timestep_values[i]
        if not math.isclose(timestep, expected, rel_tol=1e-5, abs_tol=1e-7):
            in_schedule = any(math.isclose(timestep, t, rel_tol=1e-5, abs_tol=1e-7) for t in self._timestep_values)
            where = "is out of order" if in_schedule else "is not in the schedule"
            raise ValueError(
                f"timestep {timestep} {where}: the next step, {i}, expects timesteps[{i}] = {expected}. Pass the "
                "entries of scheduler.timesteps in order; to start mid-chain at index k, call "
                "scheduler.set_begin_index(k) after set_timesteps and loop over scheduler.timesteps[k:]."
            )

    def _read_back_checks(self, sample: torch.Tensor, i: int):
        """At steps 1, 2, 4, ... and after the last: the device-side timestep record, and whether x is finite."""
        wrong = self._wrong_timesteps
        if wrong is not None and wrong.any():
            first = wrong.nonzero()[0].item()
            self._wrong_timesteps = None
            raise ValueError(
                f"The timestep passed to step {first} is not the schedule's entry timesteps[{first}] = "
                f"{self._timestep_values[first]}, checked on the device by step {i}. Pass the entries of "
                "scheduler.timesteps in order, or call set_timesteps again to restart."
            )
        if not self._warned_not_finite and not torch.isfinite(sample).all():
            self._warned_not_finite = True
            level = self._levels[i - 1]
            warnings.warn(
                f"Samples became non-finite at noise level {level + 1} of {self._levels[-1] + 1} "
                f"(sigma={self._call_sigmas[i - 1]:.4g}, by step {i} of {len(self._levels)}); lower the step size "
                "or check the model.",
                RuntimeWarning,
                stacklevel=4,
            )

    def _output(self, prev_sample, pred_original_sample, dtype, return_dict):
        # the sample's own dtype, if it can hold a step's result: an integer sample comes back float32
        if dtype != torch.float32 and dtype.is_floating_point:
            prev_sample, pred_original_sample = prev_sample.to(dtype), pred_original_sample.to(dtype)
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return ScoreSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
