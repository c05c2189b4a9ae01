import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from analytic_models import ImageMixtureEpsilonModel, ImageMixtureScoreModel
from diffusers import DDPMScheduler
from PIL import Image
from tiny_models import tiny_ddpm_unet

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    NCSNInpaintPipeline,
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)

# Three 1x2x2 "images" (rows: top-left, top-right, bottom-left, bottom-right) in [-1, 1]. A and A2 share the top
# row and differ below; B differs everywhere. Knowing A's top row, the bottom row is A's or A2's in the ratio of
# their weights, and never B's.
TEMPLATES = torch.tensor([[0.5, -0.5, 0.5, 0.5], [0.5, -0.5, -0.5, -0.5], [-0.5, 0.5, 0.5, -0.5]])
WEIGHTS = [0.3, 0.1, 0.6]
STD = 0.05
BOTTOM_ROW = torch.tensor([[0.0, 0.0], [1.0, 1.0]])[None]  # (1, 2, 2): white = generate


def posterior_given_top_row(top_row: torch.Tensor) -> torch.Tensor:
    """p(k | x_top) = w_k N(x_top; mu_k,top, STD^2 I) / sum_j ..., the mixture's exact posterior over templates."""
    log_like = -(top_row - TEMPLATES[:, :2]).pow(2).sum(1) / (2 * STD**2)
    return torch.softmax(torch.tensor(WEIGHTS).log() + log_like, dim=0)


def nearest_template(images: torch.Tensor) -> torch.Tensor:
    """Index of the template closest to each (N, 1, 2, 2) image in [0, 1]."""
    return torch.cdist((images * 2 - 1).flatten(1), TEMPLATES).argmin(1)


def check_completions(images: torch.Tensor, reference: torch.Tensor):
    posterior = posterior_given_top_row(reference.flatten()[:2] * 2 - 1)
    torch.testing.assert_close(posterior, torch.tensor([0.75, 0.25, 0.0]), atol=1e-6, rtol=0)  # by hand: 3:1:~0
    # the known pixels are the input's, to the bit
    assert torch.equal(images[:, :, 0], reference[:, :, 0].expand(len(images), -1, -1))
    nearest = nearest_template(images)
    assert (nearest == 2).sum() == 0
    # 1024 completions: the standard error of a 0.75 fraction is 0.014
    assert (nearest == 0).float().mean().item() == pytest.approx(posterior[0].item(), abs=0.045)
    residual = (images * 2 - 1).flatten(1)[:, 2:] - TEMPLATES[nearest][:, 2:]
    assert residual.abs().max() < 0.5  # every completion sits on a template, none between two


def test_score_model_completes_template_a_in_the_posterior_proportion():
    model = ImageMixtureScoreModel(TEMPLATES.tolist(), WEIGHTS, std=STD, sample_size=2, in_channels=1)
    scheduler = AnnealedLangevinScheduler(
        sigma_max=2.0, sigma_min=0.05, num_noise_levels=10, steps_per_level=100, epsilon=2e-4, data_range=(-1.0, 1.0)
    )
    pipe = NCSNInpaintPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = (TEMPLATES[0].view(1, 1, 2, 2) + 1) / 2
    images = pipe(reference, BOTTOM_ROW, batch_size=1024, generator=torch.Generator().manual_seed(0), output_type="pt")
    check_completions(images.images, reference)
    assert model.calls == 1000


def test_predictor_corrector_chain_completes_with_a_template_sharing_the_known_row():
    """Another score-model sampler of NCSNPipeline, the reverse-diffusion predictor + Langevin corrector (snr 0.16).

    Its corrector steps are too small to mix between A and A2 once B's weight has gone (measured: A in 0.63-0.66 of
    the chains for k = 1, 4, 9 correctors per level, against the posterior's 0.75 that annealed Langevin reaches), so
    the test asks for what replacement guarantees: the known row kept, every completion a template sharing it, never B.
    """
    model = ImageMixtureScoreModel(TEMPLATES.tolist(), WEIGHTS, std=STD, sample_size=2, in_channels=1)
    scheduler = PredictorCorrectorScheduler(sigma_max=2.0, sigma_min=0.05, corrector_steps=1, data_range=(-1.0, 1.0))
    pipe = NCSNInpaintPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = (TEMPLATES[0].view(1, 1, 2, 2) + 1) / 2
    generator = torch.Generator().manual_seed(2)
    images = pipe(
        reference, BOTTOM_ROW, batch_size=512, generator=generator, num_inference_steps=200, output_type="pt"
    )
    images = images.images
    assert torch.equal(images[:, :, 0], reference[:, :, 0].expand(len(images), -1, -1))
    nearest = nearest_template(images)
    assert (nearest == 2).sum() == 0 and (nearest == 0).float().mean() > 0.5  # never B; A above A2, as the weights
    residual = (images * 2 - 1).flatten(1)[:, 2:] - TEMPLATES[nearest][:, 2:]
    assert residual.abs().max() < 0.5


def test_stochastic_heun_chain_completes_near_the_posterior_proportion():
    """EDM's stochastic sampler: its churn re-mixes between A and A2 at every level (A in 0.71 of the chains at 99
    calls, 0.67 without churn, against the posterior's 0.75); the known row is kept and B never appears."""
    model = ImageMixtureScoreModel(TEMPLATES.tolist(), WEIGHTS, std=STD, sample_size=2, in_channels=1)
    scheduler = StochasticHeunScheduler(sigma_max=2.0, sigma_min=0.05, data_range=(-1.0, 1.0))
    pipe = NCSNInpaintPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = (TEMPLATES[0].view(1, 1, 2, 2) + 1) / 2
    generator = torch.Generator().manual_seed(0)
    images = pipe(
        reference, BOTTOM_ROW, batch_size=1024, generator=generator, num_inference_steps=99, output_type="pt"
    )
    images = images.images
    assert torch.equal(images[:, :, 0], reference[:, :, 0].expand(len(images), -1, -1))
    nearest = nearest_template(images)
    assert (nearest == 2).sum() == 0 and 0.65 < (nearest == 0).float().mean() < 0.8


def test_ddpm_epsilon_model_completes_template_a_in_the_posterior_proportion():
    ddpm = DDPMScheduler()
    abar = ddpm.alphas_cumprod.double().tolist()
    model = ImageMixtureEpsilonModel(TEMPLATES.view(3, 1, 2, 2).tolist(), WEIGHTS, STD, 2, 1, abar)
    scheduler = AnnealedLangevinScheduler.from_config(ddpm.config)  # VP: integer DDPM timesteps
    pipe = NCSNInpaintPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = (TEMPLATES[0].view(1, 1, 2, 2) + 1) / 2
    images = pipe(reference, BOTTOM_ROW, batch_size=1024, generator=torch.Generator().manual_seed(1), output_type="pt")
    check_completions(images.images, reference)


def test_known_pixels_are_reset_to_the_perturbed_reference_at_every_step():
    """Before each model call the known pixels are y + sigma_i z, with one z per level (VE)."""
    model = ImageMixtureScoreModel(TEMPLATES.tolist(), WEIGHTS, std=STD, sample_size=2, in_channels=1)
    scheduler = AnnealedLangevinScheduler(
        sigma_max=2.0, sigma_min=0.05, num_noise_levels=3, steps_per_level=4, epsilon=2e-4, data_range=(-1.0, 1.0)
    )
    seen = []
    model.register_forward_hook(lambda module, args, output: seen.append((args[0][:, :, 0].clone(), float(args[1]))))
    pipe = NCSNInpaintPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = (TEMPLATES[0].view(1, 1, 2, 2) + 1) / 2
    pipe(reference, BOTTOM_ROW, batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert len(seen) == 12
    y_top = (reference[:, :, 0] * 2 - 1).expand(2, -1, -1)
    for level in range(3):
        steps = seen[4 * level : 4 * level + 4]
        sigma = steps[0][1]
        noise = (steps[0][0] - y_top) / sigma
        assert sigma == pytest.approx(scheduler.sigmas[level].item())
        assert noise.abs().max() > 0.01 and noise.abs().max() < 6  # a draw of N(0, 1) scaled by sigma_i
        for known, s in steps[1:]:  # held for the level's T steps
            assert s == sigma and torch.equal(known, steps[0][0])


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0))
    pipe = NCSNInpaintPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def digit_and_mask():
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1:7, 3:5] = 255  # a "1"
    image[1, 2] = 77
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[4:] = 255  # the bottom half is generated
    return image, mask


def inpaint(pipe, image, mask, seed=0, **kwargs):
    kwargs = {"num_inference_steps": 6, "output_type": "pt", **kwargs}
    return pipe(image, mask, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_pil_numpy_and_tensor_inputs_give_the_same_completions_and_keep_known_pixels(pipe):
    image, mask = digit_and_mask()
    from_pil = inpaint(pipe, Image.fromarray(image), Image.fromarray(mask), batch_size=2)
    from_numpy = inpaint(pipe, image[..., None] / 255.0, mask / 255.0, batch_size=2)
    from_tensor = inpaint(pipe, torch.from_numpy(image / 255.0)[None], torch.from_numpy(mask / 255.0), batch_size=2)
    from_rgb = inpaint(pipe, Image.fromarray(image).convert("RGB"), Image.fromarray(mask).convert("RGB"), batch_size=2)
    torch.testing.assert_close(from_pil, from_numpy)
    torch.testing.assert_close(from_pil, from_tensor)
    torch.testing.assert_close(from_pil, from_rgb)
    assert from_pil.shape == (2, 1, 8, 8)
    expected = torch.from_numpy(image / 255.0).float()
    assert torch.equal(from_pil[:, 0, :4], expected[:4].expand(2, -1, -1))
    assert not torch.equal(from_pil[0, 0, 4:], from_pil[1, 0, 4:])  # two different completions
    # the PIL round trip is exact too: a kept uint8 pixel comes back as the same uint8
    pil = pipe(Image.fromarray(image), Image.fromarray(mask), num_inference_steps=3).images[0]
    assert np.array_equal(np.asarray(pil)[:4], image[:4])


def test_several_images_with_one_mask_or_one_mask_each(pipe):
    image, mask = digit_and_mask()
    images = torch.from_numpy(np.stack([image, image[:, ::-1].copy()]) / 255.0)[:, None].float()  # (2, 1, 8, 8)
    one_mask = torch.from_numpy(mask / 255.0)[None]
    out = inpaint(pipe, images, one_mask, batch_size=3)
    assert out.shape == (6, 1, 8, 8)
    assert torch.equal(out[3:, :, :4], images[1:, :, :4].expand(3, -1, -1, -1))
    masks = torch.stack([one_mask, 1 - one_mask])  # the second image keeps its bottom half
    out = inpaint(pipe, images, masks, batch_size=1)
    assert torch.equal(out[0, :, :4], images[0, :, :4]) and torch.equal(out[1, :, 4:], images[1, :, 4:])
    generators = [torch.Generator().manual_seed(s) for s in range(2)]
    out_list = pipe(images, masks, generator=generators, num_inference_steps=6, output_type="pt").images
    assert out_list.shape == (2, 1, 8, 8)


def test_loads_from_a_saved_ncsn_pipeline_and_from_pipe(pipe, tmp_path):
    ncsn = NCSNPipeline(pipe.unet, pipe.scheduler)
    ncsn.save_pretrained(tmp_path / "ncsn")
    # the scheduler named, since without one loading gives the task's sampler (tests/inverse/test_posterior_pipeline.py)
    loaded = NCSNInpaintPipeline.from_pretrained(tmp_path / "ncsn", scheduler=pipe.scheduler)
    from_pipe = NCSNInpaintPipeline.from_pipe(ncsn, scheduler=pipe.scheduler)
    assert isinstance(loaded, NCSNInpaintPipeline) and isinstance(from_pipe, NCSNInpaintPipeline)
    image, mask = digit_and_mask()
    expected = inpaint(pipe, image / 255.0, mask / 255.0)
    for other in (loaded, from_pipe):
        other.set_progress_bar_config(disable=True)
        torch.testing.assert_close(inpaint(other, image / 255.0, mask / 255.0), expected, rtol=0, atol=1e-6)


def test_ddpm_unet_in_vp_coordinates_inpaints():
    torch.manual_seed(0)
    pipe = NCSNInpaintPipeline(tiny_ddpm_unet(), AnnealedLangevinScheduler.from_config(DDPMScheduler().config))
    pipe.set_progress_bar_config(disable=True)
    image, mask = digit_and_mask()
    out = inpaint(pipe, image / 255.0, mask / 255.0, num_inference_steps=20, batch_size=2)
    assert torch.equal(out[:, 0, :4], torch.from_numpy(image[:4] / 255.0).float().expand(2, -1, -1))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "image, mask, kwargs, message",
    [
        (np.zeros((8, 8, 1)), np.zeros((4, 4, 1)), {}, "does not fit"),
        (np.zeros((8, 8, 1)), np.full((8, 8, 1), 1.5), {}, r"mask_image has values in \[1.5, 1.5\]"),
        (np.zeros((8, 8, 1)), np.full((8, 8, 1), -0.1), {}, "must lie in"),
        (np.full((8, 8, 1), 255.0), np.zeros((8, 8, 1)), {}, r"image has values .* \(x \+ 1\) / 2"),
        (np.zeros((8, 8, 3)), np.zeros((8, 8)), {}, "3 channel"),
        (torch.zeros(3, 8, 8), torch.zeros(8, 8), {}, "3 channel"),
        (np.zeros((16, 16, 1)), np.zeros((16, 16, 1)), {}, "resize"),
        (np.zeros((2, 8, 8, 1)), np.zeros((3, 8, 8, 1)), {}, "one per image"),
        (np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), {"generator": [torch.Generator()] * 3}, "3 generators"),
        (np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), {"batch_size": 0}, "batch_size"),
        (None, np.zeros((8, 8, 1)), {}, "needs both"),
        (np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), {"snr": 0.1}, "takes no per-call snr"),
    ],
)
def test_bad_inputs_name_the_problem(pipe, image, mask, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(image, mask, num_inference_steps=2, **kwargs)


def test_inpaint_digits_example_end_to_end(pipe, tmp_path):
    torch.manual_seed(0)
    NCSNPipeline(NCSNUNet2DModel.from_preset("tiny"), pipe.scheduler).save_pretrained(tmp_path / "model")  # 16x16
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "examples/inpaint_digits.py", "--pipeline", str(tmp_path / "model"), "--output"]
    command += [str(tmp_path / "fig.png"), "--num_images", "6", "--figure_rows", "2", "--figure_completions", "2"]
    command += ["--num_inference_steps", "3"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = {name: float(rate) for rate, name in re.findall(r"^\s+([0-9.]+)%\s+(.+)$", result.stdout, re.M)}
    assert len(rates) == 4 and rates["original"] > 50  # the classifier knows real digits
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_denoiser_schedulers_are_refused_with_the_alternatives(pipe):
    from diffusers import EDMEulerScheduler

    edm = NCSNInpaintPipeline(pipe.unet, EDMEulerScheduler(sigma_min=0.02, sigma_max=2.0))
    with pytest.raises(ValueError, match="PredictorCorrectorScheduler"):
        edm(np.zeros((8, 8, 1)), np.zeros((8, 8)), num_inference_steps=2)
