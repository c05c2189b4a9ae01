"""The 2-D toy problem of Song & Ermon (2019), Sec. 3: p_data = 0.2 N((-5, -5), I) + 0.8 N((5, 5), I).

Its exact scores (of p_data and of p_data convolved with N(0, sigma^2 I), which is the same mixture with variance
1 + sigma^2), i.i.d. samples, a small MLP score network s_theta(x, sigma) and its denoising score matching loop. The
paper uses it to show that a score estimated by DSM is inaccurate where p_data is low (Fig. 2) and that plain
Langevin dynamics with the exact score misweights separated modes while annealed Langevin dynamics does not (Fig. 3).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..losses import dsm_loss, ssm_loss
from ..parameterization import append_dims

TOY_MEANS = ((-5.0, -5.0), (5.0, 5.0))
TOY_WEIGHTS = (0.2, 0.8)
TOY_STD = 1.0


def _mixture_terms(x: torch.Tensor, sigma: float, means, weights, std: float):
    means = torch.as_tensor(means, dtype=x.dtype, device=x.device)  # (K, D)
    weights = torch.as_tensor(weights, dtype=x.dtype, device=x.device)  # (K,)
    var = std**2 + sigma**2  # p_sigma = p_data * N(0, sigma^2 I): each component's variance grows by sigma^2
    diff = x[:, None, :] - means[None]  # (B, K, D)
    log_components = (
        weights.log()[None] - diff.pow(2).sum(-1) / (2 * var) - 0.5 * x.shape[-1] * math.log(2 * math.pi * var)
    )
    return log_components, diff, var


def mixture_log_prob(
    x: torch.Tensor, sigma: float = 0.0, means=TOY_MEANS, weights=TOY_WEIGHTS, std: float = TOY_STD
) -> torch.Tensor:
    """log p_sigma(x) of sum_k w_k N(mu_k, (std^2 + sigma^2) I) at x of shape (B, D); sigma = 0 gives log p_data."""
    log_components, _, _ = _mixture_terms(x, sigma, means, weights, std)
    return torch.logsumexp(log_components, dim=1)


def mixture_score(
    x: torch.Tensor, sigma: float = 0.0, means=TOY_MEANS, weights=TOY_WEIGHTS, std: float = TOY_STD
) -> torch.Tensor:
    """grad_x log p_sigma(x) = -sum_k r_k(x) (x - mu_k) / (std^2 + sigma^2), with r_k the responsibilities."""
    log_components, diff, var = _mixture_terms(x, sigma, means, weights, std)
    responsibilities = torch.softmax(log_components, dim=1)  # (B, K)
    return -(responsibilities[..., None] * diff).sum(1) / var


def sample_mixture(
    num_samples: int,
    generator: torch.Generator | None = None,
    means=TOY_MEANS,
    weights=TOY_WEIGHTS,
    std: float = TOY_STD,
) -> torch.Tensor:
    """Draws `num_samples` i.i.d. points of shape (num_samples, D) from sum_k w_k N(mu_k, std^2 I)."""
    means = torch.as_tensor(means, dtype=torch.float32)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    u = torch.rand(num_samples, generator=generator)
    component = torch.bucketize(u, weights.cumsum(0)[:-1], right=True)  # P(component = k) = w_k
    z = randn_tensor((num_samples, means.shape[1]), generator=generator)
    return means[component] + std * z


@dataclass
class ToyScoreOutput(BaseOutput):
    """
    Output of the toy score models.

    Args:
        sample (`torch.Tensor` of shape `(batch_size, num_features)`):
            The score s(x, sigma) at the input points.
    """

    sample: torch.Tensor


class MixtureScoreModel(ModelMixin, ConfigMixin):
    """
    The exact score of the sigma-perturbed mixture as a diffusers model: an oracle s(x, sigma) that runs through the
    same scheduler loop as a trained network.

    Args:
        means (`list[list[float]]`, defaults to the paper's ((-5, -5), (5, 5))):
            The component means mu_k.
        weights (`list[float]`, defaults to (0.2, 0.8)):
            The component weights w_k.
        std (`float`, defaults to 1.0):
            The per-coordinate standard deviation of every component of p_data.
    """

    @register_to_config
    def __init__(self, means: Sequence = TOY_MEANS, weights: Sequence = TOY_WEIGHTS, std: float = TOY_STD):
        super().__init__()
        if len(means) != len(weights) or not all(w > 0 for w in weights) or not math.isclose(sum(weights), 1.0):
            raise ValueError(f"weights={weights} must be one positive weight per mean, summing to 1.")
        self.register_buffer("mu", torch.tensor(means, dtype=torch.float32), persistent=False)  # (K, D)
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32), persistent=False)  # (K,)

    def forward(self, sample: torch.Tensor, sigma: float | torch.Tensor, return_dict: bool = True):
        sigma = float(torch.as_tensor(sigma).flatten()[0])  # the scheduler calls every sample at one level
        score = mixture_score(sample.float(), sigma, self.mu, self.w, self.config.std).to(sample.dtype)
        return ToyScoreOutput(sample=score) if return_dict else (score,)


class ToyScoreNet(ModelMixin, ConfigMixin):
    """
    A small MLP score network s_theta(x, sigma) = F_theta(x, log sigma) / sigma for points x of shape (B, D).

    As in `NCSNUNet2DModel`, the network sees log sigma and its output is divided by sigma (NCSNv2, Technique 3), so
    F_theta = sigma * s_theta has order one at every noise level.

    Args:
        num_features (`int`, defaults to 2):
            D, the dimension of the data.
        hidden_dim (`int`, defaults to 128):
            The width of the hidden layers.
        num_hidden_layers (`int`, defaults to 3):
            The number of hidden layers.
    """

    @register_to_config
    def __init__(self, num_features: int = 2, hidden_dim: int = 128, num_hidden_layers: int = 3):
        super().__init__()
        layers, width = [], num_features + 1
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_dim), nn.SiLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, num_features))
        self.net = nn.Sequential(*layers)

    def forward(self, sample: torch.Tensor, sigma: float | torch.Tensor, return_dict: bool = True):
        sigma = torch.as_tensor(sigma, dtype=sample.dtype, device=sample.device).flatten()
        sigma = sigma.expand(sample.shape[0]) if sigma.numel() == 1 else sigma  # (B,)
        hidden = torch.cat([sample, sigma.log()[:, None]], dim=1)  # (B, D + 1)
        score = self.net(hidden) / append_dims(sigma, sample.ndim)
        return ToyScoreOutput(sample=score) if return_dict else (score,)


def train_toy_score_net(
    model: ToyScoreNet,
    sigmas: float | Sequence[float] = 0.1,
    num_steps: int = 2000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    generator: torch.Generator | None = None,
    objective: str = "dsm",
    num_projections: int = 1,
) -> list[float]:
    """
    Trains `model` by score matching on fresh samples of the toy mixture; returns the loss of every step.

    Each step draws x ~ p_data, a level sigma uniformly from `sigmas` per sample and z ~ N(0, I), and minimises
    mean ||sigma * s_theta(x + sigma z, sigma) + z||^2 (Eq. 5-6 with lambda(sigma) = sigma^2), or, with
    `objective="ssm"`, the sliced score matching loss [`ssm_loss`] at x + sigma z. One level and no annealing is the
    setting of the paper's Fig. 2.

    Args:
        model (`ToyScoreNet`):
            The network, trained in place.
        sigmas (`float` or `Sequence[float]`, defaults to 0.1):
            The noise level(s) sigma_i.
        num_steps (`int`, defaults to 2000):
            The number of Adam steps.
        batch_size (`int`, defaults to 256):
            The samples per step.
        learning_rate (`float`, defaults to 1e-3):
            Adam's learning rate.
        generator (`torch.Generator`, *optional*):
            The source of the data, the levels, the noise and the projections.
        objective (`str`, defaults to `"dsm"`):
            `"dsm"` (denoising score matching) or `"ssm"` (sliced score matching, variance-reduced).
        num_projections (`int`, defaults to 1):
            M, the projections per sample of `"ssm"`.
    """
    sigmas = torch.tensor([sigmas] if isinstance(sigmas, int | float) else list(sigmas), dtype=torch.float32)
    if sigmas.numel() == 0 or not (sigmas > 0).all():
        raise ValueError(f"sigmas={sigmas.tolist()} must be one or more positive noise levels, e.g. 0.1.")
    if objective not in ("dsm", "ssm"):
        raise ValueError(f"objective={objective!r} is not supported; choose 'dsm' or 'ssm'.")
    if num_steps < 1 or batch_size < 1:
        raise ValueError(f"num_steps={num_steps} and batch_size={batch_size} must both be positive integers.")
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    # The DSM target -z / sigma is noisy at small sigma; decaying the rate to 0 averages the noise out.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / num_steps)
    model.train()
    losses = []
    for _ in range(num_steps):
        x = sample_mixture(batch_size, generator=generator)
        sigma = sigmas[torch.randint(len(sigmas), (batch_size,), generator=generator)]
        z = randn_tensor(x.shape, generator=generator)
        noisy = x + append_dims(sigma, x.ndim) * z
        if objective == "ssm":
            loss = ssm_loss(lambda x_, s_: model(x_, s_).sample, noisy, sigma, num_projections, generator=generator)
        else:
            loss = dsm_loss(model(noisy, sigma).sample, z, sigma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses
