"""`--sample_grid_steps`: the final grid of a short run need not cost the saved sampler's full chain (1000
calls x 64 images of `--recipe ncsn_v1`), and the saved pipeline keeps that sampler."""

import sys
from pathlib import Path

import pytest
import torch

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel
from ncsn_diffusers.training.sampler import save_sample_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # train_ncsn.py lives at the repository root


def test_the_grid_takes_the_given_calls_and_the_pipeline_keeps_its_chain(tmp_path):
    torch.manual_seed(0)
    scheduler = AnnealedLangevinScheduler(sigma_max=1.0, sigma_min=0.01, num_noise_levels=10, steps_per_level=100)
    pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    images = save_sample_grid(pipe, tmp_path / "grid.png", 4, 0, "cpu", num_inference_steps=20)
    assert len(calls) == 20 and images.shape == (4, 8, 8, 1) and (tmp_path / "grid.png").is_file()
    assert len(pipe.scheduler) == 1000  # the saved chain is still L x T
    calls.clear()
    save_sample_grid(pipe, tmp_path / "full.png", 1, 0, "cpu")
    assert len(calls) == 1000


def test_sample_grid_steps_must_be_positive(capsys):
    import train_ncsn

    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--sample_grid_steps", "0"])
    assert "--sample_grid_steps must be an integer >= 1" in capsys.readouterr().err
    assert train_ncsn.parse_args(["--sample_grid_steps", "100"]).sample_grid_steps == 100
