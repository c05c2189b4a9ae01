"""The rendered model card: Hub metadata, config values, results, both model kinds, and code snippets that run."""

import json
import math
import re

import pytest
import torch
from huggingface_hub import ModelCard

from ncsn_diffusers import AnnealedLangevinScheduler
from ncsn_diffusers.hub.pipeline_card import TAGS, render_model_card, write_model_card
from ncsn_diffusers.models.unet_ncsn import NCSNUNet2DModel
from ncsn_diffusers.schedulers.noise_ladders import geometric_sigmas

NCSN_UNET = {"_class_name": "NCSNUNet2DModel", "sample_size": 16, "in_channels": 1, "block_out_channels": [16, 32]}
DDPM_UNET = {"_class_name": "UNet2DModel", "sample_size": [8, 12], "in_channels": 3, "out_channels": 3}
VE_SCHEDULER = {
    "_class_name": "AnnealedLangevinScheduler",
    "sigma_max": 1.0,
    "sigma_min": 0.01,
    "num_noise_levels": 10,
    "steps_per_level": 100,
    "epsilon": 2e-05,
    "langevin_convention": "official",
    "final_denoise": False,
    "prediction_type": "score",
    "noise_space": "ve",
    "data_range": None,
}
VP_SCHEDULER = {**VE_SCHEDULER, "prediction_type": "epsilon", "noise_space": "vp", "num_train_timesteps": 20}


def _python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, re.DOTALL)


def _langevin_function():
    """The card's stand-alone sampler, compiled from the card's own text."""
    card = render_model_card(NCSN_UNET, VE_SCHEDULER, repo_id="user/ncsn")
    (code,) = [block for block in _python_blocks(card) if "def annealed_langevin" in block]
    namespace = {}
    exec(compile(code, "model_card_snippet", "exec"), namespace)
    return namespace["annealed_langevin"]


@pytest.mark.parametrize(("unet_config", "scheduler_config"), [(NCSN_UNET, VE_SCHEDULER), (DDPM_UNET, VP_SCHEDULER)])
def test_metadata_parses_with_hub_fields(tmp_path, unet_config, scheduler_config):
    path = write_model_card(tmp_path / "saved", unet_config=unet_config, scheduler_config=scheduler_config,
                            datasets=["sklearn-digits"], license="mit")  # fmt: skip
    assert path == tmp_path / "saved" / "README.md"
    data = ModelCard.load(path).data
    assert data.library_name == "diffusers"
    assert data.pipeline_tag == "unconditional-image-generation"
    assert set(TAGS) <= set(data.tags)
    assert {"ncsn", "score-based", "annealed-langevin", "diffusers:NCSNPipeline", "pytorch"} <= set(data.tags)
    assert data.license == "mit" and data.datasets == ["sklearn-digits"]


def test_defaults_license_and_takes_dataset_from_training():
    card = ModelCard(render_model_card(NCSN_UNET, VE_SCHEDULER, training={"dataset_name": "user/faces"}))
    assert card.data.license == "apache-2.0" and card.data.datasets == ["user/faces"]
    assert "[user/faces](https://huggingface.co/datasets/user/faces)" in card.text
    assert ModelCard(render_model_card(NCSN_UNET, VE_SCHEDULER)).data.datasets is None


def test_config_and_training_values_fill_the_tables():
    scheduler = {**VE_SCHEDULER, "sigma_max": 50.0, "sigma_min": 0.5, "num_noise_levels": 7, "epsilon": 3.3e-06}
    training = {"max_train_steps": 1234, "learning_rate": 0.0007, "dataset_name": "sklearn-digits"}
    card = render_model_card(NCSN_UNET, scheduler, repo_id="user/ncsn", training=training)
    for row in [
        "| `sigma_max` | σ_1 | 50 |",
        "| `sigma_min` | σ_L | 0.5 |",
        "| `num_noise_levels` | L | 7 |",
        "| `steps_per_level` | T | 100 |",
        "| `epsilon` | ε | 3.3e-06 |",
        "| `langevin_convention` |  | `official` |",
        "| `data_range` |  | — (so [0, 1]) |",
        # alpha_1 = epsilon * sigma_1**2 / sigma_L**2 = 3.3e-6 * 1e4, ratio = 100 ** (1 / 6)
        "| derived | α_1 | 0.033 |",
        f"| derived | σ_{{i-1}} / σ_i | {100 ** (1 / 6):.6g} |",
        "| `max_train_steps` | 1234 |",
        "| `learning_rate` | 0.0007 |",
        "| `block_out_channels` | (16, 32) |",
    ]:
        assert row in card, row
    assert "(4, 1, 16, 16)" in card  # the sampler's shape from sample_size and in_channels
    assert "700 network evaluations" in card  # L * T
    assert "$" not in card and "<!--" not in card  # every placeholder filled, template comments gone


def test_results_table_reports_values_and_not_measured():
    card = render_model_card(NCSN_UNET, VE_SCHEDULER, results={"FID (1k samples)": 23.456789, "IS": None, "note": "x"})
    assert "| FID (1k samples) | 23.4568 |" in card
    assert "| IS | not measured |" in card and "| note | x |" in card
    assert "| — | not measured |" in render_model_card(NCSN_UNET, VE_SCHEDULER)


def test_model_kinds_get_their_own_instructions():
    score_card = render_model_card(NCSN_UNET, VE_SCHEDULER, repo_id="user/ncsn")
    epsilon_card = render_model_card(DDPM_UNET, VP_SCHEDULER, repo_id="user/ddpm")
    assert 'NCSNPipeline.from_pretrained("user/ncsn")' in score_card
    assert 'NCSNPipeline.from_pretrained("user/ddpm")' in epsilon_card
    assert "def annealed_langevin" in score_card and "DDPMScheduler" not in score_card
    assert 'DDPMScheduler.from_pretrained("user/ddpm", subfolder="scheduler")' in epsilon_card
    assert "num_inference_steps=20" in epsilon_card and "def annealed_langevin" not in epsilon_card
    assert "ho2020denoising" in epsilon_card and "ho2020denoising" not in score_card
    assert "song2019generative" in score_card and "song2019generative" in epsilon_card
    assert "8×12 RGB" in epsilon_card and "16×16 single-channel" in score_card
    for card in (score_card, epsilon_card):
        for block in _python_blocks(card):
            compile(block, "model_card_snippet", "exec")  # every snippet is valid Python


def test_rejects_unknown_or_missing_class_name():
    with pytest.raises(ValueError, match="_class_name"):
        render_model_card({"sample_size": 8}, VE_SCHEDULER)
    with pytest.raises(ValueError, match="_class_name"):
        render_model_card({**NCSN_UNET, "_class_name": "UNet2DConditionModel"}, VE_SCHEDULER)


@pytest.mark.parametrize(("convention", "c"), [("official", 1.0), ("paper", 0.5)])
def test_langevin_snippet_moves_and_spreads_by_hand_computed_amounts(convention, c):
    # With a constant score s = 1 the chain is x_0 + c * T * sum_i alpha_i + sum of independent noise, so
    # E[x] = center + c T sum alpha_i and Var[x] = sigma_1**2 + 2 c T sum alpha_i, alpha_i = eps sigma_i**2 / sigma_L**2.
    sigma_max, sigma_min, L, T, eps = 1.0, 0.1, 3, 10, 1e-3
    cfg = {**VE_SCHEDULER, "sigma_max": sigma_max, "sigma_min": sigma_min, "num_noise_levels": L,
           "steps_per_level": T, "epsilon": eps, "langevin_convention": convention, "data_range": [-100.0, 100.0]}  # fmt: skip
    sigmas = [sigma_max * (sigma_min / sigma_max) ** (i / (L - 1)) for i in range(L)]
    sum_alpha = sum(eps * s**2 / sigma_min**2 for s in sigmas)  # 0.1 + 0.01 + 0.001

    x = _langevin_function()(
        lambda x, sigma: torch.ones_like(x), cfg, (4000, 1, 2, 2), torch.Generator().manual_seed(0)
    )

    mean, var = x.mean().item(), x.var().item()
    expected_var = sigma_max**2 + 2 * c * T * sum_alpha
    assert abs(mean - c * T * sum_alpha) < 5 * math.sqrt(expected_var / x.numel())
    assert abs(var - expected_var) < 5 * expected_var * math.sqrt(2 / x.numel())


@pytest.mark.parametrize("final_denoise", [False, True])
@pytest.mark.parametrize("convention", ["official", "paper"])
def test_langevin_snippet_reaches_the_exact_stationary_law_of_a_gaussian(convention, final_denoise):
    # Data N(mu, s0**2): the perturbed score is -(x - mu) / v with v = s0**2 + sigma**2. At the last level the chain
    # x' = x - c alpha (x - mu) / v + sqrt(2 c alpha) z is AR(1) with stationary variance 2 c alpha / (1 - (1 - c alpha / v)**2).
    mu, s0, sigma_max, sigma_min, L, T, eps = 0.3, 0.2, 1.0, 0.2, 4, 100, 0.04
    cfg = {**VE_SCHEDULER, "sigma_max": sigma_max, "sigma_min": sigma_min, "num_noise_levels": L, "steps_per_level": T,
           "epsilon": eps, "langevin_convention": convention, "final_denoise": final_denoise,
           "data_range": [-100.0, 100.0]}  # fmt: skip
    calls = []

    def gaussian_score(x, sigma):
        calls.append(float(sigma))
        return -(x - mu) / (s0**2 + sigma**2)

    x = _langevin_function()(gaussian_score, cfg, (40000,), torch.Generator().manual_seed(0))

    c = 1.0 if convention == "official" else 0.5
    v, alpha = s0**2 + sigma_min**2, eps
    var = 2 * c * alpha / (1 - (1 - c * alpha / v) ** 2)
    if final_denoise:  # x + sigma_L**2 * s(x) = mu + (x - mu) (1 - sigma_L**2 / v)
        var *= (1 - sigma_min**2 / v) ** 2
    assert abs(x.mean().item() - mu) < 5 * math.sqrt(var / x.numel())
    assert abs(x.var().item() - var) < 5 * var * math.sqrt(2 / x.numel())

    ladder = geometric_sigmas(sigma_max, sigma_min, L).tolist()
    expected_calls = [s for s in ladder for _ in range(T)] + ([sigma_min] if final_denoise else [])
    assert calls == pytest.approx(expected_calls, rel=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_langevin_snippet_converts_other_predictions_to_the_score(prediction_type):
    cfg = {**VE_SCHEDULER, "num_noise_levels": 3, "steps_per_level": 5, "epsilon": 1e-4}

    def score(x, sigma):
        return -(x - 0.5) / (0.01 + sigma**2)

    def other(x, sigma):
        return -sigma * score(x, sigma) if prediction_type == "epsilon" else x + sigma**2 * score(x, sigma)

    sample = _langevin_function()
    reference = sample(score, cfg, (64,), torch.Generator().manual_seed(0))
    converted = sample(other, {**cfg, "prediction_type": prediction_type}, (64,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(converted, reference, rtol=1e-5, atol=1e-5)


def test_langevin_snippet_single_level_uniform_start():
    # L = 1 is plain Langevin at sigma_min; one tiny step leaves the uniform start on [0, 1] (variance 1/12) almost as is.
    cfg = {**VE_SCHEDULER, "num_noise_levels": 1, "steps_per_level": 1, "sigma_min": 0.1, "epsilon": 1e-6,
           "initial_distribution": "uniform"}  # fmt: skip
    calls = []
    x = _langevin_function()(lambda x, s: calls.append(float(s)) or torch.zeros_like(x), cfg, (20000,), None)
    assert calls == pytest.approx([0.1])
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    assert abs(x.mean().item() - 0.5) < 0.01 and abs(x.var().item() - 1 / 12) < 0.004


def test_langevin_snippet_drives_a_tiny_ncsn_unet():
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny").eval()
    cfg = {**json.loads(AnnealedLangevinScheduler(num_noise_levels=2, steps_per_level=2).to_json_string())}
    x = _langevin_function()(
        lambda x, sigma: unet(x, sigma).sample, cfg, (2, 1, 16, 16), torch.Generator().manual_seed(0)
    )
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


def test_diffusers_only_snippet_samples_an_epsilon_model_without_ncsn_classes(tmp_path):
    # A saved NCSNPipeline with a stock UNet2DModel: model_index.json names the ncsn-diffusers scheduler, which the
    # card's diffusers-only code must not need.
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=8, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)  # fmt: skip
    scheduler = AnnealedLangevinScheduler(noise_space="vp", prediction_type="epsilon", num_train_timesteps=10)
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")
    index = {"_class_name": "NCSNPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["ncsn_diffusers.scheduling_annealed_langevin", "AnnealedLangevinScheduler"]}  # fmt: skip
    (tmp_path / "model_index.json").write_text(json.dumps(index))

    unet_config = json.loads((tmp_path / "unet" / "config.json").read_text())
    card = render_model_card(unet_config, dict(scheduler.config), repo_id=str(tmp_path))
    (code,) = [block for block in _python_blocks(card) if "DDPMPipeline(" in block]
    assert "ncsn_diffusers" not in code
    namespace = {}
    exec(compile(code, "model_card_snippet", "exec"), namespace)

    images = namespace["images"]
    assert len(images) == 4 and images[0].size == (8, 8)
    assert namespace["scheduler"].config.num_train_timesteps == 10
    assert namespace["scheduler"].config.prediction_type == "epsilon"


@pytest.mark.parametrize(
    ("scheduler_config", "calls"),
    [
        (VE_SCHEDULER, 1000),
        ({**VE_SCHEDULER, "final_denoise": True}, 1001),
        ({"_class_name": "PredictorCorrectorScheduler", "num_noise_levels": 30, "corrector_steps": 2}, 90),
        ({"_class_name": "ConsistentAnnealedSamplingScheduler", "num_noise_levels": 30, "final_denoise": True}, 31),
        ({"_class_name": "StochasticHeunScheduler", "num_noise_levels": 18}, 35),
        ({"_class_name": "LogSigmaMultistepScheduler", "num_noise_levels": 10}, 10),  # bug caught: 10 x 100 calls
    ],
)
def test_card_counts_the_calls_of_each_sampler(scheduler_config, calls):
    scheduler_config = {"sigma_max": 2.0, "sigma_min": 0.02, "epsilon": None, **scheduler_config}
    card = render_model_card(NCSN_UNET, scheduler_config, repo_id="user/ncsn")
    assert f"takes {calls} network evaluations" in card


@pytest.mark.parametrize(("unet_config", "scheduler_config"), [(NCSN_UNET, VE_SCHEDULER), (DDPM_UNET, VP_SCHEDULER)])
def test_install_instructions_name_a_command_that_works_today(unet_config, scheduler_config):
    """The package is not on PyPI: `pip install ncsn-diffusers` fails, so neither the card nor the README offers it."""
    from pathlib import Path

    card = render_model_card(unet_config, scheduler_config, repo_id="user/ncsn")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for text in (card, readme):
        assert not re.search(r"pip install (\"|')?ncsn-diffusers", text)
        assert "pypi.org/project/ncsn-diffusers" not in text
    assert "pip install -e ." in card
    assert "pip install torch==2.13.0 -e ." in readme
