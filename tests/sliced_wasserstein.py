"""The sliced Wasserstein distance between two equal-sized point clouds: how far a sampler's draws are from exact
draws of the distribution it samples, weights and shapes of the modes together."""

import torch


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """SW_2(a, b) = (E_theta W_2^2(theta . a, theta . b))^(1/2) over random unit directions theta; in 1-D, W_2 between
    two sets of N points pairs them in sorted order. `a` and `b` have shape `(N, D)`."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both have shape (N, D), got {tuple(a.shape)} and {tuple(b.shape)}.")
    theta = torch.randn(
        a.shape[1], num_projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    theta /= theta.norm(dim=0, keepdim=True)
    pa, pb = (x.double() @ theta for x in (a, b))
    return (pa.sort(dim=0).values - pb.sort(dim=0).values).square().mean().sqrt().item()
