"""Consistency distillation against exact answers: the Gaussian consistency function through diffusers' unmodified
`ConsistencyModelPipeline`, and a distilled 2-D mixture against its exact probability-flow ODE map."""

import math

import pytest
import torch
import torch.nn as nn
from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ncsn_diffusers import NCSNUNet2DModel
from ncsn_diffusers.schedulers.noise_ladders import karras_sigmas
from ncsn_diffusers.training.consistency_distillation import (
    consistency_function,
    consistency_pipeline,
    distance,
    distill,
    heun_step,
    student_from_teacher,
    teacher_denoiser,
)

MU, S, SIGMA_MIN, SIGMA_MAX, SIGMA_DATA, N = 0.5, 0.15, 0.002, 2.0, 0.5, 10


def gaussian_consistency(x: torch.Tensor, sigma, mu=MU, s=S, sigma_min=SIGMA_MIN) -> torch.Tensor:
    """The exact consistency function of N(mu, s^2 I): f(x, sigma) = mu + (x - mu) sqrt((s^2 + sigma_min^2) /
    (s^2 + sigma^2)), the probability-flow ODE of the VE process run from sigma to sigma_min."""
    return mu + (x - mu) * ((s**2 + sigma_min**2) / (s**2 + sigma**2)) ** 0.5


class GaussianConsistencyModel(ModelMixin, ConfigMixin):
    """F such that c_skip x + c_out F = the exact f(x, sigma), read off the inputs the pipeline gives a `UNet2DModel`
    (x / sqrt(sigma^2 + sigma_data^2) and the timestep 250 log sigma)."""

    @register_to_config
    def __init__(self, sample_size: int = 8, in_channels: int = 1, num_class_embeds=None, sigma_data=SIGMA_DATA):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1), persistent=False)  # gives the model a dtype and device
        self.scheduler = CMStochasticIterativeScheduler(
            sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA
        )

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        sigma = torch.exp(torch.as_tensor(timestep, dtype=torch.float64) / 250).float().expand(sample.shape[0])
        sigma_4d = sigma.reshape(-1, 1, 1, 1)
        x = sample * (sigma_4d**2 + SIGMA_DATA**2) ** 0.5
        c_skip, c_out = (c.reshape(-1, 1, 1, 1) for c in self.scheduler.get_scalings_for_boundary_condition(sigma))
        return ((gaussian_consistency(x, sigma_4d) - c_skip * x) / c_out,)


def r(sigma):
    return math.sqrt((S**2 + SIGMA_MIN**2) / (S**2 + sigma**2))


@pytest.fixture()
def gaussian_pipeline():
    scheduler = CMStochasticIterativeScheduler(
        num_train_timesteps=N, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA
    )
    pipe = ConsistencyModelPipeline(unet=GaussianConsistencyModel(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_moments(pipe, num_inference_steps):
    images = pipe(batch_size=1000, num_inference_steps=num_inference_steps, output_type="pt").images  # in [0, 1]
    x = images.double() * 2 - 1
    return x.mean().item(), x.var().item(), x.numel()


def test_one_call_samples_are_the_exact_gaussian_law(gaussian_pipeline):
    # Catches a wrong c_skip / c_out / c_in / timestep convention between the training parameterisation and diffusers'
    # pipeline: 1-call samples f(sigma_max z, sigma_max) are N(mu (1 - r), r^2 sigma_max^2).
    torch.manual_seed(0)
    mean, var, n = pipeline_moments(gaussian_pipeline, 1)
    r1 = r(SIGMA_MAX)
    expected_std = r1 * SIGMA_MAX
    assert abs(mean - MU * (1 - r1)) < 4 * expected_std / math.sqrt(n)
    assert abs(var - expected_std**2) < 4 * expected_std**2 * math.sqrt(2 / n)


def test_two_call_samples_follow_the_closed_form(gaussian_pipeline):
    # Two calls: x1 = f(x_T, sigma_max), x1 + sqrt(t^2 - sigma_min^2) z, then f at t, where t is the Karras level
    # index N // 2 (what `set_timesteps(2)` picks): mean mu (1 - r1 r2), variance r2^2 (r1^2 sigma_max^2 + t^2 -
    # sigma_min^2). Catches a wrong reading of the pipeline's second level or of its re-noising.
    torch.manual_seed(1)
    mean, var, n = pipeline_moments(gaussian_pipeline, 2)
    t = karras_sigmas(SIGMA_MAX, SIGMA_MIN, N).float()[N // 2].item()
    r1, r2 = r(SIGMA_MAX), r(t)
    expected_var = r2**2 * (r1**2 * SIGMA_MAX**2 + t**2 - SIGMA_MIN**2)
    assert abs(mean - MU * (1 - r1 * r2)) < 4 * math.sqrt(expected_var / n)
    assert abs(var - expected_var) < 4 * expected_var * math.sqrt(2 / n)
    # and the 1-call mean is measurably different, so the test tells the two schedules apart
    assert abs(MU * (1 - r1) - MU * (1 - r1 * r2)) > 8 * math.sqrt(expected_var / n)


def test_consistency_function_is_the_pipelines_parameterisation():
    # The function trained on is the one diffusers samples: with the Gaussian model, `consistency_function` gives the
    # exact f at every level, and f(x, sigma_min) = x (the boundary condition). Catches a c_in or timestep mismatch.
    model, scheduler = (
        GaussianConsistencyModel(),
        CMStochasticIterativeScheduler(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA),
    )
    x = torch.randn(6, 1, 8, 8)
    sigma = torch.tensor([2.0, 1.0, 0.5, 0.1, 0.01, 0.003])
    expected = gaussian_consistency(x, sigma.reshape(-1, 1, 1, 1))
    torch.testing.assert_close(consistency_function(model, scheduler, x, sigma), expected, rtol=1e-4, atol=1e-5)
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition(torch.tensor(SIGMA_MIN))
    assert c_skip.item() == 1.0 and c_out.item() == 0.0


def test_heun_step_has_third_order_local_error_on_a_gaussian_teacher():
    # For N(mu, s^2) data the ODE solution from t to t' is mu + (x - mu) sqrt((s^2 + t'^2) / (s^2 + t^2)). Heun's
    # local error falls like h^3 (8x per halving; Euler's like h^2, 4x). Catches an Euler step, a wrong sign or the
    # second slope taken at the wrong sigma.
    def denoiser(x, sigma):
        return MU + S**2 / (S**2 + sigma.reshape(-1, 1) ** 2) * (x - MU)

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def error(t, t_next):
        exact = MU + (x - MU) * math.sqrt((S**2 + t_next**2) / (S**2 + t**2))
        full = torch.full((4,), t, dtype=torch.float64), torch.full((4,), t_next, dtype=torch.float64)
        return (heun_step(denoiser, x, *full) - exact).abs().max().item()

    assert error(0.3, 0.26) < 1e-3
    assert error(0.3, 0.26) / error(0.3, 0.28) > 7
    assert error(0.3, 0.28) / error(0.3, 0.29) > 7


def test_teacher_denoiser_converts_a_unit_range_teacher():
    # A [0, 1] teacher of N(m, s^2) is the [-1, 1] Gaussian N(2 m - 1, (2 s)^2) seen at sigma / 2: both give one
    # denoiser. Catches silent mis-scaling of a `--recipe` teacher.
    m, s = 0.6, 0.1

    def gaussian_score(mean, std):
        def score(y, sigma, return_dict=False):
            return (-(y - mean) / (std**2 + sigma.reshape(-1, 1) ** 2),)

        return score

    x, sigma = torch.randn(5, 2, dtype=torch.float64), torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    converted = teacher_denoiser(gaussian_score(m, s), data_range=(0.0, 1.0))(x, sigma)
    native = teacher_denoiser(gaussian_score(2 * m - 1, 2 * s))(x, sigma)
    torch.testing.assert_close(converted, native)
    with pytest.raises(ValueError, match="data range"):
        teacher_denoiser(gaussian_score(m, s), data_range=(0.0, 255.0))


def test_distances():
    a, b = torch.zeros(2, 4), torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(distance(a, b, "l2"), torch.tensor([0.0, 1.0]))
    c = 0.00054 * 2
    torch.testing.assert_close(distance(a, b, "pseudo_huber"), torch.tensor([0.0, math.sqrt(4 + c**2) - c]))
    with pytest.raises(ValueError, match="distance"):
        distance(a, b, "lpips")


# --- distillation of a 2-D mixture with its exact score -------------------------------------------------------------

MEANS, WEIGHTS, STD = torch.tensor([[-0.6, -0.6], [0.6, 0.6]]), torch.tensor([0.2, 0.8]), 0.1
TOY_SIGMA_MAX, TOY_N = 4.0, 18


class ExactMixtureScore(nn.Module):
    """The score of sum_k w_k N(mu_k, s^2 I) * N(0, sigma^2 I), one sigma per sample."""

    def forward(self, x, sigma, return_dict=False):
        var = STD**2 + sigma.reshape(-1, 1) ** 2  # (B, 1)
        diff = x[:, None, :] - MEANS[None]  # (B, K, D)
        logits = WEIGHTS.log()[None] - diff.pow(2).sum(-1) / (2 * var)  # equal variances: no normaliser needed
        return (-(torch.softmax(logits, 1)[..., None] * diff).sum(1) / var,)


class TinyConsistencyMLP(nn.Module):
    """F(x_in, 250 log sigma) for points (B, 2)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)
        )

    def forward(self, sample, timestep, return_dict=False):
        log_sigma = (timestep / 250).reshape(-1, 1).to(sample.dtype)
        return (self.net(torch.cat([sample, log_sigma / 4], dim=1)),)


def exact_ode_map(x, denoiser, num_steps=400):
    sigmas = karras_sigmas(TOY_SIGMA_MAX, 0.002, num_steps).float()
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        x = heun_step(denoiser, x, t.expand(x.shape[0]), t_next.expand(x.shape[0]))
    return x


def test_distilled_mixture_matches_the_exact_ode_map_and_keeps_the_weights():
    # Catches a target on the wrong level, a missing stop-gradient/EMA or a teacher step in the wrong direction: each
    # leaves the 1-call map far from the ODE's (or collapses the 0.2 / 0.8 weights, which only the ODE keeps).
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    denoiser = teacher_denoiser(ExactMixtureScore())
    scheduler = CMStochasticIterativeScheduler(
        num_train_timesteps=TOY_N, sigma_min=0.002, sigma_max=TOY_SIGMA_MAX, sigma_data=0.5
    )
    component = (torch.rand(4096, generator=generator) > 0.2).long()
    data = MEANS[component] + STD * torch.randn(4096, 2, generator=generator)
    student = distill(
        TinyConsistencyMLP(),
        denoiser,
        scheduler,
        data,
        num_steps=1500,
        batch_size=256,
        learning_rate=2e-3,
        ema_rate=0.95,
        generator=generator,
    )
    x_T = TOY_SIGMA_MAX * torch.randn(2000, 2, generator=generator)
    with torch.no_grad():
        one_call = consistency_function(student, scheduler, x_T, torch.full((2000,), TOY_SIGMA_MAX))
    ode = exact_ode_map(x_T, denoiser)
    error = (one_call - ode).norm(dim=1)
    assert error.median() < 0.05, error.median()  # measured 0.023; the modes are 1.7 apart, each of std 0.1
    share_first, ode_share_first = ((x.sum(1) < 0).double().mean().item() for x in (one_call, ode))
    assert abs(share_first - 0.2) < 0.04, share_first  # 4.5 binomial standard errors at n = 2000
    assert abs(share_first - ode_share_first) < 0.01, (share_first, ode_share_first)  # measured: 0.228 and 0.229


def test_student_is_a_stock_unet_that_diffusers_alone_loads(tmp_path):
    # The export contract: a `ConsistencyModelPipeline` folder of a stock `UNet2DModel` and
    # `CMStochasticIterativeScheduler` that loads with diffusers' classes alone and samples identically after the round
    # trip. Catches a student that is not stock diffusers or a config that does not survive saving.
    teacher = NCSNUNet2DModel.from_preset("tiny")
    student = student_from_teacher(teacher)
    teacher_state = teacher.state_dict()
    copied = {k for k, v in student.state_dict().items() if k in teacher_state and torch.equal(v, teacher_state[k])}
    # every weight but the embedding MLP's first layer (Fourier features of log sigma against sinusoids)
    assert set(student.state_dict()) - copied == {"time_embedding.linear_1.weight"}
    pipe = consistency_pipeline(student, 0.02, 8.0, 0.5, 18)
    pipe.save_pretrained(tmp_path)
    loaded = ConsistencyModelPipeline.from_pretrained(tmp_path)
    assert type(loaded.unet).__module__.startswith("diffusers.")
    for steps in (1, 2):
        a = pipe(batch_size=2, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt")
        b = loaded(
            batch_size=2, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt"
        )
        torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)


def test_refuses_a_teacher_it_cannot_map():
    with pytest.raises(ValueError, match="NCSNUNet2DModel"):
        student_from_teacher(nn.Linear(2, 2))
