"""NCSNPosteriorPipeline's contract: bad input refused before any model call, the operators' adjoints, loading with
the task's sampler, a mixture's posterior component weights, and the noiseless limit that is inpainting."""

import pytest
import torch
from analytic_models import ImageMixtureScoreModel
from diffusers import EDMEulerScheduler
from diffusers.models.unets.unet_2d import UNet2DOutput
from gaussian_problems import DATA_RANGE, IMAGE_SHAPE, gaussian_problem

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    NCSNInpaintPipeline,
    NCSNPipeline,
    NCSNPosteriorPipeline,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)
from ncsn_diffusers.inverse import (
    METHODS,
    AveragePoolOperator,
    GaussianBlurOperator,
    IdentityOperator,
    MaskOperator,
    MatrixOperator,
    check_operator,
)

VE = dict(sigma_max=5.0, sigma_min=0.002, data_range=DATA_RANGE)
LANGEVIN = dict(sigma_max=5.0, sigma_min=0.01, data_range=DATA_RANGE, num_noise_levels=20, steps_per_level=50)
LANGEVIN.update(relative_epsilon=1.0, final_denoise=True)


class DeepinvLikePhysics:
    """What deepinv's LinearPhysics offers the pipeline: A and A_adjoint (here a 2x2 average pool)."""

    def A(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)

    def A_adjoint(self, y):
        return y.repeat_interleave(2, -2).repeat_interleave(2, -1) / 4


@pytest.mark.parametrize(
    "operator",
    [
        MatrixOperator.random(3, (1, 4, 4), torch.Generator().manual_seed(0)),
        MaskOperator.box((1, 4, 4), 1, 1, 2, 2),
        MaskOperator.random((1, 4, 4), 0.5, torch.Generator().manual_seed(0)),
        AveragePoolOperator(2),
        GaussianBlurOperator(1.0, (4, 4)),
        IdentityOperator(),
        DeepinvLikePhysics(),
    ],
    ids=["matrix", "box", "random_mask", "pool", "blur", "identity", "deepinv_like"],
)
def test_every_operator_passes_the_adjoint_check(operator):
    """<A x, v> = <x, A^T v>: the check the pipeline runs; its failure is tested below with a wrong adjoint."""
    check_operator(operator, (1, 4, 4))


def test_matrix_operator_has_spectral_norm_one():
    operator = MatrixOperator.random(2, IMAGE_SHAPE, torch.Generator().manual_seed(0))
    assert torch.linalg.matrix_norm(operator.matrix, ord=2).item() == pytest.approx(1.0, abs=1e-5)


class NoAdjoint:
    def A(self, x):
        return x


class WrongAdjoint(IdentityOperator):
    def A_adjoint(self, y):
        return 2 * y


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(measurement=torch.zeros(1, 3)), r"has shape \(1, 3\) but the operator maps one image to \(2,\)"),
        (dict(measurement=torch.tensor([[float("nan"), 0.0]])), "NaN"),
        (dict(noise_std=-0.1), "noise_std=-0.1 must be a finite number >= 0"),
        (dict(noise_std=float("nan")), "noise_std=nan"),
        (dict(operator=NoAdjoint()), "has no method A_adjoint"),
        (dict(operator=WrongAdjoint(), measurement=torch.zeros(1, 1, 2, 2)), "is not the adjoint"),
        (dict(method="pigdm"), r"method='pigdm' is not supported"),
        (dict(method="dps", dps_step_size=0.0), "dps_step_size"),
        (dict(cg_iterations=0), "cg_iterations=0"),
        (dict(generator=[torch.Generator()] * 3), "3 generators"),
    ],
)
def test_bad_input_is_refused_before_any_model_call(kwargs, message):
    problem = gaussian_problem(MatrixOperator.random(2, IMAGE_SHAPE, torch.Generator().manual_seed(3)), 0.05)
    pipe = NCSNPosteriorPipeline(problem.model, AnnealedLangevinScheduler(**LANGEVIN))
    call = dict(measurement=problem.y, operator=problem.operator, noise_std=0.05, num_inference_steps=2)
    with pytest.raises(ValueError, match=message):
        pipe(**{**call, **kwargs})
    assert problem.model.calls == 0


def test_one_measurement_without_batch_axis_and_several_samples_each():
    problem = gaussian_problem(MaskOperator.box(IMAGE_SHAPE, 0, 0, 1, 1), 0.05)
    pipe = NCSNPosteriorPipeline(problem.model, AnnealedLangevinScheduler(**LANGEVIN))
    pipe.set_progress_bar_config(disable=True)
    y = torch.stack([problem.y, problem.y])  # (2, 1, 2, 2)
    seen = []
    out = pipe(
        y,
        problem.operator,
        0.05,
        batch_size=3,
        num_inference_steps=4,
        output_type="np",
        callback_on_step_end=lambda p, i, t, kw: seen.append(i) or {},
    ).images
    assert out.shape == (6, 2, 2, 1) and seen == [0, 1, 2, 3]
    single = pipe(problem.y, problem.operator, 0.05, num_inference_steps=2, output_type="pt").images
    assert single.shape == (1, *IMAGE_SHAPE)


def test_loading_runs_the_task_sampler_unless_one_is_named(tmp_path):
    """Bug caught: inpainting and posterior calls running the sampler saved for unconditional sampling (the default
    run saves predictor-corrector, level with the trivial baseline on inpainting; docs/inpainting.md)."""
    torch.manual_seed(0)
    saved = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), PredictorCorrectorScheduler(**VE))
    saved.save_pretrained(tmp_path / "ncsn")
    for cls in (NCSNPosteriorPipeline, NCSNInpaintPipeline):
        for pipe in (cls.from_pretrained(tmp_path / "ncsn"), cls.from_pipe(saved)):
            assert isinstance(pipe.scheduler, AnnealedLangevinScheduler)
            config = pipe.scheduler.config
            assert (config.sigma_max, config.sigma_min, tuple(config.data_range)) == (5.0, 0.002, DATA_RANGE)
            assert (config.num_noise_levels, config.steps_per_level, config.final_denoise) == (10, 10, True)
        named = StochasticHeunScheduler(**VE)
        assert cls.from_pipe(saved, scheduler=named).scheduler is named
        assert isinstance(cls.from_pretrained(tmp_path / "ncsn", scheduler=named).scheduler, StochasticHeunScheduler)
    assert isinstance(saved.scheduler, PredictorCorrectorScheduler)  # the source pipeline keeps its own
    # a sampler saved with (or carried by) a conditional pipeline was chosen for the task: it is kept
    inpaint = NCSNInpaintPipeline.from_pipe(saved, scheduler=StochasticHeunScheduler(**VE))
    inpaint.save_pretrained(tmp_path / "inpaint")
    for cls in (NCSNPosteriorPipeline, NCSNInpaintPipeline):
        assert isinstance(cls.from_pretrained(tmp_path / "inpaint").scheduler, StochasticHeunScheduler)
        assert isinstance(cls.from_pipe(inpaint).scheduler, StochasticHeunScheduler)


# A two-component mixture of 1x2x2 images (image units), overlapping enough that the chains' last levels still mix
MIXTURE_MEANS = torch.tensor([[0.4, 0.6, 0.45, 0.6], [0.6, 0.4, 0.55, 0.45]], dtype=torch.float64)
MIXTURE_WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MIXTURE_STD = 0.06


def test_mixture_posterior_component_weights_match_the_closed_form():
    """P(k | y) = w_k N(y; A mu_k, s^2 A A^T + sigma_y^2 I) / sum_j ..., estimated as the mean over posterior samples
    of the responsibilities P(k | x) (k is independent of y given x). Measured: 0.274 against the closed form's 0.257
    (the prior alone: 0.310 against 0.30) for annealed Langevin with Jalal's likelihood. Bug caught: a likelihood term
    too weak or too strong to move the component weights."""
    operator = MatrixOperator.random(2, IMAGE_SHAPE, torch.Generator().manual_seed(3))
    matrix, sigma_y = operator.matrix.double(), 0.1
    y = matrix @ (0.4 * MIXTURE_MEANS[0] + 0.6 * MIXTURE_MEANS[1])
    covariance = MIXTURE_STD**2 * matrix @ matrix.T + sigma_y**2 * torch.eye(2, dtype=torch.float64)
    log_evidence = [torch.distributions.MultivariateNormal(matrix @ m, covariance).log_prob(y) for m in MIXTURE_MEANS]
    closed_form = torch.softmax(torch.stack(log_evidence) + MIXTURE_WEIGHTS.log(), 0)[0].item()
    assert closed_form == pytest.approx(0.257, abs=1e-3)

    model = ImageMixtureScoreModel((2 * MIXTURE_MEANS - 1).tolist(), MIXTURE_WEIGHTS.tolist(), std=2 * MIXTURE_STD)
    model.register_to_config(sample_size=2)
    pipe = NCSNPosteriorPipeline(model, AnnealedLangevinScheduler(**LANGEVIN))
    pipe.set_progress_bar_config(disable=True)
    x = pipe(
        y.float()[None], operator, sigma_y, method="langevin", batch_size=4000, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images.flatten(1).double()  # fmt: skip
    log_responsibility = -(torch.cdist(x, MIXTURE_MEANS) ** 2) / (2 * MIXTURE_STD**2) + MIXTURE_WEIGHTS.log()
    weight = torch.softmax(log_responsibility, 1)[:, 0].mean().item()
    assert weight == pytest.approx(closed_form, abs=0.03)


# The inpainting test's templates (tests/pipelines/test_pipeline_ncsn_inpaint.py): knowing A's top row, the bottom
# row is A's in 0.75 of the completions and A2's in the rest.
TEMPLATES = torch.tensor([[0.5, -0.5, 0.5, 0.5], [0.5, -0.5, -0.5, -0.5], [-0.5, 0.5, 0.5, -0.5]])


def test_noiseless_mask_reproduces_inpainting():
    """sigma_y -> 0 with a mask is noiseless inpainting. Bug caught: a likelihood that breaks down at sigma_y = 0."""
    model = ImageMixtureScoreModel(TEMPLATES.tolist(), [0.3, 0.1, 0.6], std=0.05, sample_size=2, in_channels=1)
    scheduler = AnnealedLangevinScheduler(
        sigma_max=2.0, sigma_min=0.05, num_noise_levels=10, steps_per_level=100, epsilon=2e-4, data_range=(-1.0, 1.0)
    )
    reference = (TEMPLATES[0].view(1, 1, 2, 2) + 1) / 2
    top_row = MaskOperator(torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
    pipe = NCSNPosteriorPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    samples = pipe(
        top_row.A(reference), top_row, 0.0, method="langevin", batch_size=1024, generator=generator, output_type="pt"
    ).images
    nearest = torch.cdist((samples * 2 - 1).flatten(1), TEMPLATES).argmin(1)
    # Jalal's likelihood is soft (variance gamma sigma_i^2 at sigma_y = 0) where inpainting clamps the known pixels:
    # a chain that chose B at high noise can stay between B and y (measured: 1 of 1,024)
    assert (nearest == 2).float().mean() < 0.005
    assert (nearest == 0).float().mean().item() == pytest.approx(0.75, abs=0.045)  # as NCSNInpaintPipeline's
    known_error = (samples[:, :, 0] - reference[:, :, 0]).abs().flatten(1).amax(1)
    assert known_error.quantile(0.99) < 0.1  # the known row, to within the chain's last sigma


def test_dps_stays_finite_as_the_measurement_noise_vanishes():
    """DPS's step is normalised by the residual's norm (Chung et al.'s zeta / ||y - A D||), so it does not depend on
    sigma_y. Bug caught: DPS weighing the residual by 1 / sigma_y**2, which diverges to NaN as sigma_y -> 0 (it did on
    the digits with the box mask and super-resolution)."""
    problem = gaussian_problem(MatrixOperator.random(2, IMAGE_SHAPE, torch.Generator().manual_seed(3)), 1e-4)
    pipe = NCSNPosteriorPipeline(problem.model, EDMEulerScheduler(sigma_min=0.002, sigma_max=5.0))
    pipe.set_progress_bar_config(disable=True)
    for noise_std in (1e-4, 0.0):
        samples = pipe(
            problem.y,
            problem.operator,
            noise_std,
            method="dps",
            batch_size=64,
            num_inference_steps=50,
            dps_step_size=0.01,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        residual = (problem.operator.A(samples) - problem.y).flatten(1).norm(dim=1)
        assert torch.isfinite(samples).all() and residual.median() < 0.05, residual.median()


def test_a_diverging_chain_fails_loudly_naming_the_method_and_step():
    """Bug caught: a chain gone non-finite handed back as NaN images (DPS on the digits did) instead of an error."""
    problem = gaussian_problem(MatrixOperator.random(2, IMAGE_SHAPE, torch.Generator().manual_seed(3)), 0.05)

    def nan_from_the_third_call(model, args, output):
        return UNet2DOutput(sample=output.sample * float("nan")) if model.calls >= 3 else output

    problem.model.register_forward_hook(nan_from_the_third_call)
    pipe = NCSNPosteriorPipeline(problem.model, EDMEulerScheduler(sigma_min=0.002, sigma_max=5.0))
    pipe.set_progress_bar_config(disable=True)
    for method in METHODS:
        problem.model.calls = 0
        with pytest.raises(FloatingPointError, match=rf"method='{method}' diverged: 4 of 4 chains .* after step 2 "):
            pipe(problem.y, problem.operator, 0.05, method=method, batch_size=4, num_inference_steps=10)
