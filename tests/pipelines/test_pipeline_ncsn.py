import json

import numpy as np
import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from diffusers import DDPMPipeline, DDPMScheduler, ScoreSdeVeScheduler, UNet2DModel
from huggingface_hub import ModelCard
from PIL import Image
from tiny_models import tiny_ddpm_unet

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel
from ncsn_diffusers.hub import PipelineCard, save_pipeline_with_card


def ve_scheduler(**kwargs):
    return AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0), **kwargs)


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), ve_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, seed=0, **kwargs):
    kwargs = {"num_inference_steps": 12, "output_type": "pt", **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_pipeline_samples_a_gaussian_mixture_of_images():
    # An exact score in place of the U-Net: two 1x2x2 "images" with weights 0.2 / 0.8 and pixel std 0.05.
    templates = [[-0.5, 0.5, 0.5, -0.5], [0.5, -0.5, -0.5, 0.5]]
    model = ImageMixtureScoreModel(templates, [0.2, 0.8], std=0.05, sample_size=2, in_channels=1)
    scheduler = AnnealedLangevinScheduler(
        sigma_max=2.0, sigma_min=0.05, num_noise_levels=10, steps_per_level=100, epsilon=2e-4, data_range=(-1.0, 1.0)
    )
    pipe = NCSNPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2048, generator=torch.Generator().manual_seed(0), output_type="pt").images
    x = (images * 2 - 1).flatten(1)
    nearest = torch.cdist(x, torch.tensor(templates)).argmin(1)
    assert (nearest == 0).float().mean().item() == pytest.approx(0.2, abs=0.03)
    residual = x - torch.tensor(templates)[nearest]
    assert residual.std().item() == pytest.approx((0.05**2 + 0.05**2) ** 0.5, rel=0.15)  # data std and sigma_L
    assert model.calls == 1000


def test_output_types(pipe):
    pt = sample(pipe, batch_size=2)
    np_images = sample(pipe, batch_size=2, output_type="np")
    pil = sample(pipe, batch_size=2, output_type="pil")
    assert pt.shape == (2, 1, 8, 8) and pt.min() >= 0 and pt.max() <= 1
    assert np_images.shape == (2, 8, 8, 1) and np.array_equal(np_images, pt.permute(0, 2, 3, 1).numpy())
    assert isinstance(pil[0], Image.Image) and pil[0].mode == "L" and pil[0].size == (8, 8)
    as_tuple = pipe(
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=12,
        output_type="pt",
        return_dict=False,
    )
    assert torch.equal(as_tuple[0], pt)


def test_output_is_clamped_only_at_the_end(pipe):
    chain = []
    sample(pipe, batch_size=4, callback_on_step_end=lambda p, i, t, kw: chain.append(kw["sample"]) or {})
    # sigma_1 = 2 on data in [-1, 1]: the chain's own values leave [-1, 1]
    assert len(chain) == 12 and chain[0].abs().max() > 1.5


def test_unet_calls_equal_num_inference_steps(pipe):
    calls = count_calls(pipe.unet)
    sample(pipe, num_inference_steps=37)
    assert len(calls) == 37
    calls.clear()
    sample(pipe, num_inference_steps=37, final_denoise=True)
    assert len(calls) == 37


def test_call_arguments_override_the_config_for_one_call(pipe):
    calls = count_calls(pipe.unet)
    sample(pipe, num_inference_steps=None, steps_per_level=2, final_denoise=True)
    assert len(calls) == 2 * 10 + 1 and pipe.scheduler.config.steps_per_level == 100
    a, b = sample(pipe, epsilon=1e-5), sample(pipe)
    assert not torch.equal(a, b) and pipe.scheduler.config.epsilon == 8e-5


def test_same_generator_same_images_and_generator_lists(pipe):
    a, b, c = sample(pipe, batch_size=3), sample(pipe, batch_size=3), sample(pipe, batch_size=3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
    both = pipe(batch_size=2, generator=generators, num_inference_steps=12, output_type="pt").images
    alone = sample(pipe, seed=6, batch_size=1)
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)


def test_epsilon_ddpm_unet_in_vp_coordinates():
    torch.manual_seed(0)
    scheduler = AnnealedLangevinScheduler.from_config(DDPMScheduler().config)
    pipe = NCSNPipeline(tiny_ddpm_unet(), scheduler)
    pipe.set_progress_bar_config(disable=True)
    timesteps = []
    pipe.unet.register_forward_hook(lambda module, args, out: timesteps.append(int(args[1])))
    images = sample(pipe, num_inference_steps=20, batch_size=2)
    assert len(timesteps) == 20 and timesteps[0] == 999 and timesteps[-1] == 0  # integer DDPM timesteps
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_save_load_round_trip_gives_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin"))
    index = json.loads((tmp_path / "model_index.json").read_text())
    # the package name, not a module path: saved folders do not depend on the layout (catches a lost registration)
    assert index["unet"] == ["ncsn_diffusers", "NCSNUNet2DModel"]
    assert index["scheduler"] == ["ncsn_diffusers", "AnnealedLangevinScheduler"]
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(sample(loaded, batch_size=2), sample(pipe, batch_size=2))
    # pipelines saved before the schedulers/ subpackage name the old module path; they still load
    index["scheduler"][0] = "ncsn_diffusers.scheduling_annealed_langevin"
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    old = NCSNPipeline.from_pretrained(tmp_path)
    old.set_progress_bar_config(disable=True)
    assert torch.equal(sample(old, batch_size=2), sample(pipe, batch_size=2))


def test_save_pretrained_writes_the_folder_and_no_card(pipe, tmp_path):
    """`pipe.save_pretrained` is diffusers' (less the `model_index.json` entries that hold nothing): the folder and
    no card; `save_pipeline_with_card` writes the card. Catches a card written where the docs promise none."""
    pipe.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_index.json", "scheduler", "unet"]


def test_save_with_card_writes_a_model_card_with_hub_metadata(pipe, tmp_path):
    card = PipelineCard(results={"frechet_distance": 1.25}, datasets=["sklearn-digits"])
    save_pipeline_with_card(pipe, tmp_path, card)
    assert torch.equal(NCSNPipeline.from_pretrained(tmp_path).unet.conv_in.weight, pipe.unet.conv_in.weight)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert {"ncsn", "score-based", "diffusers:NCSNPipeline"} <= set(card.data.tags)
    assert "1.25" in card.text and "from ncsn_diffusers import NCSNPipeline" in card.text and "Song" in card.text


def test_ddpm_pipeline_with_the_swapped_scheduler_round_trips(tmp_path):
    torch.manual_seed(0)
    # A freshly built UNet2DModel and its reloaded copy differ in the 7th digit (diffusers, not the scheduler), so
    # the pipeline starts from a loaded U-Net.
    tiny_ddpm_unet().save_pretrained(tmp_path / "source_unet")
    pipe = DDPMPipeline(unet=UNet2DModel.from_pretrained(tmp_path / "source_unet"), scheduler=DDPMScheduler())
    pipe.scheduler = AnnealedLangevinScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, AnnealedLangevinScheduler) and loaded.scheduler.config.noise_space == "vp"
    a = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np").images
    b = loaded(generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np").images
    assert np.array_equal(a, b)


def test_bfloat16_unet(pipe):
    pipe.to(dtype=torch.bfloat16)
    images = sample(pipe, batch_size=2)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


# Bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output_type": "jpeg"}, "output_type='jpeg' is not supported"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
        ({"batch_size": 3, "generator": [torch.Generator()] * 2}, "list of 2 generators but batch_size=3"),
    ],
)
def test_bad_call_arguments(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=2, **kwargs)


def test_mismatched_unet_and_scheduler():
    vp = AnnealedLangevinScheduler.from_config(DDPMScheduler().config)
    with pytest.raises(ValueError, match="NCSNUNet2DModel returns the score"):
        NCSNPipeline(NCSNUNet2DModel.from_preset("tiny"), vp)
    with pytest.raises(ValueError, match="takes integer DDPM timesteps"):
        NCSNPipeline(tiny_ddpm_unet(), ve_scheduler(prediction_type="epsilon"))
    with pytest.raises(ValueError, match="needs one of AnnealedLangevinScheduler, PredictorCorrectorScheduler"):
        NCSNPipeline(tiny_ddpm_unet(), ScoreSdeVeScheduler())
    with pytest.raises(ValueError, match="DDPMScheduler calls the network at integer DDPM timesteps"):
        NCSNPipeline(NCSNUNet2DModel.from_preset("tiny"), DDPMScheduler())


def test_folders_that_are_not_ncsn_pipelines(pipe, tmp_path):
    with pytest.raises(ValueError, match="model_index.json is missing"):
        NCSNPipeline.from_pretrained(tmp_path)
    pipe.unet.save_pretrained(tmp_path / "only_unet")
    with pytest.raises(ValueError, match="model_index.json is missing"):
        NCSNPipeline.from_pretrained(tmp_path / "only_unet")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model_index.json").write_text(
        json.dumps({"_class_name": "NCSNPipeline", "unet": ["ncsn_diffusers", "NCSNUNet2DModel"]})
    )
    (tmp_path / "partial" / "unet").mkdir()
    with pytest.raises(ValueError, match="it lacks scheduler"):
        NCSNPipeline.from_pretrained(tmp_path / "partial")
