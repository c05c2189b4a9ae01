"""LogSigmaMultistepScheduler: the score-scheduler contract, its step against closed forms, and few-call sampling of
the 0.2 / 0.8 mixture with the exact score, against predictor-corrector at 100 calls."""

import math

import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from scheduler_contract import ScoreSchedulerContract, gaussian_score, run_chain
from sliced_wasserstein import sliced_wasserstein

from ncsn_diffusers import LogSigmaMultistepScheduler, NCSNPipeline, PredictorCorrectorScheduler
from ncsn_diffusers.schedulers.schedule_search import search_schedule_shape
from ncsn_diffusers.schedulers.scheduling_log_sigma_multistep import integrator_weights, shaped_sigmas
from ncsn_diffusers.training.toy import mixture_score
from ncsn_diffusers.training.toy import sample_mixture as exact_mixture_samples

# The 2-D toy of test_samplers_on_exact_scores.py: the paper's 0.2 / 0.8 mixture in [-1, 1], modes 10 stds apart.
MEANS, WEIGHTS, STD = [[-0.5, -0.5], [0.5, 0.5]], [0.2, 0.8], 0.1
VE = dict(sigma_max=8.0, sigma_min=0.01, data_range=(-1.0, 1.0))


class TestFirstOrderContract(ScoreSchedulerContract):
    """Order 1 keeps no history, so every contract holds as for single-step samplers, partial chains included."""

    scheduler_class = LogSigmaMultistepScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=6, solver_order=1, corrector=False, eta=0.5)


class TestThirdOrderContract(ScoreSchedulerContract):
    scheduler_class = LogSigmaMultistepScheduler
    config = dict(sigma_max=2.0, sigma_min=0.05, num_noise_levels=6, solver_order=3, eta=0.3)

    def test_partial_chain_is_the_tail_of_the_full_chain(self):
        """A tail has no earlier estimates: it restarts the history with a first-order step, as diffusers' multistep
        solvers do (img2img). Bug caught: a tail that extrapolates through estimates of another chain."""
        scheduler = self.scheduler(eta=0.0)
        scheduler.set_timesteps(self.num_inference_steps)
        scheduler.set_begin_index(self.begin_index)
        x = torch.full((2, 3), 0.7)
        t = scheduler.timesteps[self.begin_index]
        out = scheduler.step(gaussian_score(x, t), t, x).prev_sample
        s, s_next = float(t), float(scheduler.timesteps[self.begin_index + 1])
        denoised = x + s**2 * gaussian_score(x, s)
        torch.testing.assert_close(out, s_next / s * x + (1 - s_next / s) * denoised)
        run_chain(scheduler, out, None, scheduler.timesteps[self.begin_index + 1 :])


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_integrator_weights_integrate_a_linear_denoiser_exactly(k):
    """D(lambda) = a + b lambda: k int_s^t e^{k (lambda - lambda_t)} D = (a + b lambda_t - b/k) - e^{-k h} (a + b
    lambda_s - b/k). Two or three nodes reproduce it exactly; the weights sum to 1 - e^{-k h}."""
    a, b, lambda_s, lambda_t = 0.3, -1.7, -2.0, -0.6
    h = lambda_t - lambda_s
    exact = (a + b * lambda_t - b / k) - math.exp(-k * h) * (a + b * lambda_s - b / k)
    for nodes in ([lambda_s, lambda_s - 0.5], [lambda_t, lambda_s, lambda_s - 0.9]):
        weights = integrator_weights(nodes, lambda_s, lambda_t, k)
        assert sum(w * (a + b * node) for w, node in zip(weights, nodes)) == pytest.approx(exact, rel=1e-12)
        assert sum(weights) == pytest.approx(-math.expm1(-k * h), rel=1e-12)


def test_first_order_steps_by_hand_ddim_and_ancestral():
    """Order 1: eta = 0 is DDIM's x_t = r x_s + (1 - r) D with r = sigma_t / sigma_s; eta = 1 is the reverse SDE's
    exact step given D, the ancestral step x_t = r^2 x_s + (1 - r^2) D + sigma_t sqrt(1 - r^2) z."""
    x, s = torch.tensor([[0.3, -0.2, 0.5]]), torch.tensor([[1.5, 2.0, -1.0]])
    for eta in (0.0, 1.0):
        scheduler = LogSigmaMultistepScheduler(sigma_max=2.0, sigma_min=0.5, solver_order=1, eta=eta)
        scheduler.set_timesteps(3)
        t0, t1 = scheduler.timesteps[:2].tolist()
        out = scheduler.step(s, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(0))
        denoised, r = x + t0**2 * s, t1 / t0
        torch.testing.assert_close(out.pred_original_sample, denoised)
        if eta == 0:
            expected = r * x + (1 - r) * denoised
        else:
            z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
            expected = r**2 * x + (1 - r**2) * denoised + t1 * math.sqrt(1 - r**2) * z
        torch.testing.assert_close(out.prev_sample, expected)


def test_higher_orders_converge_faster_on_a_gaussian():
    """Data N(0, c^2): the ODE's exact end is D at sigma_min of x(sigma_min) = x_0 sqrt(c^2 + sigma_min^2) /
    sqrt(c^2 + sigma_max^2). Doubling the calls cuts order 1's error ~2x and order 3's far more.
    Bug caught: a wrong Lagrange weight leaves every order first-order."""
    c, x0 = 0.5, torch.full((1, 1), 3.0)

    def error(order, calls):
        scheduler = LogSigmaMultistepScheduler(sigma_max=4.0, sigma_min=0.1, solver_order=order, corrector=False)
        scheduler.set_timesteps(calls)
        x = x0
        for t in scheduler.timesteps:
            x = scheduler.step(-x / (c**2 + float(t) ** 2), t, x).prev_sample
        x_end = x0 * math.sqrt(c**2 + 0.1**2) / math.sqrt(c**2 + 16.0)
        return abs(x - c**2 / (c**2 + 0.01) * x_end).item()

    first = error(1, 9) / error(1, 17)
    third = error(3, 9) / error(3, 17)
    assert 1.6 < first < 2.6 and third > 6


EXACT = exact_mixture_samples(4096, torch.Generator().manual_seed(123), means=MEANS, weights=WEIGHTS, std=STD)


def sliced_distance_and_weight(scheduler, calls):
    """SW_2 between 4096 samples of the 2-D 0.2 / 0.8 mixture drawn through NCSNPipeline and 4096 exact draws (their
    own floor: ~0.023), the weight of the 0.2 mode, and the model calls made."""
    model = ImageMixtureScoreModel(MEANS, WEIGHTS, STD, sample_size=1, in_channels=2)
    pipe = NCSNPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=4096, num_inference_steps=calls, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    samples = (images * 2 - 1).flatten(1)  # data_range (-1, 1)
    return sliced_wasserstein(samples, EXACT), (samples.mean(1) < 0).float().mean().item(), model.calls


@pytest.fixture(scope="module")
def predictor_corrector_at_100_calls():
    """The bar: the better of PC with one corrector step (biased on 2-D) and ancestral sampling, 100 calls each."""
    return min(
        sliced_distance_and_weight(PredictorCorrectorScheduler(**VE, corrector_steps=k), 100)[0] for k in (0, 1)
    )


def exact_score(x, sigma):
    return mixture_score(x.flatten(1), sigma, torch.tensor(MEANS), WEIGHTS, STD).reshape(x.shape)


@pytest.fixture(scope="module")
def five_call_shape():
    start = torch.randn(256, 2, generator=torch.Generator().manual_seed(5)) * VE["sigma_max"]
    return search_schedule_shape(exact_score, start, LogSigmaMultistepScheduler(**VE).config, num_calls=5)


def test_schedule_search_lowers_the_end_point_error(five_call_shape):
    """Bug caught: a search that keeps moves which raise the error, or returns a shape out of order."""
    shape, info = five_call_shape
    assert len(shape) == 5 and shape[0] == 0 and shape[-1] == 1 and all(a < b for a, b in zip(shape, shape[1:]))
    assert info["error"] < info["initial_error"] / 2
    with pytest.raises(ValueError, match="num_calls=2 must be at least 3"):
        search_schedule_shape(exact_score, torch.zeros(1, 2), LogSigmaMultistepScheduler(**VE).config, 2)


@pytest.mark.parametrize(
    "calls, settings",
    [(5, {"searched": True}), (10, {}), (10, {"eta": 0.3})],
    ids=["5 calls, searched schedule", "10 calls", "10 calls, eta 0.3"],
)
def test_few_calls_sample_the_mixture_as_well_as_predictor_corrector_at_100(
    calls, settings, predictor_corrector_at_100_calls, five_call_shape
):
    """At 5 and 10 calls, no farther (sliced Wasserstein) from the exact mixture than PC at 100 calls, and the 0.2 /
    0.8 weights hold. Bug caught: a few-step solver that drops the small mode or smears both."""
    settings = dict(settings)
    if settings.pop("searched", False):
        settings["schedule_shape"] = five_call_shape[0]
    distance, weight, model_calls = sliced_distance_and_weight(LogSigmaMultistepScheduler(**VE, **settings), calls)
    assert distance <= predictor_corrector_at_100_calls
    assert weight == pytest.approx(0.2, abs=0.03) and model_calls == calls


def test_shaped_sigmas_interpolate_the_log_sigma_shape():
    assert shaped_sigmas(8.0, 0.01, 4, [0.0, 0.2, 0.5, 1.0]) == pytest.approx(
        [8.0 * 800 ** (-v) for v in (0.0, 0.2, 0.5, 1.0)]
    )
    assert shaped_sigmas(8.0, 0.01, 3, [0.0, 1.0]) == pytest.approx([8.0, math.sqrt(0.08), 0.01])  # log-linear


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"solver_order": 5}, "solver_order=5 is more than 4"),
        ({"solver_order": 0}, "solver_order=0 must be a positive integer"),
        ({"eta": -0.1}, "eta=-0.1 must be a finite number >= 0"),
        ({"schedule_shape": [0.0, 0.7, 0.5, 1.0]}, "schedule_shape=.* must be a strictly increasing list from 0"),
        ({"schedule_shape": [0.1, 1.0]}, "must be a strictly increasing list from 0"),
        ({"corrector": 1}, "corrector=1 must be True or False"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LogSigmaMultistepScheduler(**kwargs)
