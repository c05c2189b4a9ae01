"""Linear-Gaussian inverse problems with a closed-form posterior: images x ~ N(mu, Sigma) of 1 x 2 x 2 pixels in [0, 1]
(full Sigma), y = A x + n, n ~ N(0, sigma_y^2 I), hence x | y ~ N(m, C) with C = (Sigma^-1 + A^T A / sigma_y^2)^-1,
m = C (Sigma^-1 mu + A^T y / sigma_y^2). The prior is modelled in the data range (-1, 1), x_model = 2 x - 1."""

import math
from dataclasses import dataclass

import torch
from analytic_models import GaussianScoreModel

IMAGE_SHAPE = (1, 2, 2)
DIM = math.prod(IMAGE_SHAPE)
DATA_RANGE = (-1.0, 1.0)


def operator_matrix(operator) -> torch.Tensor:
    """The (m, d) matrix of any linear operator on images of IMAGE_SHAPE: A applied to the d basis images."""
    basis = torch.eye(DIM).reshape(DIM, *IMAGE_SHAPE)
    return operator.A(basis).reshape(DIM, -1).T.double()


def gaussian_prior(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mu around 0.5 and a rotated Sigma with standard deviations 0.1, 0.07, 0.05, 0.03 (float64, image units)."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
    sigma = rotation @ torch.diag(torch.tensor([0.1, 0.07, 0.05, 0.03], dtype=torch.float64) ** 2) @ rotation.T
    mu = 0.5 + 0.05 * torch.randn(DIM, generator=generator, dtype=torch.float64)
    return mu, sigma


@dataclass
class GaussianProblem:
    operator: object
    noise_std: float
    y: torch.Tensor  # one measurement, the operator's output shape without batch axis
    mean: torch.Tensor  # m, (d,)
    covariance: torch.Tensor  # C, (d, d)
    model: GaussianScoreModel


def gaussian_problem(operator, noise_std: float, seed: int = 0) -> GaussianProblem:
    """A draw x ~ N(mu, Sigma), its measurement y and the exact posterior N(m, C)."""
    mu, sigma = gaussian_prior()
    matrix = operator_matrix(operator)
    generator = torch.Generator().manual_seed(seed + 1)
    x = mu + torch.linalg.cholesky(sigma) @ torch.randn(DIM, generator=generator, dtype=torch.float64)
    y = operator.A(x.float().reshape(1, *IMAGE_SHAPE))[0].double()
    y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=torch.float64)
    precision = torch.linalg.inv(sigma)
    covariance = torch.linalg.inv(precision + matrix.T @ matrix / noise_std**2)
    mean = covariance @ (precision @ mu + matrix.T @ y.flatten() / noise_std**2)
    # x_model = 2 x - 1: mean 2 mu - 1, covariance 4 Sigma
    model = GaussianScoreModel((2 * mu - 1).tolist(), (4 * sigma).tolist(), sample_size=2, in_channels=1)
    return GaussianProblem(operator, noise_std, y.float(), mean, covariance, model)


def posterior_errors(samples: torch.Tensor, problem: GaussianProblem) -> tuple[float, float]:
    """(the largest |mean - m| in posterior standard deviations along C's Cholesky axes, ||cov - C||_F / ||C||_F)."""
    x = samples.flatten(1).double()
    cholesky = torch.linalg.cholesky(problem.covariance)
    whitened = torch.linalg.solve_triangular(cholesky, (x.mean(0) - problem.mean)[:, None], upper=False)
    relative = torch.linalg.matrix_norm(torch.cov(x.T) - problem.covariance) / torch.linalg.matrix_norm(
        problem.covariance
    )
    return whitened.abs().max().item(), relative.item()
