"""The one place where the score, epsilon and x0 parameterisations are converted into each other.

With x_noisy = a * x_0 + sigma * z (VE: a = 1; VP: a = sqrt(alphabar_t), sigma = sqrt(1 - alphabar_t)) the score of
the perturbed marginal satisfies Tweedie's formula: score(x_noisy) = (a * E[x_0 | x_noisy] - x_noisy) / sigma**2 and
score = -E[z | x_noisy] / sigma.
"""

import torch


def score_from_epsilon(epsilon: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """score = -epsilon / sigma (VE: sigma is the noise level; VP: sigma = sqrt(1 - alphabar_t))."""
    return -epsilon / sigma


def epsilon_from_score(score: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """epsilon = -sigma * score, the inverse of [`score_from_epsilon`]."""
    return -sigma * score


def score_from_sample(
    pred_original_sample: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, alpha: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """score = (alpha * x0_hat - x) / sigma**2, Tweedie's formula solved for the score (alpha = 1 in VE)."""
    return (alpha * pred_original_sample - sample) / sigma**2


def sample_from_score(
    score: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor | float, alpha: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """x0_hat = (x + sigma**2 * score) / alpha, Tweedie's denoiser (the NCSNv2 final denoising step when alpha = 1)."""
    if isinstance(sigma, torch.Tensor):
        denoised = sample + sigma**2 * score
    else:
        denoised = torch.add(sample, score, alpha=sigma**2)  # one fused kernel: this runs at every sampling step
    return denoised if isinstance(alpha, (int, float)) and alpha == 1.0 else denoised / alpha


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshapes a per-sample tensor of shape (B,) (or a scalar) to broadcast against a (B, ...) tensor of `ndim` dims."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))
