"""Training a noise-conditional classifier p_phi(y | x, sigma) for classifier guidance (Song et al., 2021, App. I).

The classifier is trained by cross-entropy on labelled data perturbed as the score model's data were: x~ = x + sigma z
with sigma drawn from the score model's training distribution (log-uniform over [sigma_L, sigma_1] for the default
run), so that at every sigma a sampler visits, grad_x log p_phi(y | x~, sigma) is the gradient of a classifier that
has seen data at that noise level.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import append_dims


def noise_classifier_loss(
    classifier: torch.nn.Module, clean: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """
    Cross-entropy -log p_phi(y | x + sigma z, sigma), the mean over the batch.

    Args:
        classifier (`torch.nn.Module`): maps `(x~, sigma)` to an output with `.logits` of shape `(B, K)`.
        clean (`torch.Tensor` of shape `(B, C, H, W)`): x, in the score model's data range.
        labels (`torch.Tensor` of shape `(B,)`): y, integer classes.
        sigma (`torch.Tensor` of shape `(B,)`): the noise level of each sample.
        noise (`torch.Tensor` of shape `(B, C, H, W)`): z ~ N(0, I).
    """
    noisy = clean + append_dims(sigma.to(clean.dtype), clean.ndim) * noise
    return F.cross_entropy(classifier(noisy, sigma).logits.float(), labels)


def log_uniform_sigmas(
    sigma_min: float, sigma_max: float
) -> Callable[[int, torch.Generator, torch.device], torch.Tensor]:
    """A draw of B sigmas with log sigma ~ U(log sigma_min, log sigma_max), the default run's sigma distribution."""

    def draw(batch_size: int, generator: torch.Generator, device) -> torch.Tensor:
        u = torch.rand(batch_size, generator=generator, device=device)
        return sigma_min * (sigma_max / sigma_min) ** u

    return draw


def train_noise_classifier(
    classifier: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    draw_sigmas: Callable[[int, torch.Generator, torch.device], torch.Tensor],
    num_steps: int,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    start_step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    on_step_end: Callable[[int, float], None] | None = None,
) -> list[float]:
    """
    Trains `classifier` in place with Adam on [`noise_classifier_loss`]; returns the loss of each step.

    Every step draws its batch, sigmas and noise from a generator seeded by (seed, step), so a run resumed at
    `start_step` (with the optimizer state it saved) takes the steps an uninterrupted run takes.

    Args:
        classifier (`torch.nn.Module`): e.g. a [`NoiseConditionalClassifier`].
        images (`torch.Tensor` of shape `(N, C, H, W)`): the labelled data, in the score model's data range.
        labels (`torch.Tensor` of shape `(N,)`): their integer classes.
        draw_sigmas (`Callable`): `(batch_size, generator, device) -> (batch_size,)` sigmas, the score model's
            training distribution (e.g. [`log_uniform_sigmas`]).
        num_steps (`int`): the step to stop at (the total, counting steps before `start_step`).
        batch_size (`int`, defaults to 128): samples per step.
        learning_rate (`float`, defaults to 2e-3): Adam's step size.
        seed (`int`, defaults to 0): the seed of every draw.
        start_step (`int`, defaults to 0): the first step to take (a resumed run's).
        optimizer (`torch.optim.Optimizer`, *optional*): Adam over `classifier`'s parameters if not given.
        on_step_end (`Callable`, *optional*): called as `on_step_end(step, loss)` after each step, e.g. to checkpoint.
    """
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) must be one label per image.")
    device = images.device
    optimizer = optimizer or torch.optim.Adam(classifier.parameters(), lr=learning_rate)
    classifier.train()
    losses = []
    for step in range(start_step, num_steps):
        generator = torch.Generator(device).manual_seed(seed * 1_000_003 + step)
        index = torch.randint(0, len(images), (batch_size,), generator=generator, device=device)
        sigma = draw_sigmas(batch_size, generator, device)
        noise = randn_tensor((batch_size, *images.shape[1:]), generator=generator, device=device)
        loss = noise_classifier_loss(classifier, images[index], labels[index], sigma, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step_end is not None:
            on_step_end(step + 1, losses[-1])
    classifier.eval()
    return losses
