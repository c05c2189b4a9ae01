"""The model card says what the run did: its sampler, its sigma distribution, its data and their size.

Bug caught: every score model's card said "annealed Langevin dynamics" (for a saved predictor-corrector or stochastic
Heun sampler), "σ drawn uniformly from the L levels" (for log-uniform or log-normal sigma) and "8×8 digits (1,797
images)" (for a 16x16 model trained on the 1,437 training digits).
"""

import numpy as np
import pytest
from PIL import Image

from ncsn_diffusers.hub import PipelineCard, render_model_card, save_pipeline_with_card
from ncsn_diffusers.training import TrainingConfig
from ncsn_diffusers.training.data import card_datasets, training_set
from ncsn_diffusers.training.export import card_training
from ncsn_diffusers.training.objectives import build_objective
from ncsn_diffusers.training.sampler import make_pipeline

TINY = dict(model_preset="tiny", resolution=8, report_to="none")
RUNS = {  # name -> (settings, the sampler's words, the sigma distribution's words)
    "default": ({}, "the **predictor-corrector** sampler", "σ drawn log-uniformly from [σ_L, σ_1]"),
    "langevin": (
        dict(sampler="annealed_langevin", sigma_sampling="discrete", num_noise_levels=4, sigma_max=1.0),
        "**annealed Langevin dynamics**",
        "σ drawn uniformly from the L levels of the training ladder",
    ),
    "heun": (
        dict(sampler="stochastic_heun", sigma_sampling="log_normal", log_sigma_mean=-1.0, log_sigma_std=1.5),
        "EDM's **stochastic Heun** sampler",
        "log σ drawn from N(-1, 1.5²) truncated to [log σ_L, log σ_1]",
    ),
    "ssm": (dict(objective="ssm"), "**annealed Langevin dynamics**", "σ drawn uniformly from the L levels"),
    "epsilon": (dict(objective="epsilon"), "`DPMSolverMultistepScheduler`", "t uniform over the 1000"),
}
SAMPLER_WORDS = ("annealed Langevin dynamics", "predictor-corrector", "stochastic Heun", "consistent annealed")


def card_of(settings: dict, tmp_path) -> tuple[str, int]:
    """The card `train_ncsn.py` would write for these settings, from the run's own scheduler, network and data."""
    args = TrainingConfig(**TINY, **settings, output_dir=str(tmp_path / "run")).resolve()
    images = training_set(args)
    objective = build_objective(args, images)
    unet = objective.build_network(args, images)
    pipe = make_pipeline(unet, objective.noise_scheduler, args)
    card = PipelineCard(
        training=card_training(args, len(images), 10, 1, "no", objective.ve_ladder), datasets=card_datasets(args)
    )
    return save_pipeline_with_card(pipe, tmp_path / "saved", card).read_text(encoding="utf-8"), len(images)


@pytest.mark.parametrize("name", RUNS)
def test_card_names_the_saved_sampler_the_sigma_draws_and_the_data(name, tmp_path):
    settings, sampler_words, sigma_words = RUNS[name]
    card, num_images = card_of(settings, tmp_path)
    intro = card.split("\n# ", 1)[1].split("It was trained and saved", 1)[0]
    assert sampler_words in intro
    assert [w for w in SAMPLER_WORDS if w in intro] == [w for w in SAMPLER_WORDS if w in sampler_words]
    assert sigma_words in card
    assert f"the run trained on {num_images:,} images at 8×8" in card
    assert num_images == 1437 and "1,797" not in card


def test_card_of_an_image_folder_counts_its_images(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / f"{i}.png")
    card, num_images = card_of(dict(train_data_dir=str(folder), channels=1), tmp_path)
    assert num_images == 6
    assert "Data: image folder `pictures`; the run trained on 6 images at 8×8." in card
    assert "This one was trained on 6 images" in card


def test_card_without_training_record_claims_no_distribution():
    unet = {"_class_name": "NCSNUNet2DModel", "sample_size": 16, "in_channels": 1}
    card = render_model_card(unet, {"_class_name": "PredictorCorrectorScheduler", "sigma_max": 1.0, "sigma_min": 0.1})
    assert "the distribution was not recorded" in card and "uniformly" not in card
