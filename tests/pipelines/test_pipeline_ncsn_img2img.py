"""NCSNImg2ImgPipeline (SDEdit) on Gaussian data N(mu, s^2 I) with its exact score. From a guide y perturbed to
sigma_0, the reverse SDE returns N(mu + a (y - mu), (1 - a^2) s^2) and the probability-flow ODE returns
N(mu + sqrt(a) (y - mu), (1 - a) s^2), with a = s^2 / (s^2 + sigma_0^2)."""

import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from diffusers import EDMEulerScheduler

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    NCSNImg2ImgPipeline,
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)

MU, S, SIZE = 0.2, 0.1, 4  # data N(0.2, 0.1^2) per pixel of 1x4x4 images in data_range (-1, 1)
VE = dict(sigma_max=8.0, sigma_min=0.01, data_range=(-1.0, 1.0))


def gaussian_pipeline(scheduler):
    model = ImageMixtureScoreModel([[MU] * SIZE**2], [1.0], S, sample_size=SIZE, in_channels=1)
    pipe = NCSNImg2ImgPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    sigmas = []
    model.register_forward_hook(lambda module, args, out: sigmas.append(float(torch.as_tensor(args[1]).flatten()[0])))
    return pipe, sigmas


def guide(value, batch=1):
    """A constant image whose pixels are `value` in data units, as an input image in [0, 1]."""
    return torch.full((batch, 1, SIZE, SIZE), (value + 1) / 2)


def edit(pipe, image, strength, calls, seed=0, batch_size=1024, **kwargs):
    out = pipe(
        image,
        strength=strength,
        batch_size=batch_size,
        num_inference_steps=calls,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **kwargs,
    ).images
    return out * 2 - 1  # back to data units


def test_sde_edit_is_the_gaussian_posterior_given_the_perturbed_guide():
    # Ancestral sampling (PC without corrector) is the reverse SDE; its step x + (sigma_i^2 - sigma_{i+1}^2) s
    # multiplies x - mu by (s^2 + sigma_{i+1}^2) / (s^2 + sigma_i^2), so the chain's factor telescopes to a exactly.
    pipe, sigmas = gaussian_pipeline(PredictorCorrectorScheduler(**VE, corrector_steps=0))
    y = -0.6
    x = edit(pipe, guide(y), strength=0.5, calls=200)
    assert len(sigmas) == 100  # half the chain ran
    a = S**2 / (S**2 + sigmas[0] ** 2)
    assert 0.05 < a < 0.5  # sigma_0 in the middle of the ladder: the guide shows through, but not fully
    assert x.mean().item() == pytest.approx(MU + a * (y - MU), abs=0.003)
    assert x.var().item() == pytest.approx((1 - a**2) * S**2, rel=0.03)


@pytest.mark.parametrize(
    "scheduler, calls",
    [(StochasticHeunScheduler(**VE, s_churn=0.0), 99), (EDMEulerScheduler(sigma_min=0.01, sigma_max=8.0), 200)],
    ids=["StochasticHeun-ODE", "EDMEuler"],
)
def test_ode_edit_is_the_flow_map_of_the_perturbed_guide(scheduler, calls):
    # The probability-flow ODE carries N(mu, s^2 + sigma_0^2) to N(mu, s^2) by x -> mu + sqrt(a) (x - mu)
    pipe, sigmas = gaussian_pipeline(scheduler)
    y = -0.6
    x = edit(pipe, guide(y), strength=0.5, calls=calls)
    a = S**2 / (S**2 + sigmas[0] ** 2)
    assert 0.02 < a < 0.5  # rho = 7 ladders spend half their calls below sigma ~ 0.6
    assert x.mean().item() == pytest.approx(MU + a**0.5 * (y - MU), abs=0.004)
    assert x.var().item() == pytest.approx((1 - a) * S**2, rel=0.04)


@pytest.mark.parametrize(
    "scheduler",
    [
        AnnealedLangevinScheduler(**VE, epsilon=4e-5),
        PredictorCorrectorScheduler(**VE),
        ConsistentAnnealedSamplingScheduler(**VE),
        StochasticHeunScheduler(**VE),
        EDMEulerScheduler(sigma_min=0.01, sigma_max=8.0),
    ],
    ids=lambda s: type(s).__name__,
)
def test_strength_0_returns_the_image_bit_for_bit(scheduler):
    pipe, sigmas = gaussian_pipeline(scheduler)
    image = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    out = pipe(image, strength=0.0, num_inference_steps=20, output_type="pt").images
    assert torch.equal(out, image) and sigmas == []


def test_strength_1_is_independent_of_the_guide_up_to_the_sigma_max_leak():
    # From y + sigma_max z with the same z and chain noise, two guides' edits differ by a_max (y1 - y2) exactly,
    # a_max = s^2 / (s^2 + sigma_max^2) = 1.6e-4
    pipe, sigmas = gaussian_pipeline(PredictorCorrectorScheduler(**VE, corrector_steps=0))
    low, high = edit(pipe, guide(-0.9), 1.0, 50, batch_size=256), edit(pipe, guide(0.9), 1.0, 50, batch_size=256)
    assert sigmas[0] == pytest.approx(8.0) and len(sigmas) == 100  # both runs: the whole chain
    a_max = S**2 / (S**2 + 8.0**2)
    assert (high - low).mean().item() == pytest.approx(a_max * 1.8, rel=0.02)
    assert (high - low).abs().max().item() < 1e-3


def test_strength_takes_the_last_fraction_of_the_chain_from_a_level_start():
    # 10 levels of 4 Langevin steps: strength 0.5 runs the last 5 levels (20 calls); 0.45 -> 18 calls, moved back to
    # the start of its level (20 calls)
    pipe, sigmas = gaussian_pipeline(AnnealedLangevinScheduler(**VE, num_noise_levels=10, epsilon=4e-5))
    for strength, expected in ((0.5, 20), (0.45, 20), (0.01, 4), (1.0, 40)):
        sigmas.clear()
        edit(pipe, guide(0.0), strength, calls=40, batch_size=2)
        assert len(sigmas) == expected
        assert sigmas[:4] == pytest.approx([sigmas[0]] * 4)  # one whole level first


def test_mask_keeps_the_unmasked_pixels_and_resets_them_every_step_to_the_noised_guide():
    pipe, _ = gaussian_pipeline(PredictorCorrectorScheduler(**VE, corrector_steps=1))
    seen = []
    pipe.unet.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), float(args[1]))))
    image = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0  # edit the left half
    out = pipe(image, 0.6, mask, batch_size=3, num_inference_steps=30, output_type="pt").images
    kept = (mask == 0).expand(6, 1, SIZE, SIZE)
    reference = image.repeat_interleave(3, dim=0)
    assert torch.equal(out[kept], reference[kept])
    assert not torch.equal(out[~kept], reference[~kept])
    # before every model call the kept pixels are y + sigma_j z, with the start's z
    y = 2 * reference - 1
    z = (seen[0][0] - y)[kept] / seen[0][1]
    for sample, sigma in seen:
        torch.testing.assert_close(sample[kept], y[kept] + sigma * z, atol=1e-5, rtol=0)


def test_from_pipe_of_an_ncsn_pipeline_shares_its_components():
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=SIZE, block_out_channels=(8, 16))
    pipe = NCSNPipeline(unet, PredictorCorrectorScheduler(**VE))
    img2img = NCSNImg2ImgPipeline.from_pipe(pipe)
    assert img2img.unet is pipe.unet and img2img.classifier is None
    img2img.set_progress_bar_config(disable=True)
    assert edit(img2img, guide(0.0), 0.3, 20, batch_size=2).shape == (2, 1, SIZE, SIZE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 1.5}, r"strength=1.5 must lie in \[0, 1\]"),
        ({"image": torch.full((1, 1, SIZE, SIZE), 2.0)}, r"image has values in \[2, 2\]; it must lie in \[0, 1\]"),
        ({"image": torch.zeros(1, 1, 8, 8)}, r"image is \(8, 8\) pixels"),
        ({"mask_image": torch.zeros(1, 8, 8)}, "mask_image of shape"),
        ({"generator": [torch.Generator()] * 3}, "3 generators but 1 image"),
    ],
)
def test_bad_inputs_name_the_fix(kwargs, message):
    pipe, _ = gaussian_pipeline(PredictorCorrectorScheduler(**VE))
    kwargs = {"image": guide(0.0), "strength": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=10, **kwargs)


def test_a_tensor_without_its_channel_axis_is_refused_by_name():
    """Bug caught: a 2-D (H, W) tensor raised a bare `IndexError: tuple index out of range`."""
    pipe = NCSNImg2ImgPipeline(
        NCSNUNet2DModel.from_preset("tiny", sample_size=8), AnnealedLangevinScheduler(num_noise_levels=2)
    )
    with pytest.raises(ValueError, match=r"image has shape \(8, 8\); pass .*add the channel axis"):
        pipe(torch.rand(8, 8), strength=0.5)
