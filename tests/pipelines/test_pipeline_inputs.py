"""Bad pipeline inputs fail at once with a message naming the argument and the fix."""

import numpy as np
import PIL.Image
import pytest
import torch

from ncsn_diffusers import NCSNInpaintPipeline, NCSNPipeline, NCSNUNet2DModel, PredictorCorrectorScheduler

VE = dict(sigma_max=2.0, sigma_min=0.05, data_range=(-1.0, 1.0))


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), PredictorCorrectorScheduler(**VE))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(generator=0), r"generator=0 must be a torch.Generator.*manual_seed\(seed\)"),
        (dict(generator=[0, 1]), r"generator=\[0, 1\] must be a torch.Generator"),
        (dict(callback_on_step_end="print"), "callback_on_step_end='print' is not callable"),
    ],
)
def test_bad_arguments_name_the_fix(pipe, kwargs, message):
    """Bug caught: each failed deep inside randn_tensor or the loop."""
    with pytest.raises(ValueError, match=message):
        pipe(batch_size=2, num_inference_steps=2, **kwargs)


@pytest.mark.parametrize("size", [0, (8, 0), -1])
def test_an_empty_sample_size_names_the_fix(pipe, size):
    pipe.unet.register_to_config(sample_size=size)
    with pytest.raises(ValueError, match=r"sample_size=.* is no image size.*register_to_config\(sample_size=32\)"):
        pipe(num_inference_steps=2)


def test_a_callback_cannot_change_the_samples_shape(pipe):
    """Row 12: a callback returning another shape changed the output's shape."""

    def crop(pipe, i, t, callback_kwargs):
        return {"sample": callback_kwargs["sample"][:, :, :4]}

    with pytest.raises(ValueError, match=r"returned a 'sample' of shape \(1, 1, 4, 8\) at step 0; the chain's is"):
        pipe(num_inference_steps=2, callback_on_step_end=crop)


def test_an_empty_image_list_names_the_fix(pipe):
    inpaint = NCSNInpaintPipeline.from_pipe(pipe)
    with pytest.raises(ValueError, match=r"image=\[\] holds no image"):
        inpaint([], torch.zeros(1, 8, 8), num_inference_steps=2)


@pytest.mark.parametrize(
    "mode, white", [("L", 255), ("I;16", 65535), ("I", 65535), ("F", 1.0)], ids=["8-bit", "16-bit", "32-bit", "float"]
)
def test_inpainting_keeps_the_known_pixels_of_any_bit_depth(pipe, mode, white):
    """Row 10: 16-bit, 32-bit and float PIL references came back white or black (converted to "L" by clipping)."""
    gray = np.linspace(0.1, 0.9, 64, dtype=np.float32).reshape(8, 8)
    values = gray * white if mode == "F" else np.round(gray * white)
    dtype = {"L": np.uint8, "I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = PIL.Image.fromarray(values.astype(dtype), mode=mode if mode != "I;16" else None)
    if mode == "I;16":
        assert image.mode == "I;16"
    mask = torch.zeros(1, 8, 8)
    mask[:, 4:] = 1
    inpaint = NCSNInpaintPipeline.from_pipe(pipe)
    out = inpaint(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    known = out.images[0, 0, :4]
    torch.testing.assert_close(
        known, torch.from_numpy(values[:4] / white).float(), atol=1 / 255 if mode == "L" else 1e-6, rtol=0
    )
