"""The predictor-corrector sampler saved with a score model keeps its samples clean when a caller lowers
`num_inference_steps`, as every diffusers pipeline invites."""

import pytest
import torch
from analytic_models import ImageMixtureScoreModel

from ncsn_diffusers import NCSNPipeline, PredictorCorrectorScheduler
from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training.data import load_training_images
from ncsn_diffusers.training.objectives import build_objective
from ncsn_diffusers.training.sampler import make_pipeline

STD = 0.1  # the data: N(0, STD^2 I) on 8x8 images, whose exact score the oracle returns


def sample_std(scheduler, calls: int) -> float:
    model = ImageMixtureScoreModel([[0.0] * 64], [1.0], std=STD, sample_size=8, in_channels=1)
    pipe = NCSNPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipe(batch_size=512, num_inference_steps=calls, generator=generator, output_type="pt").images
    return (2 * images - 1).std().item()  # back to the model's [-1, 1]


@pytest.mark.parametrize("calls", [10, 20])
def test_the_default_runs_sampler_keeps_the_data_spread_at_lowered_calls(calls):
    """Bug caught: the default run saved PC with the reverse-diffusion predictor, whose noise exceeds the next level's
    posterior variance by sigma_i^2 (1 - sigma_{i+1}^2 / sigma_i^2)^2 per level; at 10 or 20 calls (5 or 10 levels)
    the chain ended with samples of std 0.22 or 0.125 for data of std 0.1 (every digit rough, docs/sampling.md). The
    ancestral predictor ends at the data's std (after Tweedie's last step, STD^2 / sqrt(STD^2 + sigma_L^2) = 0.098)."""
    torch.set_num_threads(1)
    args = TrainingConfig(resolution=8, model_preset="tiny").resolve()
    images = load_training_images(args)
    objective = build_objective(args, images)
    saved = make_pipeline(objective.build_network(args, images), objective.noise_scheduler, args).scheduler
    assert saved.config.predictor == "ancestral"
    exact = STD**2 / (STD**2 + saved.config.sigma_min**2) ** 0.5
    assert sample_std(saved, calls) == pytest.approx(exact, rel=0.12)
    reverse_diffusion = PredictorCorrectorScheduler.from_config(saved.config, predictor="reverse_diffusion")
    assert sample_std(reverse_diffusion, calls) > 1.25 * exact
