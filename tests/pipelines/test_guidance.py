"""Classifier guidance (Song et al., 2021, Sec. 5) against a labelled two-Gaussian mixture and its exact posterior
classifier: at w = 1 the guided score is the score of the requested component, so every sampler must land all its
chains in that component, with the component's own variance."""

import math

import pytest
import torch
from analytic_classifier import MixturePosteriorClassifier
from analytic_models import ImageMixtureScoreModel
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    NCSNImg2ImgPipeline,
    NCSNInpaintPipeline,
    NCSNPipeline,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)
from ncsn_diffusers.guidance import guided_score
from ncsn_diffusers.training.toy import mixture_score

# A two-Gaussian mixture of constant images -a and +a (weights 0.2 / 0.8, pixel std 0.1), sampled in [-1, 1]
WEIGHTS, STD = [0.2, 0.8], 0.1
VE = dict(sigma_max=8.0, sigma_min=0.01, data_range=(-1.0, 1.0))


def mixture_model(num_pixels: int):
    """The mixture on a 1x1 image of 2 channels (modes at -/+0.5) or on 1 x n x n images (modes 10 stds apart)."""
    if num_pixels == 2:
        return ImageMixtureScoreModel([[-0.5, -0.5], [0.5, 0.5]], WEIGHTS, STD, sample_size=1, in_channels=2), 0.5
    a = 0.5 * 10 * STD / num_pixels**0.5
    size = int(num_pixels**0.5)
    return ImageMixtureScoreModel([[-a] * num_pixels, [a] * num_pixels], WEIGHTS, STD, sample_size=size), a


# (scheduler, U-Net calls, pixels): budgets at which each sampler's own discretisation leaves the variance within 8%
SAMPLERS = {
    "AnnealedLangevin": (lambda: AnnealedLangevinScheduler(**VE, epsilon=4e-5, num_noise_levels=10), 400, 2),
    "PredictorCorrector": (lambda: PredictorCorrectorScheduler(**VE, corrector_steps=1, snr=0.16), 100, 256),
    "ConsistentAnnealed": (lambda: ConsistentAnnealedSamplingScheduler(**VE), 100, 2),
    "StochasticHeun": (lambda: StochasticHeunScheduler(**VE, s_churn=80.0), 199, 2),
    "EDMEuler": (lambda: EDMEulerScheduler(sigma_min=0.01, sigma_max=8.0), 40, 2),
    "EDMDPMSolver": (lambda: EDMDPMSolverMultistepScheduler(sigma_min=0.01, sigma_max=8.0), 40, 2),
}


def guided_pipeline(scheduler, num_pixels):
    model, a = mixture_model(num_pixels)
    classifier = MixturePosteriorClassifier(model.mu.tolist(), WEIGHTS, STD, num_classes=2)
    pipe = NCSNPipeline(model, scheduler, classifier=classifier)
    pipe.set_progress_bar_config(disable=True)
    return pipe, a


def run(pipe, calls, seed=0, batch_size=1024, **kwargs):
    images = pipe(
        batch_size=batch_size,
        num_inference_steps=calls,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **kwargs,
    ).images
    return (images * 2 - 1).flatten(1)  # data_range (-1, 1)


def test_guided_score_at_w_1_is_the_score_of_the_requested_component():
    # Bayes: grad log p(x) + grad log p(k | x) = grad log p(x | k) = -(x - mu_k) / (s^2 + sigma^2), at every sigma
    means = [[-0.5, -0.5], [0.5, 0.5]]
    classifier = MixturePosteriorClassifier(means, WEIGHTS, STD)
    x = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    for sigma in (0.01, 0.3, 8.0):
        score = mixture_score(x.flatten(1), sigma, torch.tensor(means), WEIGHTS, STD).reshape(x.shape)
        for k in (0, 1):
            labels = torch.full((64,), k)
            guided = guided_score(score, x, torch.tensor(sigma), classifier, labels, 1.0)
            exact = -(x - torch.tensor(means[k]).reshape(1, 2, 1, 1)) / (STD**2 + sigma**2)
            torch.testing.assert_close(guided, exact, rtol=1e-4, atol=1e-4)


def test_guidance_scale_0_returns_the_score_itself_without_the_classifier():
    classifier = MixturePosteriorClassifier([[-0.5], [0.5]], WEIGHTS, STD)
    score, x = torch.randn(3, 1, 1, 1), torch.randn(3, 1, 1, 1)
    assert guided_score(score, x, 1.0, classifier, torch.zeros(3, dtype=torch.long), 0.0) is score
    assert classifier.calls == 0


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("k", [0, 1])
def test_guided_chains_land_in_the_requested_component_with_its_variance(name, k):
    make_scheduler, calls, num_pixels = SAMPLERS[name]
    pipe, a = guided_pipeline(make_scheduler(), num_pixels)
    x = run(pipe, calls, class_labels=k, guidance_scale=1.0)
    mean = -a if k == 0 else a
    assert ((x.mean(1) < 0) == (k == 0)).all()  # 100% of the chains, for the 0.2 component as for the 0.8 one
    assert ((x - mean).var() / STD**2).item() == pytest.approx(1.0, rel=0.1)
    assert (x.mean() - mean).abs().item() < 0.1 * STD


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_guidance_scale_0_is_unguided_sampling_bit_for_bit(name):
    make_scheduler, _, num_pixels = SAMPLERS[name]
    pipe, _ = guided_pipeline(make_scheduler(), num_pixels)
    unguided = run(pipe, 12, batch_size=64)
    guided = run(pipe, 12, batch_size=64, class_labels=0, guidance_scale=0.0)
    assert torch.equal(guided, unguided)
    assert pipe.classifier.calls == 0  # w = 0 never calls the classifier


def test_one_label_per_image():
    pipe, a = guided_pipeline(ConsistentAnnealedSamplingScheduler(**VE), 2)
    labels = torch.tensor([0, 1] * 64)
    x = run(pipe, 50, batch_size=128, class_labels=labels, guidance_scale=1.0)
    assert torch.equal((x.mean(1) > 0).long(), labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"guidance_scale": 2.0}, "guidance_scale=2.0 needs class_labels"),
        ({"class_labels": 0, "guidance_scale": -1.0}, "guidance_scale=-1.0 must be a finite number >= 0"),
        # Bug caught: w = inf was accepted and sampled NaN images
        ({"class_labels": 0, "guidance_scale": math.inf}, "guidance_scale=inf must be a finite number >= 0"),
        ({"class_labels": 2}, r"class_labels must lie in 0..1"),
        ({"class_labels": [0, 1, 1]}, "class_labels has 3 labels for batch_size=2"),
        ({"class_labels": 0.5}, "must be an int or a list"),
    ],
)
def test_bad_guidance_arguments_name_the_fix(kwargs, message):
    pipe, _ = guided_pipeline(ConsistentAnnealedSamplingScheduler(**VE), 2)
    with pytest.raises(ValueError, match=message):
        pipe(batch_size=2, num_inference_steps=3, **kwargs)


def test_class_labels_without_a_classifier_name_the_fix():
    pipe = NCSNPipeline(mixture_model(2)[0], ConsistentAnnealedSamplingScheduler(**VE))
    with pytest.raises(ValueError, match="has no classifier; load one with"):
        pipe(batch_size=2, num_inference_steps=3, class_labels=1)


def test_guided_image_to_image_lands_in_the_requested_component():
    # from a guide at +a (component 1), strength 0.8 and w = 1 towards component 0: every edit ends at -a
    model, a = mixture_model(2)
    classifier = MixturePosteriorClassifier(model.mu.tolist(), WEIGHTS, STD, num_classes=2)
    pipe = NCSNImg2ImgPipeline(model, ConsistentAnnealedSamplingScheduler(**VE), classifier=classifier)
    pipe.set_progress_bar_config(disable=True)
    image = torch.full((1, 2, 1, 1), (a + 1) / 2)
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(strength=0.8, batch_size=512, num_inference_steps=100, generator=generator, output_type="pt")
    x = (pipe(image, class_labels=0, guidance_scale=1.0, **kwargs).images * 2 - 1).flatten(1)
    assert (x.mean(1) < 0).all()
    assert ((x + a).var() / STD**2).item() == pytest.approx(1.0, rel=0.1)
    unguided = (pipe(image, **kwargs).images * 2 - 1).flatten(1)
    assert (unguided.mean(1) > 0).float().mean() > 0.5  # without guidance most edits stay near the guide


def inpainting_pipeline():
    """The mixture of constant 1x2x2 images at -/+0.5 (pixel std 0.1, 10 stds apart in every pixel)."""
    model = ImageMixtureScoreModel([[-0.5] * 4, [0.5] * 4], WEIGHTS, STD, sample_size=2)
    classifier = MixturePosteriorClassifier(model.mu.tolist(), WEIGHTS, STD, num_classes=2)
    pipe = NCSNInpaintPipeline(model, ConsistentAnnealedSamplingScheduler(**VE), classifier=classifier)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("k", [0, 1])
def test_guided_inpainting_lands_the_free_pixels_in_the_requested_component(k):
    # Given y = k the pixels are independent N(mu_k, s^2): at w = 1 the guided score is component k's, pixel by
    # pixel, so the free bottom row samples N(mu_k, s^2) whatever the known top row holds, +0.5 (component 1's mean)
    # or -0.5 (component 0's): against it or with it, the same completions.
    pipe = inpainting_pipeline()
    mask = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    kwargs = dict(mask_image=mask, batch_size=512, num_inference_steps=100, output_type="pt")

    def free_pixels(known: float, **guidance):
        image = torch.full((1, 1, 2, 2), (known + 1) / 2)  # the known value in [0, 1]
        images = pipe(image, generator=torch.Generator().manual_seed(0), **kwargs, **guidance).images
        assert torch.equal(images[:, :, 0], image[:, :, 0].expand(512, 1, 2))  # the known pixels come back exactly
        return images[:, 0, 1] * 2 - 1  # (512, 2) in the data range

    free, mean = free_pixels(0.5, class_labels=k, guidance_scale=1.0), (-0.5 if k == 0 else 0.5)
    assert ((free.mean(1) < 0) == (k == 0)).all()  # 100% of the completions
    # CAS's own discretisation at 100 calls gives 0.92-0.98 s^2 for unmasked guided sampling of this mixture
    assert ((free - mean).var() / STD**2).item() == pytest.approx(0.95, abs=0.1)
    assert torch.allclose(free_pixels(-0.5, class_labels=k, guidance_scale=1.0), free, atol=1e-5)
    share = (free_pixels(0.5).mean(1) > 0).float().mean().item()
    assert share > 0.9, share  # unguided, the known row +0.5 draws most of them to component 1


def test_guidance_scale_0_inpaints_unguided_bit_for_bit():
    pipe = inpainting_pipeline()
    image, mask = torch.full((2, 1, 2, 2), 0.75), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    kwargs = dict(batch_size=8, num_inference_steps=12, output_type="pt")
    unguided = pipe(image, mask, generator=torch.Generator().manual_seed(0), **kwargs).images
    guided = pipe(
        image, mask, class_labels=0, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert torch.equal(guided.images, unguided) and pipe.classifier.calls == 0


def test_the_default_guidance_scale_is_the_measured_w_4():
    """Bug caught: labels without `guidance_scale` sampled at w = 1, which put 58-88% of the default digits model's
    samples in the requested class, where the measured w = 4 puts 98-100% (docs/controllable_generation.md)."""
    pipe, _ = guided_pipeline(ConsistentAnnealedSamplingScheduler(**VE), 2)
    default = run(pipe, 12, batch_size=8, class_labels=0)
    assert torch.equal(default, run(pipe, 12, batch_size=8, class_labels=0, guidance_scale=4.0))
    assert not torch.equal(default, run(pipe, 12, batch_size=8, class_labels=0, guidance_scale=1.0))
