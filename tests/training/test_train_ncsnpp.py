"""train_ncsn.py --model_type ncsnpp: diffusers' NCSN++ UNet2DModel (the google/ncsnpp layout) trained by the score
objectives on [0, 1] data and saved as a ScoreSdeVePipeline folder, which diffusers' own pipeline and the package's
pipelines both load."""

import json
import re

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from diffusers import ScoreSdeVePipeline, UNet2DModel

import train_ncsn
from ncsn_diffusers import NCSNPipeline, PredictorCorrectorScheduler
from ncsn_diffusers.losses import dsm_loss
from ncsn_diffusers.schedulers import SCORE_SCHEDULERS
from ncsn_diffusers.training import TrainingConfig, train
from ncsn_diffusers.training.data import model_data_range
from ncsn_diffusers.training.objectives import build_objective

torch.set_num_threads(1)

# An explicit ladder, so that the saved ScoreSdeVeScheduler can be checked against the flags.
TINY_NCSNPP = dict(model_type="ncsnpp", model_preset="tiny", resolution=8, sigma_max=2.0, sigma_min=0.05)
TINY_NCSNPP.update(num_noise_levels=4, snr=0.2, sampling_calls=6, report_to="none")


def train_tiny(output_dir, **settings):
    AcceleratorState._reset_state(reset_partial_state=True)  # as a fresh process has it
    GradientState._reset_state()
    config = TrainingConfig(**TINY_NCSNPP, train_batch_size=8, num_sample_images=2, max_train_steps=2)
    config.output_dir, config.logging_steps = str(output_dir), 1
    for name, value in settings.items():
        setattr(config, name, value)
    train(config)


@pytest.fixture(scope="module")
def ncsnpp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ncsnpp") / "run"
    train_tiny(folder)
    return folder


def test_a_run_saves_a_score_sde_ve_folder_with_the_runs_sampler(ncsnpp_run):
    """Bug caught: the folder was written in the package's format (NCSNPipeline, PredictorCorrectorScheduler), which
    diffusers' ScoreSdeVePipeline cannot load, or with diffusers' default sigma range instead of the run's."""
    index = json.loads((ncsnpp_run / "model_index.json").read_text())
    assert index["_class_name"] == "ScoreSdeVePipeline"
    assert (index["unet"], index["scheduler"]) == (["diffusers", "UNet2DModel"], ["diffusers", "ScoreSdeVeScheduler"])
    scheduler = json.loads((ncsnpp_run / "scheduler" / "scheduler_config.json").read_text())
    # 6 calls of PC with one corrector step = 3 levels, from sigma_1 = 2 down to sigma_L = 0.05
    assert {k: scheduler[k] for k in ("sigma_max", "sigma_min", "snr", "correct_steps", "num_train_timesteps")} == {
        "sigma_max": 2.0,
        "sigma_min": 0.05,
        "snr": 0.2,
        "correct_steps": 1,
        "num_train_timesteps": 3,
    }
    unet = json.loads((ncsnpp_run / "unet" / "config.json").read_text())
    assert (unet["time_embedding_type"], unet["center_input_sample"], unet["in_channels"]) == ("fourier", True, 3)
    assert "NCSNPipeline.from_pretrained" in (ncsnpp_run / "README.md").read_text()  # a score model's card


def test_the_cards_diffusers_only_snippet_samples_the_folder_as_printed(ncsnpp_run):
    """Bug caught: the card of a ScoreSdeVePipeline folder showed the package's torch-only loop, which reads keys
    (`num_noise_levels`, `corrector_steps`) that a ScoreSdeVeScheduler config does not have (KeyError), and its
    settings table named the package's scheduler instead of the file's."""
    card = (ncsnpp_run / "README.md").read_text()
    assert "def annealed_langevin" not in card and "def predictor_corrector" not in card
    assert "| `correct_steps` |" in card and "ScoreSdeVeScheduler" in card
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", card, re.DOTALL) if "ScoreSdeVePipeline" in block]
    assert "num_inference_steps=3," in code  # the run's chain: 3 levels, not diffusers' 2,000
    namespace = {}
    exec(compile(code.replace("your-namespace/your-model", str(ncsnpp_run)), "card_snippet", "exec"), namespace)
    images = namespace["images"]
    assert len(images) == 4 and images[0].size == (8, 8)


def test_the_folder_samples_in_diffusers_pipeline_and_in_every_score_sampler_with_the_same_score(ncsnpp_run):
    """Bug caught: a folder that diffusers' own pipeline loads but the package's refuses (or converts to another data
    range), or whose U-Net returns another function once loaded here."""
    stock = ScoreSdeVePipeline.from_pretrained(ncsnpp_run)
    stock.set_progress_bar_config(disable=True)
    images = stock(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    images = torch.as_tensor(images.images)
    assert images.shape == (2, 8, 8, 3) and torch.isfinite(images).all()

    pipe = NCSNPipeline.from_pretrained(ncsnpp_run)
    assert isinstance(pipe.scheduler, PredictorCorrectorScheduler) and pipe.data_range == (0.0, 1.0)
    assert (pipe.scheduler.config.sigma_max, pipe.scheduler.config.sigma_min) == (2.0, 0.05)
    x, sigma = torch.rand(2, 3, 8, 8), torch.tensor([0.07, 1.3])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, sigma).sample, stock.unet(x, sigma).sample)
    pipe.set_progress_bar_config(disable=True)
    for cls in SCORE_SCHEDULERS:
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        out = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt")
        assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all(), cls.__name__


def test_ssm_trains_ncsnpp_too(tmp_path):
    """Bug caught: sliced score matching (second derivatives through the FIR Skip blocks) failed on NCSN++."""
    train_tiny(tmp_path / "ssm", objective="ssm", max_train_steps=1)
    assert json.loads((tmp_path / "ssm" / "model_index.json").read_text())["_class_name"] == "ScoreSdeVePipeline"


@pytest.fixture
def ncsnpp_objective():
    config = TrainingConfig(**TINY_NCSNPP).resolve()
    data = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # one image: an exact score
    objective = build_objective(config, data)
    torch.manual_seed(0)
    return config, objective, objective.build_network(config, data), data


def test_training_evaluates_the_network_as_the_samplers_call_it(ncsnpp_objective):
    """Bug caught: training fed the network another timestep (log sigma, a ladder index) or another data range than
    ScoreSdeVePipeline's unet(x in [0, 1], sigma), so the saved network would not return the score it was fitted to."""
    config, objective, unet, data = ncsnpp_objective
    assert isinstance(unet, UNet2DModel) and model_data_range(config) == (0.0, 1.0)
    generator = torch.Generator().manual_seed(1)
    clean = data.expand(4, -1, -1, -1)
    sigma = objective.sample_levels(4, generator, "cpu")
    assert sigma.is_floating_point() and (sigma >= 0.05).all() and (sigma <= 2.0).all()
    noise = torch.randn(clean.shape, generator=generator)
    with torch.no_grad():
        loss, _ = objective.losses(unet, clean, noise, sigma, 0)
        score = unet(clean + sigma[:, None, None, None] * noise, sigma).sample  # as the pipelines call it
    torch.testing.assert_close(loss, dsm_loss(score, noise, sigma), rtol=1e-6, atol=0)


def test_the_trained_output_is_the_score_of_the_perturbed_data(ncsnpp_objective):
    """Bug caught: a network that returns sigma times the score, or the score at log sigma. Trained on one image c,
    DSM's minimiser is the exact score -(x - c) / sigma^2, which unet(x, sigma) must approach at every sigma."""
    config, objective, unet, data = ncsnpp_objective
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(unet.parameters(), lr=5e-3)

    def relative_error(sigma):
        z = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(2))
        x = data + sigma * z
        with torch.no_grad():
            score = unet(x, torch.full((32,), sigma)).sample
        return float((score + z / sigma).norm() / (z / sigma).norm())

    before = [relative_error(sigma) for sigma in (0.1, 0.5, 1.5)]
    for step in range(60):
        sigma = objective.sample_levels(8, generator, "cpu")
        noise = torch.randn(8, 3, 8, 8, generator=generator)
        loss, _ = objective.losses(unet, data.expand(8, -1, -1, -1), noise, sigma, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = [relative_error(sigma) for sigma in (0.1, 0.5, 1.5)]
    assert min(before) > 0.9 and max(after) < 0.6, (before, after)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--channels", "1"], "take 3 channels, not --channels 1"),
        (["--objective", "epsilon"], "--model_type ncsnpp is a score network"),
        (["--sampler", "stochastic_heun"], "--sampler stochastic_heun cannot be saved with --model_type ncsnpp"),
        (["--no-final_denoise"], "--no-final_denoise cannot be saved with --model_type ncsnpp"),
        (["--recipe", "ncsnv2"], "not of --model_type ncsnpp"),
    ],
)
def test_combinations_a_score_sde_ve_folder_cannot_hold_are_refused_before_any_work(argv, message, capsys, tmp_path):
    output_dir = tmp_path / "never-written"
    with pytest.raises(SystemExit) as exit_info:
        train_ncsn.parse_args(["--model_type", "ncsnpp", "--output_dir", str(output_dir), *argv])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not output_dir.exists()


def test_ncsnpp_defaults_to_rgb_digits_continuous_sigma_and_score_sde_sampling():
    """The digits default to 1 channel; NCSN++ repeats them over 3 and samples score SDE's continuous range."""
    for objective in ("dsm", "ssm"):
        config = train_ncsn.parse_args(["--model_type", "ncsnpp", "--objective", objective])
        assert (config.channels, config.sigma_sampling, config.sampler) == (3, "log_uniform", "predictor_corrector")
    assert train_ncsn.parse_args([]).channels == 1
