"""NCSNPipeline samples a DDPM epsilon UNet2DModel with diffusers' own DDPM-family schedulers in their standard loop,
the images DDPMPipeline and DDIMPipeline give."""

import json

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
)

from ncsn_diffusers import NCSNPipeline, NoiseConditionalClassifier
from tests.tiny_models import tiny_ddpm_unet


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    # a reloaded U-Net: a freshly built one and its reloaded copy differ in the 7th digit (diffusers)
    folder = tmp_path_factory.mktemp("unet")
    tiny_ddpm_unet().save_pretrained(folder)
    return UNet2DModel.from_pretrained(folder)


def public_config(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


def ncsn_images(unet, scheduler, steps, seed=0, **kwargs):
    pipe = NCSNPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=2, generator=generator, num_inference_steps=steps, output_type="np", **kwargs).images


@pytest.mark.parametrize(
    "pipeline_class, scheduler_class", [(DDPMPipeline, DDPMScheduler), (DDIMPipeline, DDIMScheduler)]
)
def test_the_diffusers_loop_gives_diffusers_own_pipelines_images(unet, pipeline_class, scheduler_class):
    """Catches a loop that is not diffusers' (start, model input, step noise): DDPMPipeline / DDIMPipeline draw the
    same images from the same seed."""
    scheduler = scheduler_class(num_train_timesteps=100)
    reference = pipeline_class(unet=unet, scheduler=scheduler)
    reference.set_progress_bar_config(disable=True)
    expected = reference(
        batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np"
    ).images
    np.testing.assert_array_equal(ncsn_images(unet, scheduler_class(num_train_timesteps=100), 10), expected)


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, EulerDiscreteScheduler])
def test_other_ddpm_family_schedulers_sample(unet, scheduler_class):
    """Euler scales the model input (`scale_model_input`) and starts at init_noise_sigma > 1; DPM-Solver keeps a
    history. Both run as their own pipelines would: finite images, the same from the same seed, and `t` as given."""
    scheduler = scheduler_class.from_config(DDPMScheduler(num_train_timesteps=100).config)
    seen = []
    hook = unet.register_forward_hook(lambda module, args, out: seen.append(float(args[1])))
    try:
        a = ncsn_images(unet, scheduler, 5)
    finally:
        hook.remove()
    assert np.isfinite(a).all() and a.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(ncsn_images(unet, scheduler, 5), a)
    assert seen == [float(t) for t in scheduler.timesteps]


def test_default_number_of_steps_is_the_training_timesteps(unet):
    calls = []
    hook = unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        ncsn_images(unet, DDPMScheduler(num_train_timesteps=30), None)
    finally:
        hook.remove()
    assert len(calls) == 30


def test_save_and_load_round_trip_is_exact(unet, tmp_path):
    pipe = NCSNPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"] and index["unet"] == ["diffusers", "UNet2DModel"]
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    assert public_config(loaded.scheduler) == public_config(pipe.scheduler)
    np.testing.assert_array_equal(
        ncsn_images(loaded.unet, loaded.scheduler, 10), ncsn_images(unet, pipe.scheduler, 10)
    )


def test_score_networks_and_guidance_are_refused(unet):
    from ncsn_diffusers import NCSNUNet2DModel

    with pytest.raises(ValueError, match="DDIMScheduler calls the network at integer DDPM timesteps"):
        NCSNPipeline(NCSNUNet2DModel.from_preset("tiny"), DDIMScheduler())
    fourier = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=8,
        layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
        time_embedding_type="fourier",
    )  # fmt: skip
    with pytest.raises(ValueError, match="is a score network conditioned on sigma"):
        NCSNPipeline(fourier, DDPMScheduler())
    classifier = NoiseConditionalClassifier(
        sample_size=8, block_out_channels=(8, 16), down_block_types=("DownBlock2D",) * 2, num_classes=2
    )
    pipe = NCSNPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10), classifier=classifier)
    with pytest.raises(ValueError, match="DDPMScheduler steps a DDPM epsilon model"):
        pipe(num_inference_steps=2, class_labels=0)


def test_the_saved_default_number_of_steps_round_trips(unet, tmp_path):
    """Catches `default_num_inference_steps` lost by save_pretrained / from_pretrained or not used by a plain call."""
    pipe = NCSNPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100), default_num_inference_steps=7)
    pipe.save_pretrained(tmp_path)
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    calls = []
    hook = loaded.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        loaded.set_progress_bar_config(disable=True)
        loaded(batch_size=1, output_type="np")
        assert len(calls) == 7
        loaded.scheduler = DDIMScheduler(num_train_timesteps=100)  # a swapped-in sampler runs at its own default
        loaded(batch_size=1, output_type="np")
        assert len(calls) == 107
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="default_num_inference_steps=0 must be a positive integer"):
        NCSNPipeline(unet=unet, scheduler=DDIMScheduler(), default_num_inference_steps=0)


def test_a_folder_of_earlier_releases_keeps_its_saved_number_of_steps(unet, tmp_path):
    """Catches folders saved before the count moved into the scheduler's config (`model_index.json` holding
    `default_num_inference_steps`) losing their count on load."""
    NCSNPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "default_num_inference_steps": 7}))
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    calls = []
    loaded.unet.register_forward_hook(lambda *args: calls.append(1))
    loaded.set_progress_bar_config(disable=True)
    loaded(batch_size=1, output_type="np")
    assert len(calls) == 7


def test_img2img_and_inpainting_name_the_conversion_for_a_ddim_folder(unet):
    """Catches NCSNImg2ImgPipeline / NCSNInpaintPipeline failing deep in their chain on what --objective epsilon saves,
    and checks the conversion they name works."""
    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNImg2ImgPipeline, NCSNInpaintPipeline

    image, mask = torch.rand(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    for pipeline_class, args in ((NCSNImg2ImgPipeline, (image,)), (NCSNInpaintPipeline, (image, mask))):
        pipe = pipeline_class(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100))
        pipe.set_progress_bar_config(disable=True)
        with pytest.raises(ValueError, match=f"{pipeline_class.__name__} runs the package's score chains"):
            pipe(*args, num_inference_steps=4)
        pipe.scheduler = AnnealedLangevinScheduler.from_config(pipe.scheduler.config)
        out = pipe(*args, num_inference_steps=4, output_type="np").images
        assert np.isfinite(out).all()
