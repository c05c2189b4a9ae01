"""Score matching on the VE ladder: NCSN's denoising score matching (DSM) and sliced score matching (SSM)."""

import torch

from ...losses import edm_loss_weight
from ..batch_order import PROJECTION_STREAM, derived_seed
from .base import Objective
from .perturbation import training_losses
from .sigma_draws import log_normal_sigmas, log_uniform_sigmas


class DenoisingScoreMatching(Objective):
    """NCSN's DSM, mean ||sigma s_theta(x + sigma z, sigma) + z||^2, with sigma from `--sigma_sampling`: a level of
    the ladder (discrete), log-uniform in [sigma_L, sigma_1] or log-normal truncated to it (EDM). Under
    `--preconditioning edm` each sample is weighted by EDM's lambda(sigma) sigma^2 = (sigma^2 + sigma_data^2) /
    sigma_data^2, which makes the loss EDM's ||F_theta - F_target||^2."""

    name, logged_as = "dsm", "loss_epsilon"
    ve_ladder = default_run_ladder = takes_recipe = takes_preconditioning = True
    resume_must_match = ("preconditioning", "sigma_data")

    def losses(self, unet, clean, noise, levels, micro_step, process_index=0):
        sigma_data = self.config.sigma_data
        weight = (lambda sigma: edm_loss_weight(sigma, sigma_data)) if self.config.preconditioning else None
        return training_losses(
            unet, self.noise_scheduler, clean, noise, levels, self.ladder(clean.device), loss_weight=weight
        )

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
    default_run_ladder = takes_recipe = takes_preconditioning = False
    resume_must_match = ()

    def losses(self, unet, clean, noise, levels, micro_step, process_index=0):
        device = clean.device
        v_seed = derived_seed(self.config.seed, PROJECTION_STREAM, micro_step, process_index)
        projections = (self.config.num_projections, torch.Generator(device).manual_seed(v_seed))
        return training_losses(unet, self.noise_scheduler, clean, noise, levels, self.ladder(device), projections)
