"""The probability-flow ODE of a score model (Song et al., ICLR 2021, Sec. 4.3 and App. D.2), in VE coordinates.

For x_sigma = x_0 + sigma z the ODE dx/dsigma = -sigma s(x, sigma) carries p_sigma_min onto p_sigma_max, and along a
solution d log p_sigma(x(sigma)) / dsigma = sigma div_x s(x, sigma) (instantaneous change of variables, Chen et al.
2018). Both are integrated here in u = log sigma, where the steps are even: dx/du = -sigma**2 s and
d log p / du = sigma**2 div s.

A DDPM epsilon model (VP, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z) runs on the same ODE through the map
x_VE = x_t / sqrt(abar_t), sigma = sqrt((1 - abar_t) / abar_t), score_VE(x_VE, sigma) = -epsilon(x_t, t) / sigma.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from .models import NCSNRefineNet

ScoreFunction = Callable[[torch.Tensor, float], torch.Tensor]
TRACE_METHODS = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
SOLVERS = ("rk45", "heun")


@dataclass
class ProbabilityFlow:
    """
    A score model's probability-flow ODE in VE coordinates, with the prior at its top and the map from data to VE.

    Args:
        score (`Callable[[torch.Tensor, float], torch.Tensor]`):
            s(x, sigma) in VE coordinates, for x of shape `(B, C, H, W)` and one sigma for the batch.
        sigma_min (`float`): where the data sit (the ODE's start when encoding).
        sigma_max (`float`): where the prior sits.
        prior_mean (`float`): the prior's mean in VE coordinates (VE: the centre of the data range; VP: 0).
        prior_std (`float`): the prior's standard deviation (VE: sigma_max; VP: sqrt(1 + sigma_max**2) = 1 / sqrt(abar_T)).
        data_scale (`float`, defaults to 1): x_VE = data_scale * x at sigma_min (VP: 1 / sqrt(abar_t_min)).
        latent_scale (`float`, defaults to 1): latents in the sampler's coordinates = latent_scale * x_VE(sigma_max)
            (VP: sqrt(abar_T), so that the latents are those a DDPM sampler starts from).
    """

    score: ScoreFunction
    sigma_min: float
    sigma_max: float
    prior_mean: float
    prior_std: float
    data_scale: float = 1.0
    latent_scale: float = 1.0

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; prior_mean, prior_std**2 I) per image, exactly, in float64: shape (B,)."""
        flat = x.reshape(x.shape[0], -1).double()
        dim = flat.shape[1]
        return -0.5 * ((flat - self.prior_mean) / self.prior_std).pow(2).sum(1) - dim * (
            math.log(self.prior_std) + 0.5 * math.log(2 * math.pi)
        )


def ve_flow(model, sigma_min: float, sigma_max: float, data_range: tuple[float, float]) -> ProbabilityFlow:
    """The flow of a score network `model(x, sigma).sample` = s(x, sigma) with any continuous sigma (every network of
    the package but [`NCSNRefineNet`], or a diffusers `UNet2DModel` with `time_embedding_type="fourier"`)."""
    if isinstance(model, NCSNRefineNet):
        raise ValueError(
            "NCSNRefineNet (NCSN v1) has one embedding per level of its ladder and no score between the levels, but the "
            "probability-flow ODE evaluates s(x, sigma) at every sigma in [sigma_min, sigma_max]; use a network "
            "conditioned on continuous sigma (NCSNUNet2DModel or NCSNv2Model: train_ncsn.py --model_type unet|ncsnv2)."
        )
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"Need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
    dtype = model.dtype

    def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
        # a tensor: diffusers' UNet2DModel reads a Python number as an integer timestep (0.5 -> 0, log 0 = -inf)
        sigma = torch.tensor(sigma, dtype=torch.float32, device=x.device)
        return model(x.to(dtype), sigma).sample.float()

    centre = 0.5 * (data_range[0] + data_range[1])
    return ProbabilityFlow(score, float(sigma_min), float(sigma_max), centre, float(sigma_max))


def vp_sigma(alphas_cumprod: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
    """sigma(t) = sqrt((1 - abar_t) / abar_t) at a float timestep t, log-linear between the integer timesteps."""
    log_sigmas = 0.5 * (torch.log1p(-alphas_cumprod.double()) - torch.log(alphas_cumprod.double()))
    t = torch.as_tensor(timestep, dtype=torch.float64).clamp(0, len(alphas_cumprod) - 1)
    low = t.floor().long().clamp(max=len(alphas_cumprod) - 2)
    frac = t - low
    return torch.exp((1 - frac) * log_sigmas[low] + frac * log_sigmas[low + 1])


def vp_timestep(alphas_cumprod: torch.Tensor, sigma: float) -> float:
    """The float timestep t with `vp_sigma(alphas_cumprod, t) == sigma`: the inverse of [`vp_sigma`]."""
    log_sigmas = 0.5 * (np.log1p(-alphas_cumprod.double().numpy()) - np.log(alphas_cumprod.double().numpy()))
    return float(np.interp(math.log(sigma), log_sigmas, np.arange(len(log_sigmas), dtype=np.float64)))


def vp_flow(model, alphas_cumprod: torch.Tensor, t_min: int = 0, t_max: int | None = None) -> ProbabilityFlow:
    """
    The flow of a DDPM epsilon model `model(x_t, t).sample` = epsilon(x_t, t) through the VP-to-VE map. The data sit at
    t_min (x = x_{t_min}, so x_VE = x / sqrt(abar_t_min): the scaling's Jacobian is `data_scale`) and the prior is
    DDPM's N(0, I) at t_max, N(0, (1 + sigma_max**2) I) in VE coordinates. The network sees float timesteps
    (`vp_timestep`), as the continuous-time VP SDE's does.
    """
    alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
    t_max = len(alphas_cumprod) - 1 if t_max is None else t_max
    if not 0 <= t_min < t_max <= len(alphas_cumprod) - 1:
        raise ValueError(f"Need 0 <= t_min < t_max <= {len(alphas_cumprod) - 1}, got t_min={t_min}, t_max={t_max}.")
    dtype = model.dtype

    def score(x_ve: torch.Tensor, sigma: float) -> torch.Tensor:
        timestep = torch.tensor(vp_timestep(alphas_cumprod, sigma), device=x_ve.device)
        x_t = x_ve / math.sqrt(1 + sigma**2)  # x_t = sqrt(abar) x_VE with abar = 1 / (1 + sigma**2)
        return -model(x_t.to(dtype), timestep).sample.float() / sigma

    sigma_min, sigma_max = (vp_sigma(alphas_cumprod, t).item() for t in (t_min, t_max))
    return ProbabilityFlow(
        score,
        sigma_min,
        sigma_max,
        prior_mean=0.0,
        prior_std=math.sqrt(1 + sigma_max**2),
        data_scale=math.sqrt(1 + sigma_min**2),
        latent_scale=1 / math.sqrt(1 + sigma_max**2),
    )


def flow_for(
    model, sigma_min=None, sigma_max=None, data_range=None, alphas_cumprod=None
) -> tuple[ProbabilityFlow, tuple[float, float]]:
    """
    The flow of a score network, a DDPM epsilon U-Net or a saved pipeline (its `unet` and `scheduler`), and the data
    range it models. Explicit arguments override what the pipeline's scheduler says.
    """
    scheduler = getattr(model, "scheduler", None)
    unet = getattr(model, "unet", model)
    config = getattr(scheduler, "config", {})
    is_ddpm_unet = isinstance(unet, UNet2DModel) and unet.config.time_embedding_type == "positional"
    is_vp = alphas_cumprod is not None or is_ddpm_unet or config.get("noise_space") == "vp"
    if data_range is None:
        data_range = getattr(scheduler, "data_range", None) or ((-1.0, 1.0) if is_vp else (0.0, 1.0))
    if is_vp:
        alphas_cumprod = alphas_cumprod if alphas_cumprod is not None else getattr(scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise ValueError(
                "A DDPM epsilon UNet2DModel needs its schedule: pass `alphas_cumprod=DDPMScheduler(...).alphas_cumprod` "
                "or the whole pipeline."
            )
        return vp_flow(unet, alphas_cumprod), tuple(data_range)
    sigma_min = sigma_min if sigma_min is not None else config.get("sigma_min")
    sigma_max = sigma_max if sigma_max is not None else config.get("sigma_max")
    if sigma_min is None or sigma_max is None:
        raise ValueError("Pass `sigma_min` and `sigma_max` (the noise range the score network was trained on).")
    return ve_flow(unet, sigma_min, sigma_max, data_range), tuple(data_range)


def draw_probes(shape, probe: str, generator: torch.Generator | None, device) -> torch.Tensor:
    """Hutchinson probes v with E[v v^T] = I: Rademacher (+-1) or standard Gaussian, from the caller's generator."""
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r} is not supported; choose one of {PROBES}.")
    if probe == "gaussian":
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    bits = torch.randint(0, 2, shape, generator=generator, device=generator.device if generator else "cpu")
    return (2.0 * bits - 1.0).to(device)


def exact_divergence(score: ScoreFunction, x: torch.Tensor, sigma: float, rows_per_batch: int = 1024) -> torch.Tensor:
    """div_x s(x, sigma) per image, exactly: the Jacobian's diagonal, D vector-Jacobian products (one per coordinate)
    computed as one backward pass over D copies of the batch, `rows_per_batch` copies at a time. Shape (B,)."""
    batch, dim = x.shape[0], x[0].numel()
    trace = torch.zeros(batch, dtype=torch.float64, device=x.device)
    copies = max(1, rows_per_batch // batch)
    for start in range(0, dim, copies):
        index = torch.arange(start, min(start + copies, dim), device=x.device)  # (m,)
        x_rep = x.detach().repeat(len(index), *([1] * (x.ndim - 1))).requires_grad_(True)  # (m * B, C, H, W)
        with torch.enable_grad():
            out = score(x_rep, sigma).reshape(len(index), batch, dim)
            picked = out.gather(2, index.view(-1, 1, 1).expand(-1, batch, 1)).sum()  # sum_j,b s_j(x_b) at j in index
            (grad,) = torch.autograd.grad(picked, x_rep)
        grad = grad.reshape(len(index), batch, dim).gather(2, index.view(-1, 1, 1).expand(-1, batch, 1))
        trace += grad.squeeze(2).sum(0).double()
    return trace


def hutchinson_divergence(score: ScoreFunction, x: torch.Tensor, sigma: float, probes: torch.Tensor):
    """(s(x, sigma), v^T (ds/dx) v) per image: an unbiased estimate of div s when E[v v^T] = I, with one vector-Jacobian
    product. Returns the score too, since the same forward pass gives it."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = score(x, sigma)
        (vjp,) = torch.autograd.grad((out * probes).sum(), x)
    return out.detach(), (vjp * probes).reshape(x.shape[0], -1).sum(1).double()


class FlowField:
    """The right-hand side of the ODE in u = log sigma for the state (x, delta) with delta' = sigma**2 div s, counting
    its evaluations (NFE). `trace=None` integrates x alone (encoding and decoding)."""

    def __init__(self, flow: ProbabilityFlow, trace: str | None = None, probes: torch.Tensor | None = None):
        if trace is not None and trace not in TRACE_METHODS:
            raise ValueError(f"trace={trace!r} is not supported; choose one of {TRACE_METHODS}.")
        self.flow, self.trace, self.probes, self.nfe = flow, trace, probes, 0

    def __call__(self, u: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.nfe += 1
        sigma = math.exp(u)
        if self.trace == "hutchinson":
            score, div = hutchinson_divergence(self.flow.score, x, sigma, self.probes)
        else:
            with torch.no_grad():
                score = self.flow.score(x, sigma)
            div = exact_divergence(self.flow.score, x, sigma) if self.trace == "exact" else None
        if not torch.isfinite(score).all() or (div is not None and not torch.isfinite(div).all()):
            # RK45 would shrink its step forever on NaN, and a fixed-step solver return NaN latents
            raise FloatingPointError(
                f"The score network returned non-finite values (NaN or inf) at sigma={sigma:.4g} (evaluation "
                f"{self.nfe}); the ODE cannot be integrated through them. Check the model's weights (a diverged "
                "training run?) and that the images are in its data range."
            )
        return -(sigma**2) * score, None if div is None else sigma**2 * div


def integrate(
    field: FlowField,
    x: torch.Tensor,
    sigma_start: float,
    sigma_end: float,
    solver: str = "rk45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Integrates the flow from sigma_start to sigma_end (either direction) for the whole batch at once. Returns x at
    sigma_end and delta = int sigma**2 div s du (zeros when `field.trace` is None), shape (B,).

    `solver="rk45"`: scipy's `solve_ivp` (Dormand-Prince, adaptive) at `rtol` / `atol` on the float64 state, as
    score_sde's likelihood does; `"heun"`: `num_steps` Heun steps evenly spaced in log sigma (2 * num_steps NFE).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not supported; choose one of {SOLVERS}.")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a finite number > 0 (RK45's tolerance; score_sde's is 1e-5).")
    u0, u1 = math.log(sigma_start), math.log(sigma_end)
    if solver == "heun":
        return _heun(field, x.float(), u0, u1, num_steps)
    from scipy.integrate import solve_ivp

    shape, numel = x.shape, x.numel()

    def rhs(u, state):
        xt = torch.from_numpy(state[:numel]).reshape(shape).to(x.device, torch.float32)
        dx, ddelta = field(u, xt)
        ddelta = torch.zeros(shape[0]) if ddelta is None else ddelta
        return np.concatenate([dx.double().cpu().numpy().ravel(), ddelta.double().cpu().numpy()])

    state0 = np.concatenate([x.double().cpu().numpy().ravel(), np.zeros(shape[0])])
    solution = solve_ivp(rhs, (u0, u1), state0, method="RK45", rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"The probability-flow ODE failed to integrate: {solution.message}")
    end = torch.from_numpy(solution.y[:, -1])
    return end[:numel].reshape(shape).to(x.device, torch.float32), end[numel:].to(x.device)


def _heun(field: FlowField, x: torch.Tensor, u0: float, u1: float, num_steps: int):
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive integer (Heun steps in log sigma).")
    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    grid = torch.linspace(u0, u1, num_steps + 1, dtype=torch.float64).tolist()
    for u, u_next in zip(grid[:-1], grid[1:]):
        h = u_next - u
        dx, dd = field(u, x)
        x_pred = x + h * dx
        dx_next, dd_next = field(u_next, x_pred)
        x = x + 0.5 * h * (dx + dx_next)
        if dd is not None:
            delta = delta + 0.5 * h * (dd + dd_next)
    return x, delta


def as_flow(model, sigma_min: float | None = None, sigma_max: float | None = None) -> ProbabilityFlow:
    """`model` itself if it is a [`ProbabilityFlow`], else the flow of the network or pipeline (see [`flow_for`])."""
    return model if isinstance(model, ProbabilityFlow) else flow_for(model, sigma_min, sigma_max)[0]


def encode(model, images: torch.Tensor, sigma_min=None, sigma_max=None, **solver_kwargs) -> torch.Tensor:
    """
    Images (data coordinates) -> latents at sigma_max along the deterministic ODE, in the sampler's coordinates
    (VE: x(sigma_max), where `NCSNPipeline` starts from N(centre, sigma_max**2 I); VP: x_T, from N(0, I)).

    Args:
        model: a [`ProbabilityFlow`], a score network or DDPM U-Net, or a pipeline (see [`flow_for`]).
        images (`torch.Tensor` of shape `(B, C, H, W)`): in the model's data range.
        sigma_min, sigma_max (`float`, *optional*): the VE range, when `model` is a bare score network.
        solver_kwargs: `solver`, `rtol`, `atol`, `num_steps` of [`integrate`].
    """
    flow = as_flow(model, sigma_min, sigma_max)
    x_ve, _ = integrate(
        FlowField(flow), images.float() * flow.data_scale, flow.sigma_min, flow.sigma_max, **solver_kwargs
    )
    return x_ve * flow.latent_scale


def decode(model, latents: torch.Tensor, sigma_min=None, sigma_max=None, **solver_kwargs) -> torch.Tensor:
    """Latents at sigma_max -> images in data coordinates at sigma_min: the inverse of [`encode`], same arguments."""
    flow = as_flow(model, sigma_min, sigma_max)
    x0, _ = integrate(
        FlowField(flow), latents.float() / flow.latent_scale, flow.sigma_max, flow.sigma_min, **solver_kwargs
    )
    return x0 / flow.data_scale
