"""Training objectives: each owns its noise-level distribution and its loss (as EDM's loss objects)."""

import math

import torch

from ..losses import dsm_loss, epsilon_loss, ssm_loss
from ..parameterization import append_dims, epsilon_from_score, score_from_epsilon
from .batch_order import PROJECTION_STREAM, derived_seed

# Objectives trained on the VE ladder, x + sigma z: score networks s_theta(x, sigma) and the noise classifier.
VE_OBJECTIVES = ("dsm", "ssm", "noise_classifier")
# Objectives whose ladder and sigma draws default to the default run's (the ncsnv2 ladder, log-uniform sigma).
DEFAULT_RUN_LADDER = ("dsm", "noise_classifier")


def log_uniform_sigmas(ladder: torch.Tensor, batch_size: int, generator, device) -> torch.Tensor:
    """(B,) float32 sigmas with log sigma ~ U(log sigma_L, log sigma_1): sigma = sigma_L (sigma_1 / sigma_L)^u."""
    sigma_max, sigma_min = float(ladder.max()), float(ladder.min())
    u = torch.rand(batch_size, generator=generator, device=device)
    return sigma_min * (sigma_max / sigma_min) ** u


def log_normal_sigmas(ladder: torch.Tensor, mean: float, std: float, batch_size: int, generator, device):
    """(B,) float32 sigmas with log sigma ~ N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1], drawn by
    inverse CDF: log sigma = P_mean + P_std Phi^-1(u), u ~ U(Phi(a), Phi(b)), so no draw piles up at a bound."""
    log_min, log_max = (math.log(float(bound)) for bound in ladder.aminmax())
    low, high = (0.5 * (1.0 + math.erf((bound - mean) / (std * math.sqrt(2.0)))) for bound in (log_min, log_max))
    u = low + (high - low) * torch.rand(batch_size, generator=generator, device=device)
    log_sigma = mean + std * torch.special.ndtri(u)
    return log_sigma.clamp(log_min, log_max).exp()  # the clamp only catches float32 rounding at the bounds


def objective_losses(model_output, noise, sigma, prediction_type: str):
    """(training loss, the other objective's value) for a score or epsilon output; the two are equal in exact math.

    score: dsm_loss = mean (sigma s + z)^2, logged also as epsilon_loss(-sigma s, z).
    epsilon: epsilon_loss = mean (eps - z)^2, logged also as dsm_loss(-eps / sigma, z, sigma).
    """
    sigma_b = append_dims(sigma.to(model_output.dtype), model_output.ndim)
    if prediction_type == "score":
        return dsm_loss(model_output, noise, sigma), epsilon_loss(epsilon_from_score(model_output, sigma_b), noise)
    return epsilon_loss(model_output, noise), dsm_loss(score_from_epsilon(model_output, sigma_b), noise, sigma)


def training_losses(unet, noise_scheduler, clean, noise, levels, sigmas_or_alphas, ssm_projections=None):
    """Perturbs the batch and evaluates the network: NCSN's x + sigma z (VE) or DDPM's x_t (VP).

    Args:
        sigmas_or_alphas (`torch.Tensor`): the scheduler's `sigmas` (VE) or `alphas_cumprod` (VP), on the device.
        ssm_projections (`tuple[int, torch.Generator]`, *optional*): (M, generator of v) for sliced score matching.

    Returns:
        `tuple`: (loss to optimise, the same loss in the other parameterisation), both scalars.
    """
    if noise_scheduler.config.noise_space == "ve":
        sigma = levels if levels.is_floating_point() else sigmas_or_alphas[levels]  # (B,); float: log_uniform draws
        noisy = noise_scheduler.add_noise(clean, noise, sigma)  # x + sigma z
        if ssm_projections is not None:
            return sliced_losses(unet, noisy, noise, sigma, *ssm_projections)
        return objective_losses(unet(noisy, sigma).sample.float(), noise, sigma, "score")  # fp32 under autocast
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


class Objective:
    """A training objective: the distribution of its noise levels and its loss, called at every step, and the
    network it trains and how that is saved (`build_network`, `use_batch_order`, `finish`: a score network saved as
    a pipeline, unless a subclass says otherwise), and the state of any other model it owns (`prepare`, `after_step`,
    `state_dict`, `load_state_dict`).

    Subclasses set `name` (the `--objective` value) and `logged_as` (the log key of the same loss in the other
    parameterisation, or of the second logged figure), and are listed in `OBJECTIVES`; a new objective is one class
    and one entry there.
    """

    name: str
    logged_as: str

    def __init__(self, config, noise_scheduler):
        self.config, self.noise_scheduler = config, noise_scheduler

    def sample_levels(self, batch_size: int, generator: torch.Generator, device) -> torch.Tensor:
        """(B,) noise levels of one global batch, drawn from `generator` (the batch's (seed, step) stream)."""
        raise NotImplementedError

    def losses(self, unet, clean, noise, levels, micro_step: int, process_index: int = 0):
        """(loss to optimise, the same loss in the other parameterisation), both scalars."""
        return training_losses(unet, self.noise_scheduler, clean, noise, levels, self.ladder(clean.device))

    # Hooks: the network the run trains and how it is saved, and the state of an objective that owns models besides
    # it (a teacher, a target network). The defaults train and save a score (or epsilon) network.

    def build_network(self, args, images) -> torch.nn.Module:
        """The network to train, on the training set `images`: the score (or epsilon) U-Net of `args`."""
        from .networks import build_paper_unet, build_unet  # networks imports this module

        return build_unet(args) if args.model_type == "unet" else build_paper_unet(args, self.noise_scheduler)

    def use_batch_order(self, order, num_processes: int):
        """Called once with the run's `BatchOrder` before training; an objective reading per-image data keeps it."""

    def prepare(self, accelerator, network):
        """Called once the trained network is prepared, before a checkpoint is resumed."""

    def after_step(self, network):
        """Called after each optimizer step with the unwrapped trained network."""

    def state_dict(self) -> dict:
        """The objective's own state (tensors and JSON values), saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict):
        """Restores what `state_dict` returned."""

    def finish(self, args, accelerator, network, ema, images, max_train_steps: int, train_time: float, last: dict):
        """Saves the trained network to --output_dir: the pipeline with its sample grid and model card."""
        from .export import finish  # export imports this module

        finish(args, accelerator, network, ema, self.noise_scheduler, images, max_train_steps, train_time, last)

    def ladder(self, device) -> torch.Tensor:
        """The scheduler's `sigmas` (VE) or `alphas_cumprod` (VP) on `device`, computed once."""
        if getattr(self, "_ladder", None) is None or self._ladder.device != torch.device(device):
            scheduler = self.noise_scheduler
            self._ladder = (scheduler.sigmas if self.name in VE_OBJECTIVES else scheduler.alphas_cumprod).to(device)
        return self._ladder


class DenoisingScoreMatching(Objective):
    """NCSN's DSM, mean ||sigma s_theta(x + sigma z, sigma) + z||^2, with sigma from `--sigma_sampling`: a level of
    the ladder (discrete), log-uniform in [sigma_L, sigma_1] or log-normal truncated to it (EDM)."""

    name, logged_as = "dsm", "loss_epsilon"

    def sample_levels(self, batch_size, generator, device):
        sigmas, config = self.noise_scheduler.sigmas, self.config
        if config.sigma_sampling == "log_uniform":
            return log_uniform_sigmas(sigmas, batch_size, generator, device)
        if config.sigma_sampling == "log_normal":
            mean, std = config.log_sigma_mean, config.log_sigma_std
            return log_normal_sigmas(sigmas, mean, std, batch_size, generator, device)
        return torch.randint(0, len(sigmas), (batch_size,), generator=generator, device=device)  # ladder indices


class SlicedScoreMatching(DenoisingScoreMatching):
    """Sliced score matching (`ssm_loss`) on the same ladder and sigma draws, `--num_projections` v per sample."""

    name, logged_as = "ssm", "loss_dsm"

    def losses(self, unet, clean, noise, levels, micro_step, process_index=0):
        device = clean.device
        v_seed = derived_seed(self.config.seed, PROJECTION_STREAM, micro_step, process_index)
        projections = (self.config.num_projections, torch.Generator(device).manual_seed(v_seed))
        return training_losses(unet, self.noise_scheduler, clean, noise, levels, self.ladder(device), projections)


class EpsilonPrediction(Objective):
    """DDPM's loss mean ||eps_theta(x_t, t) - z||^2 on x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z, t uniform."""

    name, logged_as = "epsilon", "loss_dsm"

    def sample_levels(self, batch_size, generator, device):
        num_timesteps = self.config.num_train_timesteps
        return torch.randint(0, num_timesteps, (batch_size,), generator=generator, device=device)


class NoiseClassification(DenoisingScoreMatching):
    """A noise-conditional classifier's cross-entropy -log p_phi(y | x + sigma z, sigma), sigma drawn as DSM draws it
    (Song et al., 2021, App. I); y is the label of each image (`labels.py`), logged beside the error rate."""

    name, logged_as = "noise_classifier", "error_rate"

    def build_network(self, args, images):
        from .labels import load_training_labels
        from .noise_classifier import build_classifier

        self.labels, class_names = load_training_labels(args)
        if len(self.labels) != len(images):
            raise ValueError(
                f"{len(images)} training images but {len(self.labels)} labels: --objective noise_classifier needs "
                "every image readable (one was skipped, see the warning); remove or fix the unreadable files."
            )
        return build_classifier(args, class_names)

    def use_batch_order(self, order, num_processes):
        self.order, self.num_processes = order, num_processes

    def losses(self, classifier, clean, noise, levels, micro_step, process_index=0):
        from .noise_classifier import noise_classifier_losses

        index = self.order.indices(micro_step, process_index, self.num_processes)
        sigma = levels if levels.is_floating_point() else self.ladder(clean.device)[levels]
        return noise_classifier_losses(classifier, clean, self.labels[index].to(clean.device), sigma, noise)

    def finish(self, args, accelerator, network, ema, images, max_train_steps, train_time, last):
        from .noise_classifier import save_classifier

        save_classifier(args, accelerator, network, ema, len(images), max_train_steps, train_time, last)


OBJECTIVES = {
    objective.name: objective
    for objective in (DenoisingScoreMatching, SlicedScoreMatching, EpsilonPrediction, NoiseClassification)
}


def build_objective(config, noise_scheduler) -> Objective:
    """The objective `config.objective` names, on the ladder of `noise_scheduler`."""
    return OBJECTIVES[config.objective](config, noise_scheduler)


from .distillation_objective import ConsistencyDistillation  # noqa: E402 (it subclasses Objective; last: a cycle)

OBJECTIVES[ConsistencyDistillation.name] = ConsistencyDistillation
