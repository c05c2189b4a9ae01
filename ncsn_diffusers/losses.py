"""Training objectives as pure functions of the network output, so tests can pin them to hand-derived values.

Both objectives are means over every element, the diffusers convention. Under epsilon = -sigma * score they are the
same number: dsm_loss(score, z, sigma) == epsilon_loss(-sigma * score, z). The paper's per-sample form,
1/2 * ||sigma * s + z||^2 summed over the D pixels, is D/2 times `dsm_loss`; a constant factor that Adam ignores.
"""

import torch

from .parameterization import append_dims


def dsm_loss(score: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Denoising score matching with lambda(sigma) = sigma**2 (Song & Ermon 2019, Eq. 5-6), mean over elements.

    Args:
        score (`torch.Tensor` of shape `(B, C, H, W)`): s_theta(x + sigma * z, sigma).
        noise (`torch.Tensor` of shape `(B, C, H, W)`): z ~ N(0, I), the noise that was added.
        sigma (`torch.Tensor` of shape `(B,)`): the noise level of each sample (VP: sqrt(1 - alphabar_t)).
    """
    sigma = append_dims(sigma.to(score.dtype), score.ndim)
    return (sigma * score + noise).pow(2).mean()


def epsilon_loss(epsilon: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The DDPM objective ||epsilon_theta(x_t, t) - z||^2 (Ho et al. 2020, Eq. 14), mean over elements."""
    return (epsilon - noise).pow(2).mean()
