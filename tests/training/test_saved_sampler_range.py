"""The sampler saved with a trained model maps its samples from the range the model was trained on."""

import itertools

import pytest

from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training.data import load_training_images, model_data_range
from ncsn_diffusers.training.objectives import build_objective
from ncsn_diffusers.training.recipes import RECIPES
from ncsn_diffusers.training.sampler import make_pipeline

SAMPLERS = ("predictor_corrector", "stochastic_heun", "annealed_langevin")
RUNS = [
    *({"recipe": r, "sampler": s} for r, s in itertools.product((None, *RECIPES), SAMPLERS)),
    *({"objective": o, "sampler": s} for o, s in itertools.product(("ssm",), SAMPLERS)),
    {"objective": "epsilon"},
]


def resolved(settings) -> TrainingConfig | None:
    try:
        return TrainingConfig(resolution=8, model_preset="tiny", steps_per_level=1, **settings).resolve()
    except ValueError:  # a combination the flags refuse (ncsn_v1 with a continuous sampler) saves nothing
        return None


@pytest.mark.parametrize("settings", RUNS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_the_saved_sampler_has_the_training_data_range(settings):
    """Bug caught: --recipe ncsnv2 trains on [0, 1] but saved its predictor-corrector or stochastic Heun sampler with
    data_range (-1, 1), so the saved pipeline mapped its samples to the wrong pixels."""
    args = resolved(settings)
    if args is None:
        pytest.skip("refused by the flag checks")
    images = load_training_images(args)
    objective = build_objective(args, images)
    pipe = make_pipeline(objective.build_network(args, images), objective.noise_scheduler, args)
    assert pipe.data_range == model_data_range(args)
