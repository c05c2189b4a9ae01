"""Training objectives as pure functions of the network output, so tests can pin them to hand-derived values.

Both objectives are means over every element, the diffusers convention. Under epsilon = -sigma * score they are the
same number: dsm_loss(score, z, sigma) == epsilon_loss(-sigma * score, z). The paper's per-sample form,
1/2 * ||sigma * s + z||^2 summed over the D pixels, is D/2 times `dsm_loss`; a constant factor that Adam ignores.

`ssm_loss`, sliced score matching, needs the network's Jacobian and so takes the score function itself. It is on the
same scale: in expectation dsm_loss = ssm_loss + 1 for any network (Vincent 2011; the 1 is E||z||^2 / D).
"""

from collections.abc import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .parameterization import append_dims


def dsm_loss(
    score: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Denoising score matching with lambda(sigma) = sigma**2 (Song & Ermon 2019, Eq. 5-6), mean over elements.

    Args:
        score (`torch.Tensor` of shape `(B, C, H, W)`): s_theta(x + sigma * z, sigma).
        noise (`torch.Tensor` of shape `(B, C, H, W)`): z ~ N(0, I), the noise that was added.
        sigma (`torch.Tensor` of shape `(B,)`): the noise level of each sample (VP: sqrt(1 - alphabar_t)).
        weights (`torch.Tensor` of shape `(B,)`, *optional*): a further weight per sample, e.g. [`edm_loss_weight`].
    """
    sigma = append_dims(sigma.to(score.dtype), score.ndim)
    squared_error = (sigma * score + noise).pow(2)
    if weights is not None:
        squared_error = append_dims(weights.to(score.dtype), score.ndim) * squared_error
    return squared_error.mean()


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """(sigma^2 + sigma_data^2) / sigma_data^2: the weight on `dsm_loss` that gives EDM's loss (Karras et al. 2022,
    Table 1). With D = c_skip x~ + c_out F, sigma^2 ||s - target||^2 = ||D - x||^2 / sigma^2 = c_out^2 / sigma^2
    ||F - F_target||^2, and c_out^2 / sigma^2 = sigma_data^2 / (sigma^2 + sigma_data^2): EDM's lambda(sigma) =
    (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on ||D - x||^2 is this weight on DSM, and ||F - F_target||^2."""
    return (sigma**2 + sigma_data**2) / sigma_data**2


def epsilon_loss(epsilon: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The DDPM objective ||epsilon_theta(x_t, t) - z||^2 (Ho et al. 2020, Eq. 14), mean over elements."""
    return (epsilon - noise).pow(2).mean()


def ssm_loss(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sample: torch.Tensor,
    sigma: torch.Tensor,
    num_projections: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Annealed sliced score matching, variance-reduced, with lambda(sigma) = sigma**2, mean over elements.

    Sliced score matching (Song, Garg, Shi & Ermon, UAI 2019) replaces the trace tr(grad_x s_theta) of score matching
    by v^T (grad_x s_theta) v for random projections v ~ N(0, I); for Gaussian v, E[1/2 (v^T s_theta)^2] =
    1/2 ||s_theta||^2 is taken exactly (the variance-reduced form). Annealed as in the authors'
    `anneal_sliced_score_estimation_vr` (Song & Ermon 2019): on the perturbed data x~ = x + sigma z, per sample

        l(theta; sigma) = sigma**2 * (1/2 ||s_theta(x~, sigma)||^2 + v^T grad_x s_theta(x~, sigma) v),

    averaged over the M projections. Returned as 2 / D times that (D pixels), the scale of `dsm_loss`. Each
    projection costs one vector-Jacobian product (double backward, v^T J^T v = v^T J v), on a batch of M * B.

    Args:
        score_fn (`Callable`):
            s_theta: maps a batch x~ of shape `(N, C, H, W)` and its noise levels sigma of shape `(N,)` to the score,
            differentiably in x~ (the network call, e.g. `lambda x, s: unet(x, s).sample`).
        sample (`torch.Tensor` of shape `(B, C, H, W)`):
            x~ = x + sigma * z, the perturbed data.
        sigma (`torch.Tensor` of shape `(B,)`):
            The noise level of each sample.
        num_projections (`int`, defaults to 1):
            M, the projections v per sample.
        generator (`torch.Generator`, *optional*):
            The source of the projections v.
    """
    if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections={num_projections!r} must be a positive integer.")
    batch_size = sample.shape[0]
    x = sample.detach().repeat(num_projections, *([1] * (sample.ndim - 1))).requires_grad_(True)  # (M * B, C, H, W)
    sigma_m = sigma.repeat(num_projections)
    v = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    # The fused attention kernels have no second derivative; the math kernel is plain autograd ops.
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        score = score_fn(x, sigma_m).float()
        # grad_x (v . s) = J^T v; create_graph keeps it differentiable in theta
        jacobian_t_v = torch.autograd.grad((score * v).sum(), x, create_graph=True)[0]
    per_sample = (0.5 * score.pow(2) + v * jacobian_t_v).flatten(1).sum(1)  # (M * B,)
    per_sample = per_sample.view(num_projections, batch_size).mean(0) * sigma.float() ** 2
    return 2.0 * per_sample.mean() / sample[0].numel()
