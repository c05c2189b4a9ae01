"""What the score-model schedulers share: their output, the checks of their settings, and the bookkeeping of a
flattened chain (one entry of `timesteps` per model call), including the check of the timestep passed to `step`."""

import math
import warnings
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import append_dims

INITIAL_DISTRIBUTIONS = ("gaussian", "uniform")


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


def check_positive_int(name: str, value, minimum: int = 1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}={value!r} must be {kind}.")


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
    `_lay_out`; `step` asks `_step_index_for(timestep)` which call it is serving.

    The timestep passed to `step` is checked against the schedule. An entry of `scheduler.timesteps` itself (what
    every pipeline loop passes) is recognised by its address, with no read of the device; a number or a CPU tensor is
    compared by value; any other device tensor is copied, on its device, into a per-call record that is compared
    with the schedule only at steps 1, 2, 4, 8, ... and the last: one small copy per step and no device
    synchronisation, and a wrong timestep fails within a factor two of the steps it spoiled.
    """

    order = 1
    timesteps = None
    num_inference_steps = None
    _step_index = None

    @property
    def step_index(self):
        """The index of the next model call in `timesteps`, or `None` before the first `step`."""
        return self._step_index

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
        """
        z = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
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
        self._timesteps_address = (self.timesteps.data_ptr(), self.timesteps.element_size())
        self.num_inference_steps = len(levels)
        self._step_index = None
        self._seen_timesteps = None
        self._warned_not_finite = False

    def _step_index_for(self, timestep: float | torch.Tensor, model_output: torch.Tensor, sample: torch.Tensor) -> int:
        """The index i of the model call that `step` serves, after checking that `timestep` is timesteps[i]."""
        if self.timesteps is None:
            raise ValueError("`step` was called before `set_timesteps`; call scheduler.set_timesteps(...) first.")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has {tuple(sample.shape)}; the model "
                "must return one value per sample element (check out_channels)."
            )
        i = 0 if self._step_index is None else self._step_index
        n = len(self._timestep_values)
        if i >= n:
            raise ValueError(
                f"All {n} steps of the schedule have been taken; call set_timesteps again to start a new chain."
            )
        if not isinstance(timestep, torch.Tensor):
            self._check_value(timestep, i)
        elif self._is_entry(timestep, i):
            pass  # scheduler.timesteps[i] itself: right by construction
        elif reading_synchronises(timestep):
            self._record_on_device(timestep, i)
        else:
            if timestep.ndim > 0:
                if not (timestep == timestep.flatten()[0]).all():
                    raise ValueError("All samples of a batch must share one timestep in this scheduler.")
                timestep = timestep.flatten()[0]
            self._check_value(timestep.item(), i)
        if i & (i - 1) == 0 and i > 0:  # steps 1, 2, 4, 8, ...: the rare reads of the device
            self._read_back_checks(sample, i)
        return i

    def _after_step(self, i: int, prev_sample: torch.Tensor):
        self._step_index = i + 1
        if i + 1 == len(self._timestep_values):
            self._read_back_checks(prev_sample, i + 1)

    def _is_entry(self, timestep: torch.Tensor, i: int) -> bool:
        address, itemsize = self._timesteps_address
        return (
            timestep.data_ptr() == address + i * itemsize
            and timestep.dtype == self.timesteps.dtype
            and timestep.device == self.timesteps.device
            and all(s == 0 for s in timestep.stride())
        )

    def _record_on_device(self, timestep: torch.Tensor, i: int):
        """Copies the (min, max) of `timestep` into row i of a device-side record of the chain's timesteps, whose
        rows start as the schedule's own values; `_read_back_checks` compares the whole record at once."""
        if self._seen_timesteps is None or self._seen_timesteps.device != timestep.device:
            expected = torch.tensor(self._timestep_values, dtype=torch.float32)  # exact for DDPM's integers too
            self._expected_timesteps = expected[:, None].expand(-1, 2).to(timestep.device)
            self._seen_timesteps = self._expected_timesteps.clone()
        if timestep.numel() == 1:
            self._seen_timesteps[i].copy_(timestep.reshape(1).expand(2))
        else:
            self._seen_timesteps[i].copy_(torch.stack(torch.aminmax(timestep)))

    def _check_value(self, timestep: float, i: int):
        expected = self._timestep_values[i]
        if not math.isclose(float(timestep), expected, rel_tol=1e-5, abs_tol=1e-7):
            in_schedule = any(
                math.isclose(float(timestep), t, rel_tol=1e-5, abs_tol=1e-7) for t in self._timestep_values
            )
            where = "is out of order" if in_schedule else "is not in the schedule"
            raise ValueError(
                f"timestep {timestep} {where}: step {i} of the schedule expects {expected}. Pass the entries of "
                "scheduler.timesteps in order, or call set_timesteps again to restart."
            )

    def _read_back_checks(self, sample: torch.Tensor, i: int):
        """At steps 1, 2, 4, ... and after the last: the device-side timestep record, and whether x is finite."""
        seen = self._seen_timesteps
        if seen is not None and not torch.isclose(seen, self._expected_timesteps, rtol=1e-5, atol=1e-7).all():
            wrong = (~torch.isclose(seen, self._expected_timesteps, rtol=1e-5, atol=1e-7)).any(1).nonzero()[0].item()
            self._seen_timesteps = None
            raise ValueError(
                f"The timestep passed to step {wrong} (values {seen[wrong].tolist()}, checked on the device by step "
                f"{i}) is not the schedule's entry {self._timestep_values[wrong]}. Pass the entries of "
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
        if dtype != torch.float32:
            prev_sample, pred_original_sample = prev_sample.to(dtype), pred_original_sample.to(dtype)
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return ScoreSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
