"""The exact posterior classifier p(k | x, sigma) of a Gaussian mixture of images, as a diffusers model, so that
classifier guidance can be checked against closed forms: score + grad_x log p(k | x, sigma) is the score of component
k, -(x - mu_k) / (s^2 + sigma^2)."""

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ncsn_diffusers.models.noise_conditional_classifier import NoiseConditionalClassifierOutput


class MixturePosteriorClassifier(ModelMixin, ConfigMixin):
    """logits_k = log w_k - ||x - mu_k||^2 / (2 (s^2 + sigma^2)): every component has the same variance, so the
    Gaussians' normalisers cancel in the softmax."""

    @register_to_config
    def __init__(self, means: list, weights: list, std: float = 1.0, num_classes: int = 2):
        super().__init__()
        self.register_buffer("mu", torch.tensor(means, dtype=torch.float32), persistent=False)  # (K, D)
        self.calls = 0

    def forward(self, sample: torch.Tensor, sigma, return_dict: bool = True):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=sample.device).reshape(-1, 1)  # (1 or B, 1)
        flat = sample.reshape(sample.shape[0], -1).float()  # (B, D)
        distances = (flat[:, None, :] - self.mu[None]).pow(2).sum(-1)  # (B, K)
        log_weights = torch.tensor(self.config.weights, dtype=torch.float32, device=sample.device).log()
        logits = log_weights - distances / (2 * (self.config.std**2 + sigma**2))
        return NoiseConditionalClassifierOutput(logits=logits) if return_dict else (logits,)
