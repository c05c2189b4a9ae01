"""The model card's torch-only loop runs as printed for the sampler the model ships.

Bug caught: the card's loop failed with a KeyError on the default run's predictor-corrector config."""

import json
import re

import pytest
import torch

from ncsn_diffusers import (
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
    render_model_card,
)
from ncsn_diffusers.hub import save_pipeline_with_card


def run_card_snippet(folder, scheduler) -> dict:
    """Renders the card of the pipeline saved in `folder` and runs its torch-only blocks as printed, the Hub download
    aside (the folder is local)."""
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    card = render_model_card(unet_config, json.loads(scheduler.to_json_string()), repo_id="user/ncsn")
    blocks = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    functions = [b for b in blocks if b.lstrip().startswith(("import math", "@torch.no_grad()"))]
    (loading,) = [b for b in blocks if "AutoModel.from_pretrained" in b]
    loading = loading.replace('snapshot_download("user/ncsn")', repr(str(folder)))
    namespace = {}
    for code in functions + [loading]:
        exec(compile(code, "model_card_snippet", "exec"), namespace)
    return namespace


@pytest.fixture
def saved(tmp_path):
    def save(scheduler):
        torch.manual_seed(0)
        pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler)
        pipe.save_pretrained(tmp_path)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return save


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
def test_the_predictor_corrector_loop_samples_what_the_pipeline_samples(saved, tmp_path, predictor):
    """Catches the card's loop failing with KeyError: 'steps_per_level' on the default run's PC config, and a PC loop
    that is not the scheduler's chain (same draws from the same seed, so the same images), for either predictor."""
    scheduler = PredictorCorrectorScheduler(
        sigma_max=2.0,
        sigma_min=0.05,
        num_noise_levels=3,
        corrector_steps=1,
        data_range=(-1.0, 1.0),
        predictor=predictor,
    )
    pipe = saved(scheduler)
    x = run_card_snippet(tmp_path, scheduler)["x"]
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close((x + 1) / 2, images, atol=1e-4, rtol=0)


def test_another_samplers_config_runs_as_annealed_langevin(saved, tmp_path):
    scheduler = StochasticHeunScheduler(sigma_max=2.0, sigma_min=0.05, num_noise_levels=3, data_range=(-1.0, 1.0))
    saved(scheduler)
    x = run_card_snippet(tmp_path, scheduler)["x"]
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all() and -1 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("scheduler_name", ["DPMSolverMultistepScheduler", "DDIMScheduler"])
def test_the_diffusers_only_loop_of_an_epsilon_model_samples_its_saved_scheduler(tmp_path, scheduler_name):
    """Catches the card of an epsilon model that ships a diffusers scheduler (train_ncsn.py --objective epsilon saves
    DPMSolverMultistepScheduler) printing another scheduler or step count than the pipeline's: the snippet, run as
    printed, draws the pipeline's images."""
    import diffusers
    import numpy as np
    from diffusers import UNet2DModel
    from tiny_models import tiny_ddpm_unet

    tiny_ddpm_unet().save_pretrained(tmp_path / "source")  # a reloaded U-Net, as the snippet loads
    pipe = NCSNPipeline(
        UNet2DModel.from_pretrained(tmp_path / "source"),
        getattr(diffusers, scheduler_name)(num_train_timesteps=100),
        default_num_inference_steps=10,
    )
    save_pipeline_with_card(pipe, tmp_path / "pipe", repo_id=str(tmp_path / "pipe"))
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert f"diffusers' own `{scheduler_name}` at 10 network calls" in card and "takes 10 network evaluations" in card
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", card, re.DOTALL) if "DDPMPipeline(" in b]
    namespace = {}
    exec(compile(code, "model_card_snippet", "exec"), namespace)
    assert type(namespace["scheduler"]).__name__ == scheduler_name
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(batch_size=4, generator=torch.Generator().manual_seed(0)).images
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(namespace["images"], expected))
