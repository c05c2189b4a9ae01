import math

import numpy as np
import pytest
import torch
from analytic_models import ImageMixtureEpsilonModel, ImageMixtureScoreModel
from diffusers import (
    DDPMPipeline,
    DDPMScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
)

from ncsn_diffusers import AnnealedLangevinScheduler

MIXTURE_MEANS = [[-5.0, -5.0], [5.0, 5.0]]
MIXTURE_WEIGHTS = [0.2, 0.8]


def run_chain(scheduler, model, num_samples, seed=0, shape=(2,), **set_timesteps_kwargs):
    """The loop every diffusers pipeline runs, written out."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(**set_timesteps_kwargs)
    x = scheduler.initial_sample((num_samples, *shape), generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
    return x


def drift_coefficients(scheduler, shape=(1, 1), **set_timesteps_kwargs):
    """c * alpha_i of every model call, read off public steps: half the difference of steps taken with the scores +1
    and -1 from the same x and the same noise."""
    outputs = []
    for sign in (1.0, -1.0):
        scheduler.set_timesteps(**set_timesteps_kwargs)
        generator = torch.Generator().manual_seed(0)
        x = torch.zeros(shape)
        outputs.append(
            [
                scheduler.step(torch.full(shape, sign), t, x, generator=generator).prev_sample
                for t in scheduler.timesteps
            ]
        )
    return [((a - b) / 2).mean().item() for a, b in zip(*outputs)]


def mode_statistics(x):
    in_left_mode = x[:, 0] < 0
    return in_left_mode.float().mean().item(), x[in_left_mode].var(0), x[~in_left_mode].var(0)


# Algorithm 1 and its conventions


def test_defaults_are_the_papers_v1_settings():
    scheduler = AnnealedLangevinScheduler()
    config = scheduler.config
    assert (config.sigma_max, config.sigma_min, config.num_noise_levels, config.steps_per_level) == (
        1.0,
        0.01,
        10,
        100,
    )
    assert config.epsilon == 2e-5 and config.langevin_convention == "official"
    assert scheduler.data_range == (0.0, 1.0)
    # geometric: sigma_i = sigma_1 * (sigma_L / sigma_1) ** ((i - 1) / (L - 1))
    expected = [0.01 ** (i / 9) for i in range(10)]
    torch.testing.assert_close(scheduler.sigmas, torch.tensor(expected), rtol=1e-6, atol=0)
    scheduler.set_timesteps()
    assert len(scheduler.timesteps) == 1000
    torch.testing.assert_close(scheduler.timesteps[::100], scheduler.sigmas)


def test_default_scheduler_is_the_official_v1_sampler():
    # The loop of ermongroup/ncsn's `anneal_Langevin_dynamics` (runners/anneal_runner.py), transcribed with its
    # published settings (sigmas = exp(linspace(log 1, log 0.01, 10)), n_steps_each = 100, step_lr = 2e-5) and fed the
    # same noise: AnnealedLangevinScheduler() must follow the same trajectory.
    model = ImageMixtureScoreModel([[0.2, 0.2], [0.7, 0.7]], [0.2, 0.8], std=0.05)
    sigmas = np.exp(np.linspace(np.log(1.0), np.log(0.01), 10))
    generator = torch.Generator().manual_seed(0)
    x_mod = torch.rand(64, 2, generator=generator)
    x = x_mod.clone()
    for sigma in sigmas:
        step_size = 2e-5 * (sigma / sigmas[-1]) ** 2
        for _ in range(100):
            noise = torch.randn(x_mod.shape, generator=generator) * np.sqrt(step_size * 2)
            grad = model(x_mod, float(sigma)).sample
            x_mod = x_mod + step_size * grad + noise
    generator.manual_seed(0)
    torch.rand(64, 2, generator=generator)
    scheduler = AnnealedLangevinScheduler()
    scheduler.set_timesteps()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
    assert (x - x_mod).abs().max().item() < 1e-6  # measured: 1.2e-7, float32 rounding


@pytest.mark.parametrize("convention, drift, noise", [("official", 1.0, 2.0), ("paper", 0.5, 1.0)])
def test_one_step_by_hand(convention, drift, noise):
    scheduler = AnnealedLangevinScheduler(
        sigma_max=1.0,
        sigma_min=0.1,
        num_noise_levels=2,
        steps_per_level=1,
        epsilon=1e-3,
        langevin_convention=convention,
    )
    scheduler.set_timesteps()
    x = torch.tensor([[0.3, -0.2]])
    score = torch.tensor([[1.5, 2.0]])
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    out = scheduler.step(score, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(7))
    alpha_1 = 1e-3 * 1.0**2 / 0.1**2  # epsilon * sigma_1^2 / sigma_L^2 = 0.1
    # official: x + alpha s + sqrt(2 alpha) z; paper: x + alpha/2 s + sqrt(alpha) z
    expected = x + drift * alpha_1 * score + math.sqrt(noise * alpha_1) * z
    torch.testing.assert_close(out.prev_sample, expected)
    torch.testing.assert_close(out.pred_original_sample, x + 1.0**2 * score)  # Tweedie at sigma_1


@pytest.mark.parametrize(
    "prediction_type, output_of",
    [
        ("score", lambda s, x, sigma: s),
        ("epsilon", lambda s, x, sigma: -sigma * s),  # epsilon = -sigma * score
        ("sample", lambda s, x, sigma: x + sigma**2 * s),  # x0_hat = x + sigma^2 score
    ],
)
def test_prediction_types_agree(prediction_type, output_of):
    kwargs = dict(sigma_max=2.0, sigma_min=0.5, num_noise_levels=3, steps_per_level=2, epsilon=0.01)
    reference, other = (
        AnnealedLangevinScheduler(**kwargs),
        AnnealedLangevinScheduler(prediction_type=prediction_type, **kwargs),
    )
    reference.set_timesteps()
    other.set_timesteps()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    score = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    t = reference.timesteps[0]
    a = reference.step(score, t, x, generator=torch.Generator().manual_seed(2)).prev_sample
    b = other.step(output_of(score, x, t.item()), t, x, generator=torch.Generator().manual_seed(2)).prev_sample
    torch.testing.assert_close(a, b)


def test_final_denoise_is_tweedie_at_sigma_L():
    scheduler = AnnealedLangevinScheduler(num_noise_levels=2, steps_per_level=1, final_denoise=True)
    scheduler.set_timesteps()
    assert len(scheduler.timesteps) == 3 and scheduler.timesteps[-1].item() == pytest.approx(0.01)
    x, score = torch.ones(1, 4), torch.full((1, 4), 3.0)
    for t in scheduler.timesteps[:-1]:
        scheduler.step(score, t, x)
    out = scheduler.step(score, scheduler.timesteps[-1], x)
    torch.testing.assert_close(out.prev_sample, x + 0.01**2 * score)


@pytest.mark.parametrize(
    "num_inference_steps, final_denoise, steps, num_levels",
    [
        (None, False, [100] * 10, 10),
        (25, False, [3] * 5 + [2] * 5, 10),
        (26, True, [3] * 5 + [2] * 5, 10),
        (4, False, [1] * 4, 4),
    ],
)
def test_num_inference_steps_is_the_number_of_model_calls(num_inference_steps, final_denoise, steps, num_levels):
    scheduler = AnnealedLangevinScheduler(final_denoise=final_denoise)
    scheduler.set_timesteps(num_inference_steps)
    calls = sum(steps) + int(final_denoise)
    assert len(scheduler.timesteps) == calls
    assert len(set(scheduler.timesteps.tolist())) == num_levels
    assert scheduler.timesteps[0].item() == pytest.approx(1.0) and scheduler.timesteps[-1].item() == pytest.approx(
        0.01
    )
    counts = [scheduler.timesteps.tolist().count(s) for s in dict.fromkeys(scheduler.timesteps.tolist())]
    assert counts[:-1] + [counts[-1] - int(final_denoise)] == steps


def test_set_timesteps_overrides_apply_to_one_run_only():
    scheduler = AnnealedLangevinScheduler()
    drift = drift_coefficients(scheduler, steps_per_level=3, final_denoise=True, epsilon=1e-5)
    assert len(scheduler.timesteps) == 31
    assert drift[-2] == pytest.approx(1e-5, rel=1e-4)  # alpha_L = epsilon
    assert drift[-1] == pytest.approx(0.01**2, rel=1e-4)  # the denoising step: x + sigma_L^2 s
    assert drift_coefficients(scheduler)[-1] == pytest.approx(2e-5, rel=1e-4)
    scheduler.set_timesteps()
    assert len(scheduler.timesteps) == 1000 and scheduler.config.steps_per_level == 100


# The paper's mixing experiment, with exact scores


def test_annealed_langevin_recovers_mixture_weights_at_the_papers_toy_settings():
    # Song & Ermon (2019), Sec. 3.2 / Fig. 3: sigma 20 -> 1, L = 10, T = 100, epsilon = 0.1, uniform start.
    scheduler = AnnealedLangevinScheduler(
        sigma_max=20.0, sigma_min=1.0, epsilon=0.1, initial_distribution="uniform", data_range=(-8.0, 8.0)
    )
    model = ImageMixtureScoreModel(MIXTURE_MEANS, MIXTURE_WEIGHTS)
    weight, var_left, var_right = mode_statistics(run_chain(scheduler, model, 4096))
    assert weight == pytest.approx(0.2, abs=0.03)
    # the chain samples the mixture perturbed at sigma_L = 1: per-mode variance 1 + sigma_L^2 = 2
    torch.testing.assert_close(var_left, torch.full((2,), 2.0), rtol=0.12, atol=0)
    torch.testing.assert_close(var_right, torch.full((2,), 2.0), rtol=0.12, atol=0)
    assert model.calls == 1000


def test_annealed_langevin_recovers_unit_variance_modes_at_small_sigma_L():
    scheduler = AnnealedLangevinScheduler(
        sigma_max=20.0, sigma_min=0.1, epsilon=1e-3, initial_distribution="uniform", data_range=(-8.0, 8.0)
    )
    weight, var_left, var_right = mode_statistics(
        run_chain(scheduler, ImageMixtureScoreModel(MIXTURE_MEANS, MIXTURE_WEIGHTS), 4096)
    )
    assert weight == pytest.approx(0.2, abs=0.03)
    torch.testing.assert_close(var_left, torch.ones(2), rtol=0.15, atol=0)
    torch.testing.assert_close(var_right, torch.ones(2), rtol=0.15, atol=0)


def test_single_level_langevin_with_the_data_score_misses_the_weights():
    # L = 1: plain Langevin dynamics at sigma_min. The score ignores the weights between separated modes.
    scheduler = AnnealedLangevinScheduler(
        sigma_max=20.0,
        sigma_min=0.1,
        num_noise_levels=1,
        steps_per_level=1000,
        epsilon=1e-3,
        initial_distribution="uniform",
        data_range=(-8.0, 8.0),
    )
    weight, _, _ = mode_statistics(run_chain(scheduler, ImageMixtureScoreModel(MIXTURE_MEANS, MIXTURE_WEIGHTS), 4096))
    assert abs(weight - 0.2) > 0.2


# DDPM (VP) coordinates: the swap into stock DDPMPipeline


def template_mixture_model(scheduler_config):
    templates = torch.zeros(2, 1, 4, 4)
    templates[0, :, :2], templates[0, :, 2:] = 0.5, -0.5
    templates[1] = -templates[0]
    alphas_cumprod = DDPMScheduler.from_config(scheduler_config).alphas_cumprod.double().tolist()
    model = ImageMixtureEpsilonModel(templates.tolist(), MIXTURE_WEIGHTS, 0.1, 4, 1, alphas_cumprod)
    return model, templates.flatten(1)


SQUAREDCOS_BETAS = DDPMScheduler(beta_schedule="squaredcos_cap_v2").betas.tolist()
DDPM_CONFIGS = {
    "linear": DDPMScheduler().config,
    "scaled_linear": DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config,
    "squaredcos_cap_v2": DDPMScheduler(beta_schedule="squaredcos_cap_v2").config,
    "trained_betas": DDPMScheduler(trained_betas=SQUAREDCOS_BETAS).config,
    "EulerDiscreteScheduler": EulerDiscreteScheduler(beta_schedule="scaled_linear").config,
}


@pytest.mark.parametrize("scheduler_kind", ["ddpm", *DDPM_CONFIGS])
def test_swap_into_ddpm_pipeline_samples_the_mixture(scheduler_kind):
    # The VP step is relative (alpha_i = 0.2 sigma_i^2 whatever sigma_L the betas give): every schedule samples the
    # mixture. With an absolute epsilon = 2e-5, scaled_linear betas (sigma_L = 0.029) took an 8.5x too small step and
    # came out 29% too spread.
    config = DDPM_CONFIGS.get(scheduler_kind, DDPMScheduler().config)
    model, templates = template_mixture_model(config)
    if scheduler_kind == "ddpm":
        scheduler = DDPMScheduler.from_config(config)
    else:
        scheduler = AnnealedLangevinScheduler.from_config(config)
        assert scheduler.config.final_denoise and scheduler.config.relative_epsilon == 0.2
    pipe = DDPMPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    # "np": DDPMPipeline returns tensors for "pt" only from diffusers 0.41 on; (B, H, W, C), a single channel here.
    images = pipe(batch_size=2048, generator=torch.Generator().manual_seed(0), output_type="np").images
    x = (torch.from_numpy(images) * 2 - 1).flatten(1)
    nearest = torch.cdist(x, templates).argmin(1)
    assert (nearest == 0).float().mean().item() == pytest.approx(0.2, abs=0.03)
    # per-mode std: s = 0.1 (the final denoising step leaves no noise, as DDPM's own sampler)
    assert (x - templates[nearest]).std().item() == pytest.approx(0.1, rel=0.1)
    assert model.calls == 1000


@pytest.mark.parametrize("edm_scheduler", [EDMEulerScheduler, EDMDPMSolverMultistepScheduler])
def test_from_config_of_an_edm_scheduler_samples_the_mixture(edm_scheduler):
    # EDM's sigma 80 -> 0.002 in VE coordinates; with an absolute epsilon = 2e-5 it failed the stability check.
    scheduler = AnnealedLangevinScheduler.from_config(edm_scheduler().config, prediction_type="score")
    assert (scheduler.config.sigma_max, scheduler.config.sigma_min, scheduler.config.noise_space) == (80, 0.002, "ve")
    model = ImageMixtureScoreModel(MIXTURE_MEANS, MIXTURE_WEIGHTS)
    weight, var_left, var_right = mode_statistics(run_chain(scheduler, model, 4096))
    assert weight == pytest.approx(0.2, abs=0.03)
    torch.testing.assert_close(var_left, torch.ones(2), rtol=0.1, atol=0)
    torch.testing.assert_close(var_right, torch.ones(2), rtol=0.1, atol=0)
    assert model.calls == 1000


def test_from_config_of_a_fresh_and_a_saved_ddpm_scheduler(tmp_path):
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(tmp_path)
    for source, schedule, prediction in [
        (DDPMScheduler().config, "linear", "epsilon"),
        (DDPMScheduler.load_config(tmp_path), "squaredcos_cap_v2", "v_prediction"),
    ]:
        scheduler = AnnealedLangevinScheduler.from_config(source)
        assert scheduler.config.noise_space == "vp"
        assert scheduler.config.beta_schedule == schedule and scheduler.config.prediction_type == prediction
        torch.testing.assert_close(scheduler.alphas_cumprod, DDPMScheduler.from_config(source).alphas_cumprod)
        scheduler.set_timesteps(1000)  # as DDPMPipeline calls it
        assert scheduler.timesteps.dtype == torch.long and len(scheduler.timesteps) == 1000
        assert scheduler.timesteps[0] == 999 and scheduler.timesteps[-1] == 0
        # sigma_i = sqrt(1 - alphabar_{t_i}) and alpha_i proportional to it squared
        torch.testing.assert_close(scheduler.sigmas, (1 - scheduler.alphas_cumprod[scheduler.level_timesteps]).sqrt())
        as_score = AnnealedLangevinScheduler.from_config(source, prediction_type="score")
        drift = drift_coefficients(as_score, num_inference_steps=4, final_denoise=False)
        sigmas = (1 - scheduler.alphas_cumprod[as_score.timesteps]).sqrt()
        # alpha_i = epsilon sigma_i^2 / sigma_L^2, epsilon = 0.2 sigma_L^2 (relative step): alpha_i = 0.2 sigma_i^2
        torch.testing.assert_close(torch.tensor(drift), 0.2 * sigmas**2, rtol=1e-3, atol=0)
    assert DDPMScheduler in AnnealedLangevinScheduler().compatibles


def test_vp_epsilon_to_score_conversion():
    scheduler = AnnealedLangevinScheduler.from_config(DDPMScheduler().config, num_noise_levels=2, steps_per_level=1)
    scheduler.set_timesteps()
    t = scheduler.timesteps[1]
    abar = scheduler.alphas_cumprod[t]
    x, eps = torch.randn(2, 5), torch.randn(2, 5)
    out = scheduler.step(eps, scheduler.timesteps[0], x)  # advance to the second level
    out = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(3))
    score = -eps / (1 - abar).sqrt()
    z = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    alpha = 2e-5 * (1 - abar) / (1 - abar)  # the last level is sigma_L
    torch.testing.assert_close(out.prev_sample, x + alpha * score + (2 * alpha).sqrt() * z)
    torch.testing.assert_close(out.pred_original_sample, (x - (1 - abar).sqrt() * eps) / abar.sqrt())


def test_add_noise_in_both_coordinates():
    x, z = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sigmas = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(
        AnnealedLangevinScheduler().add_noise(x, z, sigmas), x + sigmas[:, None, None, None] * z
    )
    ddpm = DDPMScheduler()
    ours = AnnealedLangevinScheduler.from_config(ddpm.config)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(ours.add_noise(x, z, t), ddpm.add_noise(x, z, t))


def test_initial_distributions():
    shape, g = (20000, 1), torch.Generator
    gaussian = AnnealedLangevinScheduler(sigma_max=3.0).initial_sample(shape, generator=g().manual_seed(0))
    assert gaussian.mean().item() == pytest.approx(0.5, abs=0.05) and gaussian.std().item() == pytest.approx(
        3.0, rel=0.02
    )
    uniform = AnnealedLangevinScheduler(initial_distribution="uniform", data_range=(-1.0, 1.0))
    u = uniform.initial_sample(shape, generator=g().manual_seed(0))
    assert u.min() >= -1 and u.max() <= 1 and u.var().item() == pytest.approx(1 / 3, rel=0.03)  # var of U(-1, 1)
    vp = AnnealedLangevinScheduler.from_config(DDPMScheduler().config)
    assert vp.init_noise_sigma == 1.0 and vp.initial_sample(
        shape, generator=g().manual_seed(0)
    ).std() == pytest.approx(1, rel=0.02)


# Contracts


def test_save_load_round_trip_gives_identical_steps(tmp_path):
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, final_denoise=True)
    scheduler.save_pretrained(tmp_path / "scheduler")
    loaded = AnnealedLangevinScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(scheduler.config)
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    model = ImageMixtureScoreModel([[0.0] * 4], [1.0])
    a = run_chain(scheduler, model, 8, shape=(4,), num_inference_steps=20)
    b = run_chain(loaded, model, 8, shape=(4,), num_inference_steps=20)
    assert torch.equal(a, b)


def test_same_generator_same_samples_and_return_dict():
    scheduler = AnnealedLangevinScheduler()
    model = ImageMixtureScoreModel([[0.0] * 4], [1.0])
    a = run_chain(scheduler, model, 8, shape=(4,), num_inference_steps=30)
    b = run_chain(scheduler, model, 8, shape=(4,), num_inference_steps=30)
    c = run_chain(scheduler, model, 8, shape=(4,), seed=1, num_inference_steps=30)
    assert torch.equal(a, b) and not torch.equal(a, c)
    scheduler.set_timesteps(2)
    x = torch.randn(2, 4)
    t = scheduler.timesteps[0]
    as_tuple = scheduler.step(x, t, x, generator=torch.Generator().manual_seed(0), return_dict=False)
    scheduler.set_timesteps(2)
    as_output = scheduler.step(x, t, x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(as_tuple[0], as_output.prev_sample) and torch.equal(as_tuple[1], as_output.pred_original_sample)
    # The output behaves as every diffusers BaseOutput: keys in field order, integer and string indexing, to_tuple.
    assert list(as_output.keys()) == ["prev_sample", "pred_original_sample"]
    assert as_output[1] is as_output["pred_original_sample"] is as_output.pred_original_sample
    assert all(a is b for a, b in zip(as_output.to_tuple(), (as_output.prev_sample, as_output.pred_original_sample)))


def test_half_precision_samples_are_stepped_in_float32():
    scheduler = AnnealedLangevinScheduler(num_noise_levels=2, steps_per_level=1)
    scheduler.set_timesteps()
    x = torch.randn(2, 8).to(torch.bfloat16)
    out = scheduler.step(torch.ones_like(x), scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    alpha_1 = 2e-5 * 1.0**2 / 0.01**2
    expected = x.float() + alpha_1 * 1.0 + math.sqrt(2 * alpha_1) * z
    assert out.prev_sample.dtype == torch.bfloat16
    torch.testing.assert_close(out.prev_sample, expected.to(torch.bfloat16))


def test_interface_constants():
    scheduler = AnnealedLangevinScheduler()
    assert scheduler.order == 1 and len(scheduler) == 1000
    x = torch.randn(2, 3)
    assert scheduler.scale_model_input(x, 0.5) is x


# Bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma_min=1.0, sigma_max=0.5), "sigma_min=1.0 must be smaller than sigma_max=0.5"),
        (dict(sigma_min=-0.1), "sigma_min=-0.1 must be a positive finite number"),
        (dict(sigma_max=float("inf")), "sigma_max=inf must be a positive finite number"),
        (dict(epsilon=0.0), "epsilon=0.0 must be a positive finite number"),
        (dict(epsilon=float("nan")), "epsilon=nan must be a positive finite number"),
        (dict(epsilon=-1e-5), "epsilon=-1e-05 must be a positive finite number"),
        (dict(relative_epsilon=2.0), "past the stability bound"),
        (dict(final_denoise="yes"), "final_denoise='yes' must be True or False"),
        (dict(data_range=(1.0, float("nan"))), "must be (low, high) with low < high"),
        (dict(num_noise_levels=0), "num_noise_levels=0 must be a positive integer"),
        (dict(steps_per_level=-3), "steps_per_level=-3 must be a positive integer"),
        (dict(prediction_type="v_prediction"), "prediction_type='v_prediction' is not supported"),
        (dict(prediction_type="noise"), "prediction_type='noise' is not supported"),
        (dict(epsilon=2e-4), "past the stability bound"),
        (dict(langevin_convention="mine"), "langevin_convention='mine'"),
        (dict(noise_space="vp", beta_schedule="cubic"), "beta_schedule='cubic'"),
    ],
)
def test_bad_config_names_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AnnealedLangevinScheduler(**kwargs)


def test_bad_step_calls():
    scheduler = AnnealedLangevinScheduler(num_noise_levels=2, steps_per_level=2)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="before `set_timesteps`"):
        scheduler.step(x, 1.0, x)
    scheduler.set_timesteps()
    with pytest.raises(ValueError, match="timestep 0.5 is not in the schedule"):
        scheduler.step(x, 0.5, x)
    with pytest.raises(ValueError, match="out of order"):
        scheduler.step(x, 0.01, x)
    with pytest.raises(ValueError, match="model_output has shape"):
        scheduler.step(torch.zeros(2, 4), scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match="leaves no Langevin step"):
        AnnealedLangevinScheduler(final_denoise=True).set_timesteps(1)


def test_non_finite_samples_warn_with_the_level():
    scheduler = AnnealedLangevinScheduler(num_noise_levels=2, steps_per_level=1)
    scheduler.set_timesteps()
    x = torch.full((1, 2), float("nan"))
    scheduler.step(x, scheduler.timesteps[0], x)
    with pytest.warns(RuntimeWarning, match="non-finite at noise level 1 of 2"):
        scheduler.step(x, scheduler.timesteps[1], x)
