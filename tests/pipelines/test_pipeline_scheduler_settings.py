"""Per-call scheduler settings reach any scheduler through one mechanism (the keywords of its `set_timesteps`), and
`latents=` starts any sampler from given noise."""

import pytest
import torch
from diffusers import EDMEulerScheduler
from diffusers.utils.torch_utils import randn_tensor

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    NCSNInpaintPipeline,
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)

VE = dict(sigma_max=2.0, sigma_min=0.05, data_range=(-1.0, 1.0))


def pipeline(scheduler, cls=NCSNPipeline):
    torch.manual_seed(0)
    pipe = cls(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(pipe, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 6)
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(seed), output_type="pt", **kwargs).images


@pytest.mark.parametrize(
    "cls, setting",
    [
        (StochasticHeunScheduler, dict(s_churn=0.0)),  # a TypeError before: the pipeline listed no s_churn
        (StochasticHeunScheduler, dict(s_noise=1.0)),
        (PredictorCorrectorScheduler, dict(snr=0.3, corrector_steps=2)),
        (AnnealedLangevinScheduler, dict(epsilon=1e-4, final_denoise=True)),
    ],
)
def test_a_per_call_setting_equals_the_configured_one(cls, setting):
    """Catches a setting that is dropped, or that sticks to the scheduler after the call."""
    per_call = pipeline(cls(**VE))
    configured = pipeline(cls(**VE, **setting))
    assert torch.equal(images(per_call, **setting), images(configured))
    assert not torch.equal(images(per_call), images(configured))  # the next call is back to the config


def test_an_unknown_setting_names_it_and_the_accepted_ones():
    pipe = pipeline(StochasticHeunScheduler(**VE))
    with pytest.raises(
        ValueError, match=r"StochasticHeunScheduler takes no per-call snr; it accepts \['s_churn', 's_noise'\]"
    ):
        images(pipe, snr=0.1)
    with pytest.raises(ValueError, match="s_churn=-1.0 must be a finite number >= 0"):  # the scheduler's own check
        images(pipe, s_churn=-1.0)


def test_the_inpainting_pipeline_takes_the_same_settings():
    pipe = pipeline(StochasticHeunScheduler(**VE), NCSNInpaintPipeline)
    image, mask = torch.full((1, 1, 8, 8), 0.5), torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    run = dict(num_inference_steps=6, output_type="pt")
    a = pipe(image, mask, generator=torch.Generator().manual_seed(0), s_churn=0.0, **run).images
    b = pipeline(StochasticHeunScheduler(**VE, s_churn=0.0), NCSNInpaintPipeline)(
        image, mask, generator=torch.Generator().manual_seed(0), **run
    ).images
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "scheduler",
    [
        AnnealedLangevinScheduler(**VE),
        PredictorCorrectorScheduler(**VE),
        StochasticHeunScheduler(**VE),
        EDMEulerScheduler(sigma_min=0.05, sigma_max=2.0),
    ],
    ids=lambda s: type(s).__name__,
)
def test_latents_are_the_draw_the_generator_would_make(scheduler):
    """Catches latents that are ignored, or scaled otherwise than the sampler's own start (sigma_max z + centre)."""
    pipe = pipeline(scheduler)
    generator = torch.Generator().manual_seed(0)
    latents = randn_tensor((2, 1, 8, 8), generator=generator)
    given = pipe(batch_size=2, latents=latents, generator=generator, num_inference_steps=6, output_type="pt").images
    assert torch.equal(given, images(pipe))
    assert not torch.equal(given, images(pipe, latents=-latents))


def test_latents_of_another_shape_name_the_expected_one():
    pipe = pipeline(PredictorCorrectorScheduler(**VE))
    with pytest.raises(ValueError, match=r"latents has shape \(1, 1, 8, 8\) but .* give \(2, 1, 8, 8\)"):
        images(pipe, latents=torch.zeros(1, 1, 8, 8))
