"""Continuous distributions of the noise level sigma over a VE ladder's range [sigma_L, sigma_1]."""

import math

import torch


def log_uniform_sigmas(ladder: torch.Tensor, batch_size: int, generator, device) -> torch.Tensor:
    """(B,) float32 sigmas with log sigma ~ U(log sigma_L, log sigma_1): sigma = sigma_L (sigma_1 / sigma_L)^u."""
    sigma_max, sigma_min = float(ladder.max()), float(ladder.min())
    u = torch.rand(batch_size, generator=generator, device=device)
    return sigma_min * (sigma_max / sigma_min) ** u


def log_normal_sigmas(ladder: torch.Tensor, mean: float, std: float, batch_size: int, generator, device):
    """(B,) float32 sigmas with log sigma ~ N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1], drawn by
    inverse CDF: log sigma = P_mean + P_std Phi^-1(u), u ~ U(Phi(a), Phi(b)), so no draw piles up at a bound."""
    log_min, log_max = (math.log(float(bound)) for bound in ladder.aminmax())
    low, high = (0.5 * (1.0 + math.erf((bound - mean) / (std * math.sqrt(2.0)))) for bound in (log_min, log_max))
    u = low + (high - low) * torch.rand(batch_size, generator=generator, device=device)
    log_sigma = mean + std * torch.special.ndtri(u)
    return log_sigma.clamp(log_min, log_max).exp()  # the clamp only catches float32 rounding at the bounds
