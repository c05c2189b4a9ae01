"""The SDEs of score_sde (Song et al., ICLR 2021) in VE coordinates: the noise level sigma of each time t, and back.

A VP or sub-VP marginal x_t = alpha(t) x_0 + std(t) z, read as x_VE = x_t / alpha(t), is x_0 + sigma z with
sigma = std / alpha (the VP-to-VE map every sampler of this package uses), and the scores satisfy
s_VE(x_VE, sigma) = alpha * s(x_t, t). With log alpha(t) = -t**2 (beta_max - beta_min) / 4 - t beta_min / 2:

- VE: sigma(t) = sigma_min (sigma_max / sigma_min)**t;
- VP: std = sqrt(1 - alpha**2), so sigma**2 = 1 / alpha**2 - 1;
- sub-VP: std = 1 - alpha**2 (already a standard deviation), so sigma = (1 - alpha**2) / alpha;
- discrete VP (DDPM with N steps): alpha_k = sqrt(prod_{j <= k} (1 - beta_j)), beta_j = linspace(beta_min / N,
  beta_max / N, N).

Everything here is float64; the network's own conditioning is rounded as the authors' float32 code rounds it.
"""

import math

import torch

SDES = ("ve", "vp", "subvp")


def log_mean_coeff(t: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """log alpha(t) = -t**2 (beta_max - beta_min) / 4 - t beta_min / 2 of the (sub-)VP SDE."""
    return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


def sigma_from_time(sde: str, t: torch.Tensor, sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0):
    """The VE noise level sigma(t) of a continuous SDE, in float64."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if sde == "ve":
        return sigma_min * (sigma_max / sigma_min) ** t
    log_alpha = log_mean_coeff(t, beta_min, beta_max)
    if sde == "vp":
        return torch.sqrt(torch.expm1(-2 * log_alpha))
    return -torch.expm1(2 * log_alpha) / torch.exp(log_alpha)


def time_from_sigma(sde: str, sigma: torch.Tensor, sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0):
    """The time t with `sigma_from_time(sde, t) == sigma`, in float64."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if sde == "ve":
        return torch.log(sigma / sigma_min) / math.log(sigma_max / sigma_min)
    if sde == "vp":
        minus_log_alpha = 0.5 * torch.log1p(sigma**2)
    else:  # alpha**2 + sigma alpha - 1 = 0
        minus_log_alpha = -torch.log(2 / (torch.sqrt(sigma**2 + 4) + sigma))
    # (beta_max - beta_min) / 4 t**2 + beta_min / 2 t - c = 0, solved without cancellation
    a, b = 0.25 * (beta_max - beta_min), 0.5 * beta_min
    return 2 * minus_log_alpha / (b + torch.sqrt(b**2 + 4 * a * minus_log_alpha))


def discrete_vp_tables(beta_min: float, beta_max: float, num_scales: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(alphabar_k), sqrt(1 - alphabar_k)) of score_sde's discrete VP SDE, k = 0..N-1, in float32 as theirs."""
    betas = torch.linspace(beta_min / num_scales, beta_max / num_scales, num_scales)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return torch.sqrt(alphas_cumprod), torch.sqrt(1.0 - alphas_cumprod)
