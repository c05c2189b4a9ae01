"""Exact scores of Gaussian mixtures, wrapped as diffusers models so they run through the same loops a network does."""

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput


def mixture_score(x: torch.Tensor, means: torch.Tensor, weights: torch.Tensor, var: float, scale: float = 1.0):
    """Score of sum_k w_k N(scale * mu_k, var I) at x of shape (B, D); means (K, D)."""
    diff = x[:, None, :] - scale * means[None]  # (B, K, D)
    log_resp = torch.log(weights)[None] - diff.pow(2).sum(-1) / (2 * var)
    resp = torch.softmax(log_resp, dim=1)
    return -(resp[..., None] * diff).sum(1) / var


class MixtureScoreModel(ModelMixin, ConfigMixin):
    """The exact score of p_data = sum_k w_k N(mu_k, s^2 I) perturbed by N(0, sigma^2 I): an NCSN oracle (VE)."""

    @register_to_config
    def __init__(self, means: list, weights: list, std: float = 1.0, sample_size: int = 1, in_channels: int = 1):
        super().__init__()
        self.register_buffer("mu", torch.tensor(means, dtype=torch.float32))
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32))
        self.calls = 0

    def forward(self, sample: torch.Tensor, sigma, return_dict: bool = True):
        self.calls += 1
        sigma = float(torch.as_tensor(sigma).flatten()[0])
        flat = sample.reshape(sample.shape[0], -1)
        score = mixture_score(flat, self.mu, self.w, self.config.std**2 + sigma**2).reshape(sample.shape)
        return UNet2DOutput(sample=score) if return_dict else (score,)


class MixtureEpsilonModel(ModelMixin, ConfigMixin):
    """The exact epsilon* = -sqrt(1 - abar_t) * score of a Gaussian mixture of template images under DDPM (VP)."""

    @register_to_config
    def __init__(
        self, templates: list, weights: list, std: float, sample_size: int, in_channels: int = 1, alphas_cumprod=None
    ):
        super().__init__()
        self.register_buffer("mu", torch.tensor(templates, dtype=torch.float32).flatten(1))
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("abar", torch.tensor(alphas_cumprod, dtype=torch.float64))
        self.calls = 0

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        self.calls += 1
        t = int(torch.as_tensor(timestep).flatten()[0])
        abar = self.abar[t].item()
        flat = sample.reshape(sample.shape[0], -1).float()
        var = abar * self.config.std**2 + 1 - abar
        score = mixture_score(flat, self.mu, self.w, var, scale=abar**0.5)
        eps = (-((1 - abar) ** 0.5) * score).reshape(sample.shape).to(sample.dtype)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)
