"""The perturbed batch and the network's loss on it, in both parameterisations: NCSN's x + sigma z (VE) and DDPM's
x_t (VP), shared by the score and epsilon objectives."""

from ...losses import dsm_loss, epsilon_loss, ssm_loss
from ...parameterization import append_dims, epsilon_from_score, score_from_epsilon


def objective_losses(model_output, noise, sigma, prediction_type: str, weights=None):
    """(training loss, the other objective's value) for a score or epsilon output; the two are equal in exact math.

    score: dsm_loss = mean (sigma s + z)^2 (times per-sample `weights`), logged also as epsilon_loss(-sigma s, z).
    epsilon: epsilon_loss = mean (eps - z)^2, logged also as dsm_loss(-eps / sigma, z, sigma).
    """
    sigma_b = append_dims(sigma.to(model_output.dtype), model_output.ndim)
    if prediction_type == "score":
        epsilon = epsilon_loss(epsilon_from_score(model_output, sigma_b), noise)
        return dsm_loss(model_output, noise, sigma, weights), epsilon
    return epsilon_loss(model_output, noise), dsm_loss(score_from_epsilon(model_output, sigma_b), noise, sigma)


def training_losses(
    unet, noise_scheduler, clean, noise, levels, sigmas_or_alphas, ssm_projections=None, loss_weight=None
):
    """Perturbs the batch and evaluates the network: NCSN's x + sigma z (VE) or DDPM's x_t (VP).

    Args:
        sigmas_or_alphas (`torch.Tensor`): the scheduler's `sigmas` (VE) or `alphas_cumprod` (VP), on the device.
        ssm_projections (`tuple[int, torch.Generator]`, *optional*): (M, generator of v) for sliced score matching.
        loss_weight (`Callable`, *optional*): sigma (B,) -> per-sample weights of the VE DSM loss.

    Returns:
        `tuple`: (loss to optimise, the same loss in the other parameterisation), both scalars.
    """
    if noise_scheduler.config.noise_space == "ve":
        sigma = levels if levels.is_floating_point() else sigmas_or_alphas[levels]  # (B,); float: log_uniform draws
        noisy = noise_scheduler.add_noise(clean, noise, sigma)  # x + sigma z
        if ssm_projections is not None:
            return sliced_losses(unet, noisy, noise, sigma, *ssm_projections)
        weights = loss_weight(sigma) if loss_weight is not None else None
        return objective_losses(unet(noisy, sigma).sample.float(), noise, sigma, "score", weights)  # fp32 (autocast)
    sigma = (1.0 - sigmas_or_alphas[levels]).sqrt()  # sqrt(1 - abar_t), the VE-equivalent noise scale of z
    noisy = noise_scheduler.add_noise(clean, noise, levels)  # sqrt(abar_t) x + sqrt(1 - abar_t) z
    return objective_losses(unet(noisy, levels).sample.float(), noise, sigma, "epsilon")


def sliced_losses(unet, noisy, noise, sigma, num_projections, generator):
    """(ssm_loss, dsm_loss of the same network outputs): in expectation dsm = ssm + 1, a check logged for free."""
    outputs = []

    def score_fn(x, s):
        outputs.append(unet(x, s).sample.float())  # fp32 under autocast
        return outputs[-1]

    loss = ssm_loss(score_fn, noisy, sigma, num_projections, generator=generator)
    return loss, dsm_loss(outputs[0][: len(noisy)].detach(), noise, sigma)
