"""The likelihood term grad_x log p(y | x_t) that turns a prior score into the posterior score of y = A x_0 + n:

    grad_x log p_t(x | y) = s(x, t) + grad_x log p(y | x_t).

x_t = a x_0 + sigma z is the chain's sample (VE: a = 1; VP: a = sqrt(alphabar_t), sigma = sqrt(1 - alphabar_t)), and
D(x_t) = (x_t + sigma**2 s) / a = E[x_0 | x_t] is Tweedie's denoiser. Three approximations of p(y | x_t):

- `"langevin"`, Jalal et al. (2021): N(y; A x_t / a, (sigma_y**2 + gamma (sigma / a)**2) I), no network derivative.
- `"dps"`, Chung et al. (2023), Algorithm 1: not a score term but a step after the sampler's own, unconditional one,
  x <- x - zeta grad_{x_t} ||y - A D(x_t)||, i.e. the residual's gradient normalised by its norm (their
  zeta_i = zeta / ||y - A D||); `dps_correction` gives it. sigma_y does not enter.
- `"mmps"`, Rozet et al. (2024): N(y; A D(x_t), sigma_y**2 I + A V A^T) with Tweedie's covariance
  V = Cov[x_0 | x_t] = (sigma**2 / a) dD/dx_t, the system solved by conjugate gradients on vector-Jacobian products.
  For Gaussian data p(y | x_t) is exactly this Gaussian, so the posterior score is exact at every noise level.
"""

import torch

from ..parameterization import append_dims, sample_from_score
from .measurement import LinearMeasurement

METHODS = ("langevin", "dps", "mmps")


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a_i, b_i> per sample, shape (B,)."""
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(matvec, b: torch.Tensor, iterations: int) -> torch.Tensor:
    """
    Solves M v = b for a symmetric positive definite M given as `matvec`, one system per sample of the batch, by
    `iterations` steps of conjugate gradients from v = 0 (exact after as many steps as M has distinct eigenvalues).
    """
    v = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = batch_dot(r, r)
    for _ in range(iterations):
        mp = matvec(p)
        pmp = batch_dot(p, mp)
        alpha = torch.where(pmp > 0, rr / pmp.clamp_min(1e-30), torch.zeros_like(rr))
        v = v + append_dims(alpha, b.ndim) * p
        r = r - append_dims(alpha, b.ndim) * mp
        rr_next = batch_dot(r, r)
        beta = torch.where(rr > 0, rr_next / rr.clamp_min(1e-30), torch.zeros_like(rr))
        p = r + append_dims(beta, b.ndim) * p
        rr = rr_next
    return v


def posterior_score(
    method: str,
    score_fn,
    sample: torch.Tensor,
    sigma: float,
    signal_scale: float,
    measurement: LinearMeasurement,
    gamma: float = 1.0,
    cg_iterations: int = 3,
) -> torch.Tensor:
    """
    s(x_t) + grad_x log p(y | x_t) by `method`, with one call of the prior's score.

    Args:
        method (`str`): `"langevin"` or `"mmps"` (see the module's docstring; `"dps"` is `dps_correction`).
        score_fn (`Callable[[torch.Tensor], torch.Tensor]`): x_t -> s(x_t), the prior's score in the chain's
            coordinates; differentiable for `"dps"` and `"mmps"`.
        sample (`torch.Tensor` of shape `(B, C, H, W)`): x_t, float32.
        sigma (`float`), signal_scale (`float`): sigma and a of x_t = a x_0 + sigma z.
        measurement ([`LinearMeasurement`]): y (one per sample), A and sigma_y, in the model's data coordinates.
        gamma (`float`, defaults to 1.0): `"langevin"`'s gamma, the weight of the chain's own noise in the
            likelihood's variance sigma_y**2 + gamma (sigma / a)**2.
        cg_iterations (`int`, defaults to 3): `"mmps"`'s conjugate-gradient steps; each costs one vector-Jacobian
            product of the network, and one more gives the gradient.
    """
    a, sigma_y2 = signal_scale, measurement.noise_std**2
    if method == "dps":
        raise ValueError("method='dps' is a step after the sampler's, not a score term: use `dps_correction`.")
    if method == "langevin":
        score = score_fn(sample)
        residual = measurement.residual(sample / a)
        grad = measurement.operator.A_adjoint(residual) / (a * (sigma_y2 + gamma * (sigma / a) ** 2))
        return score + grad
    with torch.enable_grad():  # pipelines sample under no_grad
        x = sample.detach().requires_grad_(True)
        score = score_fn(x)
        denoised = sample_from_score(score, x, sigma, a)  # D(x_t) = E[x_0 | x_t]
        residual = measurement.residual(denoised).detach()

        def jacobian_product(u):  # dD/dx u; the Jacobian of a conservative score's denoiser is symmetric
            return torch.autograd.grad(denoised, x, u, retain_graph=True)[0]

        operator = measurement.operator
        # (sigma_y**2 I + A V A^T) v with V = (sigma**2 / a) dD/dx
        v = conjugate_gradient(
            lambda u: sigma_y2 * u + (sigma**2 / a) * operator.A(jacobian_product(operator.A_adjoint(u))),
            residual,
            cg_iterations,
        )
        (grad,) = torch.autograd.grad(denoised, x, operator.A_adjoint(v))
        return score.detach() + grad


def dps_correction(
    score_fn, sample: torch.Tensor, sigma: float, signal_scale: float, measurement: LinearMeasurement, step_size: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    DPS as in Chung et al. (2023), Algorithm 1 and their released code: the prior's score s(x_t), for the sampler's
    unconditional step, and the displacement -zeta grad_{x_t} ||y - A D(x_t)|| that follows it, per sample (the
    gradient of the squared residual weighed by zeta_i = zeta / ||y - A D(x_t)||, up to their factor 2). Being
    normalised, the step cannot blow up as sigma_y -> 0 or while D(x_t) is still far from y, as a 1 / sigma_y**2
    weight does. One call of the prior's score and one vector-Jacobian product.

    Args:
        score_fn, sample, sigma, signal_scale, measurement: as in [`posterior_score`].
        step_size (`float`): zeta, the length of the displacement's Jacobian-free part, in the model's data units.

    Returns:
        `(score, displacement)`, both shaped like `sample`.
    """
    with torch.enable_grad():  # pipelines sample under no_grad
        x = sample.detach().requires_grad_(True)
        score = score_fn(x)
        denoised = sample_from_score(score, x, sigma, signal_scale)  # D(x_t) = E[x_0 | x_t]
        residual = measurement.residual(denoised).detach()
        norm = residual.flatten(1).norm(dim=1).clamp_min(1e-12)
        # grad_x ||r|| = -(dD/dx)^T A^T r / ||r||, with r = y - A D
        direction = measurement.operator.A_adjoint(residual / append_dims(norm, residual.ndim))
        (grad,) = torch.autograd.grad(denoised, x, direction)
    return score.detach(), step_size * grad
