"""The samplers for score models besides annealed Langevin dynamics: predictor-corrector, consistent annealed
sampling, EDM's stochastic Heun sampler, and diffusers' EDM solvers driven through the denoiser, each run through
NCSNPipeline on exact scores."""

import json
import math

import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    NCSNPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
    denoiser_model_output,
)
from ncsn_diffusers.schedulers import SCORE_SCHEDULERS
from ncsn_diffusers.schedulers.noise_ladders import karras_sigmas

# The paper's 0.2 / 0.8 mixture shrunk into [-1, 1]: modes at -/+0.5 per pixel, pixel std 0.1.
WEIGHTS = [0.2, 0.8]
STD = 0.1
VE = dict(sigma_max=8.0, sigma_min=0.01, data_range=(-1.0, 1.0))


def mixture_model(num_pixels: int):
    """Two constant images -a and +a, 10 pixel stds apart (as the 2-D toy's modes are 10 apart along the diagonal)."""
    a = 0.5 * 10 * STD / math.sqrt(num_pixels)
    if num_pixels == 2:  # two channels of a 1x1 image: the paper's 2-D toy
        return ImageMixtureScoreModel([[-0.5, -0.5], [0.5, 0.5]], WEIGHTS, STD, sample_size=1, in_channels=2), 0.5
    size = int(math.isqrt(num_pixels))
    means = [[-a] * num_pixels, [a] * num_pixels]
    return ImageMixtureScoreModel(means, WEIGHTS, STD, sample_size=size, in_channels=1), a


def sample_mixture(scheduler, num_inference_steps, num_pixels=2, batch_size=4096, forward_hook=None, **call_kwargs):
    """Samples the mixture through NCSNPipeline; returns the weight of the -a mode, each mode's pixel variance over
    STD**2, and the model (which counts its calls)."""
    model, a = mixture_model(num_pixels)
    if forward_hook is not None:
        model.register_forward_hook(forward_hook)
    pipe = NCSNPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=batch_size,
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        **call_kwargs,
    ).images
    x = (images * 2 - 1).flatten(1)  # data_range (-1, 1)
    left = x.mean(1) < 0
    centred = x - torch.where(left[:, None], -a, a)
    return left.float().mean().item(), centred[left].var().item() / STD**2, centred[~left].var().item() / STD**2, model


def assert_samples_the_mixture(weight, var_left, var_right, weight_tol=0.03, var_tol=0.15):
    assert weight == pytest.approx(0.2, abs=weight_tol)
    assert var_left == pytest.approx(1.0, rel=var_tol) and var_right == pytest.approx(1.0, rel=var_tol)


# Predictor-corrector (Song et al., 2021)


def test_predictor_and_corrector_steps_by_hand():
    scheduler = PredictorCorrectorScheduler(sigma_max=1.0, sigma_min=0.1, num_noise_levels=2, corrector_steps=1)
    scheduler.set_timesteps()
    assert scheduler.timesteps.tolist() == pytest.approx([1.0, 1.0, 0.1, 0.1])
    x = torch.tensor([[0.3, -0.2, 0.5], [1.0, 2.0, -1.0]])
    s = torch.tensor([[1.5, 2.0, -1.0], [0.5, 0.1, 0.2]])
    t = scheduler.timesteps

    # corrector at sigma_1: eps = 2 (r ||z|| / ||s||)^2 per sample, x + eps s + sqrt(2 eps) z
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    out = scheduler.step(s, t[0], x, generator=torch.Generator().manual_seed(1)).prev_sample
    eps = 2 * (0.16 * z.norm(dim=1, keepdim=True) / s.norm(dim=1, keepdim=True)) ** 2
    torch.testing.assert_close(out, x + eps * s + (2 * eps).sqrt() * z)

    # predictor from sigma_1 = 1 to sigma_2 = 0.1: x + (1 - 0.01) s + sqrt(1 - 0.01) z
    out = scheduler.step(s, t[1], x, generator=torch.Generator().manual_seed(2)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, x + 0.99 * s + math.sqrt(0.99) * z)

    # the last predictor step goes to sigma = 0 without noise: Tweedie's x + sigma_N^2 s
    scheduler.step(s, t[2], x)
    out = scheduler.step(s, t[3], x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.prev_sample, x + 0.01 * s)
    torch.testing.assert_close(out.pred_original_sample, x + 0.01 * s)


@pytest.mark.parametrize("corrector_steps, calls, levels", [(0, 7, 7), (1, 10, 5), (1, 9, 5), (2, 10, 4)])
def test_predictor_corrector_ladder_of_any_length(corrector_steps, calls, levels):
    scheduler = PredictorCorrectorScheduler(**VE, corrector_steps=corrector_steps)
    scheduler.set_timesteps(calls)
    sigmas = list(dict.fromkeys(scheduler.timesteps.tolist()))
    assert len(scheduler.timesteps) == calls and len(sigmas) == levels
    assert sigmas[0] == pytest.approx(8.0) and sigmas[-1] == pytest.approx(0.01)
    ratios = [a / b for a, b in zip(sigmas, sigmas[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-5)  # geometric
    # every level ends with its predictor step; the shortfall is taken from the first levels' correctors
    counts = [scheduler.timesteps.tolist().count(s) for s in sigmas]
    assert counts[-1] == corrector_steps + 1 and sum(counts) == calls


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
def test_predictor_noise_on_a_coarse_ladder(predictor):
    """Data = a point at 0, score -x / sigma^2, 6 levels 5 -> 0.05 (ratio 2.5): the ancestral predictor's sample has
    std sigma_{i+1} after every step, as the next call assumes; reverse diffusion's variance follows
    v' = (sigma_{i+1}^2 / sigma_i^2)^2 v + sigma_i^2 - sigma_{i+1}^2, above sigma_{i+1}^2 by up to
    sigma_i^2 (1 - sigma_{i+1}^2 / sigma_i^2)^2. Bug caught: the excess noise that made PC at 50 calls leave every
    digit rough (25 levels); the ancestral predictor removes it."""
    scheduler = PredictorCorrectorScheduler(
        sigma_max=5.0, sigma_min=0.05, corrector_steps=0, final_denoise=False, predictor=predictor
    )
    scheduler.set_timesteps(6)
    model = ImageMixtureScoreModel([[0.0] * 64], [1.0], std=0.0, sample_size=8, in_channels=1)
    generator = torch.Generator().manual_seed(0)
    x = scheduler.initial_sample((1024, 1, 8, 8), generator=generator) - 0.5  # centred at 0, std sigma_1
    sigmas, variance = scheduler.timesteps.tolist(), 25.0
    for i, t in enumerate(scheduler.timesteps[:-1]):
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
        ratio = sigmas[i + 1] ** 2 / sigmas[i] ** 2
        variance = (
            sigmas[i + 1] ** 2 if predictor == "ancestral" else ratio**2 * variance + sigmas[i] ** 2 * (1 - ratio)
        )
        assert x.var().item() == pytest.approx(variance, rel=0.02)
    if predictor == "reverse_diffusion":
        assert variance > 1.2 * sigmas[-1] ** 2


def test_ancestral_sampling_recovers_the_mixture():
    weight, var_left, var_right, model = sample_mixture(PredictorCorrectorScheduler(**VE, corrector_steps=0), 100)
    assert_samples_the_mixture(weight, var_left, var_right)
    assert model.calls == 100


def test_predictor_corrector_recovers_the_mixture_of_images():
    # 16x16 images: the per-sample norms of the snr rule concentrate as they do for real images (on the 2-D toy their
    # spread biases the corrector's stationary variance upward by ~30%).
    scheduler = PredictorCorrectorScheduler(**VE, corrector_steps=1, snr=0.16)
    weight, var_left, var_right, model = sample_mixture(scheduler, 100, num_pixels=256, batch_size=2048)
    assert_samples_the_mixture(weight, var_left, var_right, weight_tol=0.035, var_tol=0.1)
    assert model.calls == 100


def test_corrector_is_per_sample():
    # One image's chain does not depend on the others in its batch (score SDE averages the norms over the batch).
    scheduler = PredictorCorrectorScheduler(**VE, corrector_steps=2)
    model, _ = mixture_model(16)
    pipe = NCSNPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)

    def run(seeds):
        generator = [torch.Generator().manual_seed(s) for s in seeds]
        return pipe(batch_size=len(seeds), generator=generator, num_inference_steps=12, output_type="pt").images

    torch.testing.assert_close(run([3, 4])[1:], run([4]), atol=1e-6, rtol=0)


# Consistent annealed sampling (Jolicoeur-Martineau et al., 2021)


def test_consistent_step_by_hand():
    scheduler = ConsistentAnnealedSamplingScheduler(sigma_max=1.0, sigma_min=0.1, num_noise_levels=3, epsilon=0.008)
    scheduler.set_timesteps()
    sigmas = [1.0, 0.1**0.5, 0.1]
    assert scheduler.timesteps.tolist() == pytest.approx(sigmas + [0.1])  # 3 levels and the denoising step
    x, s = torch.tensor([[0.3, -0.2]]), torch.tensor([[1.5, 2.0]])
    eta, gamma = 0.008 / 0.1**2, 1 / 0.1**0.5
    beta = math.sqrt(1 - (gamma * (1 - eta)) ** 2)
    out = scheduler.step(s, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(0)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    # alpha_1 = epsilon sigma_1^2 / sigma_L^2; x + alpha_1 s + beta sigma_2 z
    torch.testing.assert_close(out, x + 0.008 / 0.01 * s + beta * sigmas[1] * z)
    scheduler.step(s, scheduler.timesteps[1], x)
    out = scheduler.step(s, scheduler.timesteps[2], x).prev_sample  # sigma_{L+1} = 0: no noise
    torch.testing.assert_close(out, x + 0.008 * s)
    out = scheduler.step(s, scheduler.timesteps[3], x).prev_sample
    torch.testing.assert_close(out, x + 0.01 * s)


def test_consistent_noise_level_equals_the_conditioning_sigma():
    # Data = a point at 0: x at noise level sigma is N(0, sigma^2 I) and the score is -x / sigma^2. Algorithm 2's
    # promise: the chain's std after step i is exactly sigma_{i+1}, the sigma the model sees next.
    scheduler = ConsistentAnnealedSamplingScheduler(sigma_max=5.0, sigma_min=0.05, final_denoise=False)
    scheduler.set_timesteps(12)
    model = ImageMixtureScoreModel([[0.0] * 64], [1.0], std=0.0, sample_size=8, in_channels=1)
    generator = torch.Generator().manual_seed(0)
    x = scheduler.initial_sample((512, 1, 8, 8), generator=generator) - 0.5  # centred at 0, std sigma_1
    sigmas = scheduler.timesteps.tolist()
    for i, t in enumerate(scheduler.timesteps[:-1]):
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
        assert x.std().item() == pytest.approx(sigmas[i + 1], rel=0.02)


def test_consistent_annealed_sampling_recovers_the_mixture():
    weight, var_left, var_right, model = sample_mixture(ConsistentAnnealedSamplingScheduler(**VE), 50)
    assert_samples_the_mixture(weight, var_left, var_right)
    assert model.calls == 50


def test_consistent_epsilon_window_follows_the_ladder():
    scheduler = ConsistentAnnealedSamplingScheduler(sigma_max=1.0, sigma_min=0.1, num_noise_levels=3)
    # gamma = sqrt(10): epsilon must lie in sigma_L^2 (1 -/+ 1/gamma) = (0.00684, 0.0132)
    with pytest.raises(ValueError, match=r"must lie in \(0.006838, 0.01316\)"):
        scheduler.set_timesteps(epsilon=0.005)
    with pytest.raises(ValueError, match="must lie in"):
        ConsistentAnnealedSamplingScheduler(sigma_max=1.0, sigma_min=0.1, num_noise_levels=3, epsilon=0.02)
    for calls in (2, 3, 10, 200):  # the default fits every ladder
        scheduler.set_timesteps(calls)
    # another scheduler's epsilon (annealed Langevin's 2e-5) is not carried over
    assert ConsistentAnnealedSamplingScheduler.from_config(AnnealedLangevinScheduler().config).config.epsilon is None


# EDM's stochastic sampler (Karras et al., 2022, Algorithm 2)


def test_stochastic_heun_steps_by_hand():
    scheduler = StochasticHeunScheduler(sigma_max=2.0, sigma_min=0.5, rho=1.0, s_churn=0.3, s_tmin=0.0, s_noise=1.1)
    scheduler.set_timesteps(5)  # N = 3 levels t = 2, 1.25, 0.5 (rho = 1: evenly spaced), then 0
    gamma = 0.3 / 3  # S_churn / N, below the sqrt(2) - 1 cap; none at the first level
    t = [2.0, 1.25, 0.5, 0.0]
    t_hat = [2.0, (1 + gamma) * 1.25, (1 + gamma) * 0.5]
    assert scheduler.timesteps.tolist() == pytest.approx([t_hat[0], t[1], t_hat[1], t[2], t_hat[2]])
    x, s = torch.tensor([[0.3, -0.2, 0.5]]), torch.tensor([[1.5, 2.0, -1.0]])
    x1, s1 = torch.tensor([[0.1, 0.4, -0.3]]), torch.tensor([[-0.5, 0.25, 1.0]])
    ts = scheduler.timesteps

    # Euler half at t^_0: d = (x - D) / t^ with D = x + t^2 s, to x + (t_1 - t^_0) d
    out = scheduler.step(s, ts[0], x)
    d = (x - (x + t_hat[0] ** 2 * s)) / t_hat[0]
    torch.testing.assert_close(out.prev_sample, x + (t[1] - t_hat[0]) * d)
    torch.testing.assert_close(out.pred_original_sample, x + t_hat[0] ** 2 * s)
    # Heun correction at the Euler point x1, t_1: the mean slope from x^_0, then level 1's churn
    out = scheduler.step(s1, ts[1], x1, generator=torch.Generator().manual_seed(0)).prev_sample
    d1 = (x1 - (x1 + t[1] ** 2 * s1)) / t[1]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    churn = math.sqrt(t_hat[1] ** 2 - t[1] ** 2) * 1.1
    torch.testing.assert_close(out, x + (t[1] - t_hat[0]) * (d + d1) / 2 + churn * z)
    # the last level steps to t = 0 with Euler alone: Tweedie's D(x, t^_2)
    scheduler.step(s, ts[2], x)
    scheduler.step(s1, ts[3], x1)
    out = scheduler.step(s, ts[4], x).prev_sample
    torch.testing.assert_close(out, x + t_hat[2] ** 2 * s)


@pytest.mark.parametrize("calls, levels", [(1, 1), (2, 1), (35, 18), (50, 25)])
@pytest.mark.parametrize("gamma_max", [math.sqrt(2) - 1, 1.0])
def test_stochastic_heun_levels_and_churn_window(calls, levels, gamma_max):
    scheduler = StochasticHeunScheduler(
        sigma_max=80.0, sigma_min=0.002, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_gamma_max=gamma_max
    )
    scheduler.set_timesteps(calls)
    assert len(scheduler.timesteps) == 2 * levels - 1
    t = karras_sigmas(80.0, 0.002, levels, 7.0).tolist()
    gamma = min(40.0 / levels, gamma_max)
    expected = [t[0]]
    for t_i in t[1:]:
        expected += [t_i, t_i * (1 + gamma) if 0.05 <= t_i <= 50.0 else t_i]
    assert scheduler.timesteps.tolist() == pytest.approx(expected, rel=1e-6)


def test_stochastic_heun_is_second_order():
    # Deterministic (S_churn = 0) on a Gaussian N(0, c^2 I): the ODE's exact solution is
    # x(t) = x(t_0) sqrt(c^2 + t^2) / sqrt(c^2 + t_0^2). Halving the step size cuts Heun's error ~4x (Euler's ~2x).
    c, x0 = 0.5, torch.full((1, 1, 1, 1), 3.0)
    model = ImageMixtureScoreModel([[0.0]], [1.0], std=c)
    errors = []
    for calls in (9, 17, 33):
        scheduler = StochasticHeunScheduler(sigma_max=4.0, sigma_min=0.1, s_churn=0.0)
        scheduler.set_timesteps(calls)
        x = x0
        for ts in scheduler.timesteps[:-1]:  # stop at t_{N-1} = 0.1, before the final Euler step to 0
            x = scheduler.step(model(x, ts).sample, ts, x).prev_sample
        exact = x0 * math.sqrt(c**2 + 0.1**2) / math.sqrt(c**2 + 4.0**2)
        errors.append(abs(x - exact).item())
    assert errors[0] / errors[1] > 3.5 and errors[1] / errors[2] > 3.5


# With the churn, few levels over-disperse each mode (variance x1.3 at 25 calls, x1.1 at 49, -> 1 as calls grow):
# the noise added at each level is taken out by a single Heun step.
@pytest.mark.parametrize("s_churn, calls", [(0.0, 25), (80.0, 49)])
def test_stochastic_heun_recovers_the_mixture(s_churn, calls):
    scheduler = StochasticHeunScheduler(**VE, s_churn=s_churn)
    weight, var_left, var_right, model = sample_mixture(scheduler, calls)
    assert_samples_the_mixture(weight, var_left, var_right)
    assert model.calls == calls


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"s_churn": -1.0}, "s_churn=-1.0 must be a finite number >= 0"),
        ({"s_churn": float("nan")}, "s_churn=nan must be a finite number >= 0"),
        ({"s_tmax": -2.0}, "s_tmax=-2.0 must be a number >= 0"),
        ({"s_noise": 0.0}, "s_noise=0.0 must be a positive finite number"),
        ({"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmax=1.0 is below s_tmin=2.0"),
        ({"rho": 0.0}, "rho=0.0 must be a positive finite number"),
        ({"s_gamma_max": -0.5}, "s_gamma_max=-0.5 must be a positive finite number"),
    ],
)
def test_stochastic_heun_checks_its_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StochasticHeunScheduler(**kwargs)
    scheduler = StochasticHeunScheduler()
    per_call = {k: v for k, v in kwargs.items() if k in ("s_churn", "s_noise")}
    if per_call:
        with pytest.raises(ValueError, match=message):
            scheduler.set_timesteps(5, **per_call)


# diffusers' EDM solvers, used as they are, through the denoiser D(x, sigma) = x + sigma^2 s(x, sigma)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_denoiser_model_output_makes_precondition_outputs_return_the_denoiser(prediction_type, sigma_data):
    scheduler = EDMEulerScheduler(sigma_data=sigma_data, prediction_type=prediction_type)
    x, s = torch.randn(3, 4), torch.randn(3, 4)
    for sigma in (0.01, 1.0, 80.0):
        model_output = denoiser_model_output(scheduler, s, x, sigma)
        torch.testing.assert_close(scheduler.precondition_outputs(x, model_output, sigma), x + sigma**2 * s)


@pytest.mark.parametrize(
    "scheduler",
    [EDMEulerScheduler(sigma_min=0.01, sigma_max=8.0), EDMDPMSolverMultistepScheduler(sigma_min=0.01, sigma_max=8.0)],
    ids=["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"],
)
def test_edm_solvers_sample_a_score_model_in_ncsn_pipeline(scheduler):
    seen = []
    hook = lambda module, args, out: seen.append((args[0].std().item(), float(args[1])))  # noqa: E731
    weight, var_left, var_right, model = sample_mixture(scheduler, 20, forward_hook=hook)
    assert_samples_the_mixture(weight, var_left, var_right)
    assert model.calls == 20
    # the score model saw the real sigmas and the unscaled x (std ~ sigma_max at the start, not ~1)
    assert [sigma for _, sigma in seen] == pytest.approx(scheduler.sigmas[:-1].tolist())
    assert seen[0][0] == pytest.approx(math.sqrt(8.0**2 + 1), rel=0.05)


def test_edm_scheduler_with_another_prediction_type_names_the_fix():
    with pytest.raises(ValueError, match="keep its own 'epsilon'"):
        NCSNPipeline(mixture_model(2)[0], EDMEulerScheduler(prediction_type="sample"))


# Per-call overrides go through the constructor's checks


@pytest.mark.parametrize(
    "scheduler, kwargs, message",
    [
        (AnnealedLangevinScheduler(**VE), {"epsilon": 0.0}, "epsilon=0.0 must be a positive finite number"),
        (AnnealedLangevinScheduler(**VE), {"epsilon": float("nan")}, "epsilon=nan must be a positive finite number"),
        (AnnealedLangevinScheduler(**VE), {"epsilon": -1e-5}, "epsilon=-1e-05 must be a positive finite number"),
        (AnnealedLangevinScheduler(**VE), {"epsilon": 1.0}, "past the stability bound"),
        (AnnealedLangevinScheduler(**VE), {"steps_per_level": 0}, "steps_per_level=0 must be a positive integer"),
        (AnnealedLangevinScheduler(**VE), {"final_denoise": 1}, "final_denoise=1 must be True or False"),
        (AnnealedLangevinScheduler(**VE), {"snr": 0.1}, "AnnealedLangevinScheduler takes no per-call snr"),
        (PredictorCorrectorScheduler(**VE), {"snr": float("inf")}, "snr=inf must be a positive finite number"),
        (PredictorCorrectorScheduler(**VE), {"corrector_steps": -1}, "corrector_steps=-1 must be an integer >= 0"),
        (PredictorCorrectorScheduler(**VE), {"epsilon": 1e-5}, "PredictorCorrectorScheduler takes no per-call eps"),
        (PredictorCorrectorScheduler(**VE), {"predictor": "euler"}, "predictor='euler' is not supported"),
        (ConsistentAnnealedSamplingScheduler(**VE), {"epsilon": float("nan")}, "epsilon=nan must be a positive"),
        (StochasticHeunScheduler(**VE), {"snr": 0.16}, "StochasticHeunScheduler takes no per-call snr"),
        (EDMEulerScheduler(), {"final_denoise": True}, "EDMEulerScheduler takes no per-call final_denoise"),
    ],
)
def test_bad_per_call_overrides_are_clear_errors(scheduler, kwargs, message):
    pipe = NCSNPipeline(mixture_model(2)[0], scheduler)
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=4, **kwargs)


@pytest.mark.parametrize("cls", SCORE_SCHEDULERS)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma_max": float("inf")}, "sigma_max=inf must be a positive finite number"),
        ({"sigma_min": float("nan")}, "sigma_min=nan must be a positive finite number"),
        ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min=2.0 must be smaller than sigma_max=1.0"),
        ({"data_range": (1.0, -1.0)}, r"must be \(low, high\) with low < high"),
        ({"prediction_type": "noise"}, "prediction_type='noise' is not supported"),
        ({"num_noise_levels": 0}, "num_noise_levels=0 must be a positive integer"),
    ],
)
def test_every_scheduler_checks_its_config(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


# Contracts shared by the package's schedulers


@pytest.mark.parametrize(
    "cls", [PredictorCorrectorScheduler, ConsistentAnnealedSamplingScheduler, StochasticHeunScheduler]
)
def test_save_load_and_step_contracts(cls, tmp_path):
    scheduler = cls(**VE)
    scheduler.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    model, _ = mixture_model(16)
    runs = []
    for s in (scheduler, loaded, scheduler):
        pipe = NCSNPipeline(model, s)
        pipe.set_progress_bar_config(disable=True)
        runs.append(
            pipe(batch_size=3, num_inference_steps=9, generator=torch.Generator().manual_seed(0), output_type="pt")
        )
    assert torch.equal(runs[0].images, runs[1].images) and torch.equal(runs[0].images, runs[2].images)
    scheduler.set_timesteps(3)
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="is not in the schedule"):
        scheduler.step(x, 123.0, x)
    with pytest.raises(ValueError, match="model_output has shape"):
        scheduler.step(torch.zeros(2, 5), scheduler.timesteps[0], x)
    for t in scheduler.timesteps:
        out = scheduler.step(x, t, x.to(torch.bfloat16))
    assert out.prev_sample.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="have been taken"):
        scheduler.step(x, scheduler.timesteps[-1], x)
    noise, sigma = torch.randn(2, 4), torch.tensor([0.5, 2.0])
    torch.testing.assert_close(scheduler.add_noise(x, noise, sigma), sigma[:, None] * noise)


# The timestep check: a device timestep is compared on its device and read back rarely

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class ReadCountingTensor(torch.Tensor):
    """A tensor that records every read of its values on the host (`.item()`, `bool()`, `float()`, ...), and those of
    the tensors computed from it. On the CPU it reports itself on an accelerator, a device whose reads synchronise, so
    that the scheduler takes the path it takes for CUDA timesteps; its data stay on the CPU."""

    reads: list = []  # the names of the reads, in order

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in HOST_READS:
            cls.reads.append(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})

    @property
    def device(self):
        real = super().device
        return torch.device("privateuseone") if real.type == "cpu" else real


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("cls", SCORE_SCHEDULERS)
def test_device_timesteps_are_checked_without_a_read_per_step(cls, device):
    """Bug caught: a host read of the timestep at every step (a device synchronisation per step); and a wrong device
    timestep passing unnoticed."""
    ReadCountingTensor.reads.clear()
    scheduler = cls(**VE)
    scheduler.set_timesteps(20)
    # not the scheduler's own entries: compared by value, on the device
    timesteps = scheduler.timesteps.to(device).as_subclass(ReadCountingTensor)
    assert scheduler.timesteps.device.type == "cpu" and timesteps.device.type != "cpu"
    x = torch.ones(2, 4, device=device)
    steps_that_read = []
    for i, t in enumerate(timesteps):
        reads_before = len(ReadCountingTensor.reads)
        x = scheduler.step(x, t, x).prev_sample
        if len(ReadCountingTensor.reads) > reads_before:
            steps_that_read.append(i)
    # the timestep record, read back at steps 1, 2, 4, ... and after the last step; not at every step
    assert steps_that_read == [1, 2, 4, 8, 16, len(timesteps) - 1]

    scheduler.set_timesteps(20)
    for i, t in enumerate(timesteps[:8]):
        scheduler.step(x, timesteps[3] if i == 5 else t, x)  # a wrong timestep at step 5 ...
    with pytest.raises(ValueError, match="passed to step 5 .* checked on the device by step 8"):
        scheduler.step(x, timesteps[8], x)  # ... fails at the next read, step 8


@pytest.mark.parametrize(
    "cls", [PredictorCorrectorScheduler, ConsistentAnnealedSamplingScheduler, StochasticHeunScheduler]
)
def test_pipeline_with_each_sampler_saves_and_loads(cls, tmp_path):
    torch.manual_seed(0)
    pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), cls(**VE))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"][1] == cls.__name__
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is cls
    for p in (pipe, loaded):
        p.set_progress_bar_config(disable=True)
    a, b = (
        p(batch_size=2, num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="pt")
        for p in (pipe, loaded)
    )
    assert torch.equal(a.images, b.images)
