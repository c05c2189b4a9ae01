"""Noise ladders sigma_1 > ... > sigma_L: NCSN's geometric one and EDM's (VE), and the levels of a DDPM schedule (VP)."""

import math

import torch
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def geometric_sigmas(sigma_max: float, sigma_min: float, num_noise_levels: int) -> torch.Tensor:
    """The NCSN ladder: sigma_1 = sigma_max > ... > sigma_L = sigma_min with constant ratio sigma_{i-1} / sigma_i.

    A single level (L = 1) is plain Langevin dynamics at sigma_min.
    """
    if num_noise_levels == 1:
        return torch.tensor([sigma_min], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_noise_levels, dtype=torch.float64))


def karras_sigmas(sigma_max: float, sigma_min: float, num_levels: int, rho: float = 7.0) -> torch.Tensor:
    """t_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..N-1 (EDM, Eq. 5):
    t_0 = sigma_max > ... > t_{N-1} = sigma_min, as diffusers' `CMStochasticIterativeScheduler` builds it. Shape (N,),
    float64; N = 1 gives (sigma_max,)."""
    if num_levels == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    ramp = torch.linspace(0, 1, num_levels, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def ddpm_alphas_cumprod(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: list[float] | None = None,
) -> torch.Tensor:
    """alphabar_t = prod_{s <= t} (1 - beta_s) for the beta schedules of diffusers' `DDPMScheduler`, in float64."""
    if trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=torch.float64)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        betas = betas_for_alpha_bar(num_train_timesteps).to(torch.float64)
    else:
        raise ValueError(
            f"beta_schedule={beta_schedule!r} is not supported; use one of {BETA_SCHEDULES} or pass trained_betas."
        )
    return torch.cumprod(1.0 - betas, dim=0)


def vp_level_timesteps(alphas_cumprod: torch.Tensor, num_noise_levels: int) -> torch.Tensor:
    """Picks L integer DDPM timesteps t_1 > ... > t_L whose noise levels form a near-geometric ladder.

    The VE-equivalent noise level of x_t / sqrt(alphabar_t) is sqrt((1 - alphabar_t) / alphabar_t); the levels are the
    timesteps nearest (in log sigma) to a geometric ladder between its values at t = T - 1 and t = 0, made strictly
    decreasing where the ladder is denser than the integer grid.
    """
    num_train_timesteps = alphas_cumprod.shape[0]
    if num_noise_levels > num_train_timesteps:
        raise ValueError(
            f"num_noise_levels={num_noise_levels} exceeds the {num_train_timesteps} timesteps of the DDPM schedule; "
            f"choose num_noise_levels <= {num_train_timesteps}."
        )
    log_sigma = 0.5 * torch.log((1.0 - alphas_cumprod) / alphas_cumprod)
    targets = torch.linspace(log_sigma[-1].item(), log_sigma[0].item(), num_noise_levels, dtype=torch.float64)
    nearest = (log_sigma[None, :] - targets[:, None]).abs().argmin(dim=1)
    levels = nearest.tolist()
    for i in range(1, num_noise_levels):
        levels[i] = min(levels[i], levels[i - 1] - 1)
    for i in range(num_noise_levels - 1, -1, -1):
        levels[i] = max(levels[i], num_noise_levels - 1 - i)
    return torch.tensor(levels, dtype=torch.long)
