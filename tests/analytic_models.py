"""Exact scores of Gaussian mixtures of images, wrapped as diffusers models so they run through the loops a network
does. The mixture math is the package's own (`ncsn_diffusers.training.toy.mixture_score`); these add image shapes, the DDPM
forward process and a call counter."""

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers.probability_flow import vp_sigma
from ncsn_diffusers.training.toy import mixture_score


class ImageMixtureScoreModel(ModelMixin, ConfigMixin):
    """The exact score of p_data = sum_k w_k N(mu_k, s^2 I) perturbed by N(0, sigma^2 I): an NCSN oracle (VE)."""

    @register_to_config
    def __init__(self, means: list, weights: list, std: float = 1.0, sample_size: int = 1, in_channels: int = 1):
        super().__init__()
        # buffers give the model a dtype and device, as pipelines expect
        self.register_buffer("mu", torch.tensor(means, dtype=torch.float32), persistent=False)
        self.calls = 0

    def forward(self, sample: torch.Tensor, sigma, return_dict: bool = True):
        self.calls += 1
        sigma = float(torch.as_tensor(sigma).flatten()[0])
        flat = sample.reshape(sample.shape[0], -1)
        score = mixture_score(flat, sigma, self.mu, self.config.weights, self.config.std).reshape(sample.shape)
        return UNet2DOutput(sample=score) if return_dict else (score,)


class ImageMixtureEpsilonModel(ModelMixin, ConfigMixin):
    """The exact epsilon* = -sqrt(1 - abar_t) * score of a Gaussian mixture of template images under DDPM (VP)."""

    @register_to_config
    def __init__(self, templates: list, weights: list, std: float, sample_size: int, in_channels: int, alphas_cumprod):
        super().__init__()
        self.register_buffer("mu", torch.tensor(templates, dtype=torch.float32).flatten(1), persistent=False)
        self.register_buffer("abar", torch.tensor(alphas_cumprod, dtype=torch.float64), persistent=False)
        self.calls = 0

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        self.calls += 1
        abar = self.abar[int(torch.as_tensor(timestep).flatten()[0])].item()
        flat = sample.reshape(sample.shape[0], -1).float()
        # x_t = sqrt(abar) x_0 + sqrt(1 - abar) z: components N(sqrt(abar) mu_k, (abar s^2 + 1 - abar) I)
        std_t = (abar * self.config.std**2 + 1 - abar) ** 0.5
        score = mixture_score(flat, 0.0, abar**0.5 * self.mu, self.config.weights, std_t)
        eps = (-((1 - abar) ** 0.5) * score).reshape(sample.shape).to(sample.dtype)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)


class GaussianEpsilonModel(ModelMixin, ConfigMixin):
    """epsilon*(x_t, t) of data N(mean, std^2 I) under x_t = sqrt(abar) x_0 + sqrt(1 - abar) z, at float t, with abar
    from `vp_sigma`: x_t ~ N(sqrt(abar) mean, (abar std^2 + 1 - abar) I)."""

    @register_to_config
    def __init__(self, mean: float, std: float, alphas_cumprod: list, sample_size: int = 2, in_channels: int = 1):
        super().__init__()
        self.register_buffer("abar", torch.tensor(alphas_cumprod, dtype=torch.float64), persistent=False)

    def forward(self, sample, timestep, return_dict=True):
        sigma = vp_sigma(self.abar, timestep).item()
        abar = 1 / (1 + sigma**2)
        var = abar * self.config.std**2 + 1 - abar
        eps = (1 - abar) ** 0.5 * (sample - abar**0.5 * self.config.mean) / var
        return UNet2DOutput(sample=eps.to(sample.dtype)) if return_dict else (eps,)


class GaussianScoreModel(ModelMixin, ConfigMixin):
    """The exact score of images x ~ N(mean, covariance) (full covariance over the C * H * W pixels) perturbed by
    N(0, sigma^2 I): s(x, sigma) = -(Sigma + sigma^2 I)^-1 (x - mu) = -U diag(1 / (lambda + sigma^2)) U^T (x - mu),
    differentiable in x (VE)."""

    @register_to_config
    def __init__(self, mean: list, covariance: list, sample_size=2, in_channels: int = 1):
        super().__init__()
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.tensor(covariance, dtype=torch.float64))
        self.register_buffer("mu", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("eigenvalues", eigenvalues.float(), persistent=False)
        self.register_buffer("eigenvectors", eigenvectors.float(), persistent=False)
        self.calls = 0

    def forward(self, sample: torch.Tensor, sigma, return_dict: bool = True):
        self.calls += 1
        sigma = float(torch.as_tensor(sigma).flatten()[0])
        u = self.eigenvectors
        coordinates = (sample.reshape(sample.shape[0], -1) - self.mu) @ u  # (B, d) in the eigenbasis
        score = -((coordinates / (self.eigenvalues + sigma**2)) @ u.T).reshape(sample.shape)
        return UNet2DOutput(sample=score) if return_dict else (score,)


class GaussianCovarianceEpsilonModel(ModelMixin, ConfigMixin):
    """epsilon*(x_t, t) of images x_0 ~ N(mean, covariance) under DDPM's x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z at
    integer t: x_t ~ N(sqrt(abar) mu, abar Sigma + (1 - abar) I), epsilon* = -sqrt(1 - abar) * score (VP)."""

    @register_to_config
    def __init__(self, mean: list, covariance: list, alphas_cumprod: list, sample_size=2, in_channels: int = 1):
        super().__init__()
        self.register_buffer("mu", torch.tensor(mean, dtype=torch.float64), persistent=False)
        self.register_buffer("cov", torch.tensor(covariance, dtype=torch.float64), persistent=False)
        self.register_buffer("abar", torch.tensor(alphas_cumprod, dtype=torch.float64), persistent=False)

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        abar = self.abar[int(torch.as_tensor(timestep).flatten()[0])].item()
        cov_t = abar * self.cov + (1 - abar) * torch.eye(len(self.mu), dtype=torch.float64)
        flat = sample.reshape(sample.shape[0], -1)
        score = -(flat - abar**0.5 * self.mu.to(flat.dtype)) @ torch.linalg.inv(cov_t).to(flat.dtype)
        eps = (-((1 - abar) ** 0.5) * score).reshape(sample.shape)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)
