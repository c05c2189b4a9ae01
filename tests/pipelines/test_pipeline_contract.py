"""The contract every NCSN pipeline runs: output types, return_dict, callbacks and save/load."""

import numpy as np
import PIL.Image
import pytest
import torch

from ncsn_diffusers import (
    NCSNImg2ImgPipeline,
    NCSNInpaintPipeline,
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
)

VE = dict(sigma_max=2.0, sigma_min=0.05, data_range=(-1.0, 1.0))


def build(cls):
    torch.manual_seed(0)
    pipe = cls(NCSNUNet2DModel.from_preset("tiny", sample_size=8), PredictorCorrectorScheduler(**VE))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, **kwargs):
    """Two images from any pipeline, from seed 0 in 4 calls (the whole chain)."""
    kwargs = {"num_inference_steps": 4, "generator": torch.Generator().manual_seed(0), **kwargs}
    if isinstance(pipe, NCSNInpaintPipeline):
        mask = torch.zeros(1, 8, 8)
        mask[:, 4:] = 1
        return pipe(torch.full((1, 8, 8), 0.5), mask, batch_size=2, **kwargs)
    if isinstance(pipe, NCSNImg2ImgPipeline):
        return pipe(torch.full((1, 1, 8, 8), 0.5), strength=1.0, batch_size=2, **kwargs)
    return pipe(batch_size=2, **kwargs)


@pytest.fixture(params=[NCSNPipeline, NCSNInpaintPipeline, NCSNImg2ImgPipeline], ids=lambda cls: cls.__name__)
def pipe(request):
    return build(request.param)


def test_output_types_hold_the_same_images(pipe):
    pt = call(pipe, output_type="pt").images
    np_images = call(pipe, output_type="np").images
    pil = call(pipe, output_type="pil").images
    assert pt.shape == (2, 1, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    assert isinstance(np_images, np.ndarray) and np_images.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(np_images, pt.permute(0, 2, 3, 1).numpy())
    assert all(isinstance(image, PIL.Image.Image) and image.size == (8, 8) for image in pil)


def test_return_dict_false_is_the_tuple_of_the_output(pipe):
    (images,) = call(pipe, output_type="pt", return_dict=False)
    assert torch.equal(images, call(pipe, output_type="pt").images)


def test_the_callback_sees_every_step_and_may_replace_the_sample(pipe):
    """Catches a callback that is skipped, sees a stale sample, or whose replacement is dropped."""
    seen = []

    def record(pipe, i, t, callback_kwargs):
        seen.append((i, float(t), callback_kwargs["sample"].shape))
        return {}

    plain = call(pipe, output_type="pt", callback_on_step_end=record).images
    assert [i for i, _, _ in seen] == [0, 1, 2, 3] and [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist()

    def zero_at_the_end(pipe, i, t, callback_kwargs):
        return {"sample": torch.zeros_like(callback_kwargs["sample"])} if i == 3 else {}

    replaced = call(pipe, output_type="pt", callback_on_step_end=zero_at_the_end).images
    generated = replaced[..., 4:, :]  # the half the inpainting pipeline generates; all of NCSNPipeline's
    assert torch.equal(generated, torch.full_like(generated, 0.5)) and not torch.equal(plain, replaced)


def test_save_load_round_trip_gives_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = type(pipe).from_pretrained(tmp_path)
    assert type(loaded) is type(pipe)
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(call(loaded, output_type="pt").images, call(pipe, output_type="pt").images)
