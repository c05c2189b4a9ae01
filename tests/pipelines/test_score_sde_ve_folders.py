"""The Hub's ScoreSdeVe folders (google/ncsnpp-*: diffusers' `ScoreSdeVePipeline`, an NCSN++ `UNet2DModel` that
returns the score, and a `ScoreSdeVeScheduler`, data in [0, 1]) load and sample in the package's pipelines as they
are, and the package's predictor-corrector runs the chain of diffusers' own `ScoreSdeVePipeline`."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler
from diffusers.utils.torch_utils import randn_tensor
from tiny_models import tiny_ncsnpp

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    NCSNImg2ImgPipeline,
    NCSNInpaintPipeline,
    NCSNPipeline,
    PredictorCorrectorScheduler,
    log_likelihood,
)
from ncsn_diffusers.schedulers import SCORE_SCHEDULERS
from ncsn_diffusers.training.distillation_config import check_teacher, read_teacher

torch.set_num_threads(1)
SDE = dict(sigma_max=50.0, sigma_min=0.01, snr=0.16)


def gaussian_images(size: int = 4) -> ImageMixtureScoreModel:
    """The exact score of N(0.5, 0.1**2 I) in 3 x size x size dimensions (ScoreSdeVePipeline draws 3 channels)."""
    return ImageMixtureScoreModel(
        means=[[0.5] * (3 * size * size)], weights=[1.0], std=0.1, sample_size=size, in_channels=3
    )


def folder_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def score_sde_ve_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ncsnpp") / "score-sde-ve"
    ScoreSdeVePipeline(
        unet=tiny_ncsnpp(), scheduler=ScoreSdeVeScheduler(**SDE, num_train_timesteps=10)
    ).save_pretrained(folder)
    return folder


def test_score_sde_ve_config_converts_to_the_package_schedulers():
    """Bug caught: PC.from_config(ScoreSdeVeScheduler(...).config) dropped its defaults (1000 levels, not its 2000) and
    took per-sample corrector norms; the data range [0, 1] was left implicit."""
    config = ScoreSdeVeScheduler(**SDE, correct_steps=2).config
    pc = PredictorCorrectorScheduler.from_config(config)
    assert (pc.config.sigma_max, pc.config.sigma_min, pc.config.snr) == (50.0, 0.01, 0.16)
    assert pc.config.corrector_steps == 2 and pc.config.num_noise_levels == 2000
    assert tuple(pc.config.data_range) == (0.0, 1.0) and pc.config.prediction_type == "score"
    assert pc.config.corrector_norms == "batch_mean" and pc.config.final_denoise
    for cls in SCORE_SCHEDULERS:
        other = cls.from_config(config)
        assert (other.config.sigma_max, other.config.sigma_min) == (50.0, 0.01), cls.__name__
        assert other.data_range == (0.0, 1.0) and other.config.prediction_type == "score", cls.__name__


def score_sde_ve_chain(model, shape, num_steps, generator):
    """diffusers' ScoreSdeVePipeline loop (corrector, then predictor, per step), every sample along the way."""
    scheduler = ScoreSdeVeScheduler(**SDE)
    x = randn_tensor(shape, generator=generator) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_steps)
    scheduler.set_sigmas(num_steps)
    samples = []
    for i, t in enumerate(scheduler.timesteps):
        sigma_t = scheduler.sigmas[i] * torch.ones(shape[0])
        x = scheduler.step_correct(model(x, sigma_t).sample, x, generator=generator).prev_sample
        samples.append(x)
        out = scheduler.step_pred(model(x, sigma_t).sample, t, x, generator=generator)
        x = out.prev_sample
        samples.append(out.prev_sample_mean if i == num_steps - 1 else x)
    return samples


def test_predictor_corrector_runs_the_score_sde_ve_chain_step_by_step():
    """Bug caught: the package's corrector took each sample's own norms where score SDE takes the batch's means, so
    the same noise gave another chain (and a 4% wider law on Gaussian data)."""
    model, shape = gaussian_images(), (4, 3, 4, 4)
    reference = score_sde_ve_chain(model, shape, 25, torch.Generator().manual_seed(0))
    scheduler = PredictorCorrectorScheduler.from_config(ScoreSdeVeScheduler(**SDE).config)
    generator = torch.Generator().manual_seed(0)
    z = randn_tensor(shape, generator=generator)
    x = scheduler.initial_sample(shape, latents=z - 0.5 / SDE["sigma_max"])  # score SDE starts at 0 + sigma_max z
    scheduler.set_timesteps(50)
    for t, expected in zip(scheduler.timesteps, reference, strict=True):
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
        # score SDE calls the network at sigma(t) of its continuous t (within 1e-4 of the ladder's sigma)
        torch.testing.assert_close(x, expected, rtol=2e-3, atol=2e-3 * expected.abs().max().item())


def test_predictor_corrector_samples_as_score_sde_ve_pipeline_on_an_exact_score():
    """Bug caught: at equal settings (200 calls, snr 0.16, sigma 50 -> 0.01) diffusers' pipeline gave std 0.1007 on
    N(0.5, 0.1**2) data and the package's converted PC 0.1044."""
    model = gaussian_images()
    reference = ScoreSdeVePipeline(unet=model, scheduler=ScoreSdeVeScheduler(**SDE))
    reference.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    expected = reference(batch_size=500, num_inference_steps=100, generator=generator, output_type="np").images
    pipe = NCSNPipeline(unet=model, scheduler=PredictorCorrectorScheduler.from_config(reference.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=500, num_inference_steps=200, generator=torch.Generator().manual_seed(0), output_type="np"
    )
    assert images.images.std() == pytest.approx(expected.std(), abs=1e-3)
    assert images.images.std() == pytest.approx(0.1, abs=3e-3) and images.images.mean() == pytest.approx(0.5, abs=3e-3)


def test_the_pipelines_load_a_score_sde_ve_folder_as_it_is(score_sde_ve_folder, tmp_path):
    """Bug caught: NCSNPipeline.from_pretrained(ScoreSdeVe folder) raised "NCSNPipeline needs one of ..."."""
    before = folder_digest(score_sde_ve_folder)
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0
    edits = {
        NCSNPipeline: {},
        NCSNInpaintPipeline: dict(image=image, mask_image=mask),
        NCSNImg2ImgPipeline: dict(image=image),
    }
    for cls, inputs in edits.items():
        pipe = cls.from_pretrained(score_sde_ve_folder)
        assert pipe.data_range == (0.0, 1.0) and pipe.scheduler.config.sigma_max == 50.0
        # inpainting runs annealed Langevin over the folder's range (measured best for it, task_samplers.py)
        sampler = AnnealedLangevinScheduler if cls is NCSNInpaintPipeline else PredictorCorrectorScheduler
        assert isinstance(pipe.scheduler, sampler), cls.__name__
        if sampler is PredictorCorrectorScheduler:
            assert pipe.scheduler.config.snr == 0.16
        pipe.set_progress_bar_config(disable=True)
        images = pipe(**inputs, num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="pt")
        assert torch.isfinite(images.images).all(), cls.__name__
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "NCSNImg2ImgPipeline" and index["scheduler"][1] == "PredictorCorrectorScheduler"
    assert isinstance(NCSNPipeline.from_pretrained(tmp_path / "saved").scheduler, PredictorCorrectorScheduler)
    assert folder_digest(score_sde_ve_folder) == before  # only read


def test_a_score_sde_ve_folder_samples_as_diffusers_pipeline_does(score_sde_ve_folder):
    """The same network call (`unet(x, sigma)`, the U-Net's own 1/sigma) and the same chain, image for image."""
    reference = ScoreSdeVePipeline.from_pretrained(score_sde_ve_folder)
    reference.set_progress_bar_config(disable=True)
    expected = reference(num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    pipe = NCSNPipeline.from_pretrained(score_sde_ve_folder)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    latents = randn_tensor((1, 3, 8, 8), generator=generator) - 0.5 / SDE["sigma_max"]
    images = pipe(num_inference_steps=10, latents=latents, generator=generator, output_type="np").images
    assert abs(images - expected).max() < 1e-3


def test_every_score_sampler_swaps_in_and_from_pipe_encode_and_likelihood_run(score_sde_ve_folder):
    reference = ScoreSdeVePipeline.from_pretrained(score_sde_ve_folder)
    pipe = NCSNPipeline.from_pipe(reference)
    assert isinstance(pipe.scheduler, PredictorCorrectorScheduler) and pipe.data_range == (0.0, 1.0)
    pipe.set_progress_bar_config(disable=True)
    for cls in SCORE_SCHEDULERS:
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        images = pipe(num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
        assert torch.isfinite(images).all(), cls.__name__
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(pipe.encode(images, solver="heun", num_steps=4)).all()
    nll = log_likelihood(pipe, images, solver="heun", num_steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(torch.as_tensor(nll.bits_per_dim)).all()


def test_a_score_sde_ve_folder_is_a_distillation_teacher(score_sde_ve_folder):
    """Bug caught: --teacher_model refused the folder as "a DDPM epsilon model" (its U-Net is a UNet2DModel)."""
    teacher = read_teacher(str(score_sde_ve_folder))
    check_teacher(teacher, str(score_sde_ve_folder))
    assert teacher["scheduler"]["_class_name"] == "PredictorCorrectorScheduler"
    assert tuple(teacher["scheduler"]["data_range"]) == (0.0, 1.0)
