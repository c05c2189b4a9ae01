"""DDPM's epsilon objective on the VP schedule."""

import torch

from ..networks import build_ddpm_unet
from .base import Objective


class EpsilonPrediction(Objective):
    """DDPM's loss mean ||eps_theta(x_t, t) - z||^2 on x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z, t uniform, for a
    stock `UNet2DModel` with the preset's blocks."""

    name, logged_as = "epsilon", "loss_dsm"
    noise_space = "vp"

    def sample_levels(self, batch_size, generator, device):
        num_timesteps = self.config.num_train_timesteps
        return torch.randint(0, num_timesteps, (batch_size,), generator=generator, device=device)

    def build_network(self, args, images):
        return build_ddpm_unet(args)
