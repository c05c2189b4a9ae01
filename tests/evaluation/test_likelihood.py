"""The likelihood of a score model through its probability-flow ODE, against closed forms: Gaussians, a mixture, a
uniform box, the VP-to-VE map of an exact DDPM epsilon model, and the encode / decode round trip."""

import json
import math

import pytest
import torch
from analytic_models import GaussianEpsilonModel, ImageMixtureScoreModel
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers import (
    NCSNPipeline,
    NCSNRefineNet,
    NCSNUNet2DModel,
    PredictorCorrectorScheduler,
    bits_per_dim_offset,
    log_likelihood,
)
from ncsn_diffusers.evaluation.__main__ import main
from ncsn_diffusers.evaluation.bits_per_dim import gaussian_bits_per_dim
from ncsn_diffusers.likelihood import dequantize
from ncsn_diffusers.probability_flow import (
    decode,
    draw_probes,
    encode,
    exact_divergence,
    flow_for,
    hutchinson_divergence,
    vp_sigma,
)
from ncsn_diffusers.schedulers.noise_ladders import ddpm_alphas_cumprod
from ncsn_diffusers.training.toy import mixture_log_prob

SHAPE = (1, 2, 2)  # D = 4: the exact trace is 4 vector-Jacobian products
DIM = 4
SIGMA_MIN, SIGMA_MAX = 0.01, 50.0


def gaussian_log_prob(x: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).double()
    return -0.5 * ((flat - mean) ** 2 / var + math.log(2 * math.pi * var)).sum(1)


def gaussian_model(mean: float, std: float) -> ImageMixtureScoreModel:
    return ImageMixtureScoreModel(means=[[mean] * DIM], weights=[1.0], std=std, sample_size=2)


class UniformBoxScoreModel(ModelMixin, ConfigMixin):
    """The exact score of U[low, high]^D perturbed by N(0, sigma^2 I): per coordinate d/dx log(Phi(b) - Phi(a)) with
    a = (low - x) / sigma, b = (high - x) / sigma."""

    @register_to_config
    def __init__(self, low: float, high: float):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1), persistent=False)

    def forward(self, sample, sigma, return_dict=True):
        x = sample.double()
        a, b = (self.config.low - x) / sigma, (self.config.high - x) / sigma
        normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), 1.0)
        mass = torch.special.ndtr(b) - torch.special.ndtr(a)
        score = (normal.log_prob(a).exp() - normal.log_prob(b).exp()) / (sigma * mass)
        return UNet2DOutput(sample=score.to(sample.dtype))


def test_gaussian_log_likelihood_is_exact_with_the_exact_trace():
    # catches a wrong sign or factor of sigma in the drift or the divergence term, and a wrong prior log-density
    mean, std = 0.5, 0.1  # the prior's mean is the data range's centre, and std^2 / sigma_max^2 = 4e-6: no bias
    x = mean + std * torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(0))
    out = log_likelihood(gaussian_model(mean, std), x, SIGMA_MIN, SIGMA_MAX, trace="exact")
    expected = gaussian_log_prob(x, mean, std**2 + SIGMA_MIN**2)
    assert torch.allclose(out.log_prob, expected, atol=1e-3 * DIM)
    assert out.nfe > 10 and out.log_prob.shape == (6,)


def test_mixture_log_likelihood_is_the_exact_mixture_density():
    # catches a divergence computed for the wrong coordinate or the wrong image (the batched exact trace's indexing)
    # the mixture's mean is the prior's, 0.5: a mean offset m would bias log p by O(m / sigma_max) per dim
    means = [[0.15, 0.15, 0.85, 0.71], [0.65, 0.65, 0.35, 0.41]]
    weights, std = [0.3, 0.7], 0.05
    model = ImageMixtureScoreModel(means=means, weights=weights, std=std, sample_size=2)
    g = torch.Generator().manual_seed(1)
    component = (torch.rand(8, generator=g) < 0.7).long()
    x = torch.tensor(means)[component] + std * torch.randn(8, DIM, generator=g)
    out = log_likelihood(model, x.reshape(8, *SHAPE), SIGMA_MIN, SIGMA_MAX, trace="exact")
    expected = mixture_log_prob(x.double(), SIGMA_MIN, means, weights, std)
    assert torch.allclose(out.log_prob, expected, atol=1e-3 * DIM)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_the_exact_trace(probe):
    # catches probes without unit second moment (e.g. {0, 1} bits) and a probe reused across coordinates
    model = ImageMixtureScoreModel(means=[[0.2] * DIM, [0.8] * DIM], weights=[0.5, 0.5], std=0.2, sample_size=2)
    score = flow_for(model, SIGMA_MIN, SIGMA_MAX)[0].score
    x = torch.tensor([[0.45, 0.5, 0.55, 0.6]]).reshape(1, *SHAPE)  # between the modes: a non-diagonal Jacobian
    exact = exact_divergence(score, x, 0.1)
    copies = x.repeat(20000, 1, 1, 1)
    probes = draw_probes(copies.shape, probe, torch.Generator().manual_seed(0), "cpu")
    _, estimates = hutchinson_divergence(score, copies, 0.1, probes)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact[0]) < 4 * standard_error
    assert standard_error < 0.05 * abs(exact[0])  # the test has power


def test_hutchinson_log_likelihood_matches_the_gaussian_on_average():
    # catches a probe redrawn at every evaluation (RK45 then fails to converge) and the estimator's mean drifting
    mean, std = 0.5, 0.1
    x = mean + std * torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    out = log_likelihood(gaussian_model(mean, std), x, SIGMA_MIN, SIGMA_MAX, trace="hutchinson", generator=g)
    error = out.log_prob - gaussian_log_prob(x, mean, std**2 + SIGMA_MIN**2)
    assert abs(error.mean()) < 4 * error.std() / 8 + 1e-3


def test_uniform_data_on_k_levels_gives_log2_k_bits_per_dim():
    # catches score_sde's offset (log2 of K / range instead of (K - 1) / range: 0.42 bits off at K = 4)
    low, high, levels = -1.0, 1.0, 4
    delta = (high - low) / (levels - 1)
    model = UniformBoxScoreModel(low=low - delta / 2, high=high + delta / 2)  # the union of the K bins
    g = torch.Generator().manual_seed(4)
    u = torch.randint(0, levels, (32, *SHAPE), generator=g).float() / (levels - 1)  # the levels, in [0, 1]
    out = log_likelihood(
        model, u, 1e-4, SIGMA_MAX, data_range=(low, high), num_levels=levels, trace="exact", generator=g
    )
    assert abs(out.bits_per_dim.mean().item() - math.log2(levels)) < 5e-3


def test_dequantization_fills_each_level_bin():
    # catches noise of the wrong width or off-centre (the offset assumes bins of width Delta centred on the levels)
    x = torch.full((20000,), 0.5)
    noise = dequantize(x, (0.0, 1.0), 5, torch.Generator().manual_seed(8)) - 0.5  # Delta = 0.25
    assert noise.min() >= -0.125 and noise.max() < 0.125
    assert abs(noise.mean()) < 0.003 and noise.var().item() == pytest.approx(0.25**2 / 12, rel=0.03)


def test_bits_per_dim_offset_for_any_range_and_depth():
    # catches the hard-coded 8 (or 7) of score_sde for other ranges and depths
    assert bits_per_dim_offset((0.0, 1.0), 17) == pytest.approx(4.0)
    assert bits_per_dim_offset((0.0, 1.0), 256) == pytest.approx(math.log2(255))
    assert bits_per_dim_offset((-1.0, 1.0), 256) == pytest.approx(math.log2(255) - 1)
    with pytest.raises(ValueError, match="num_levels"):
        bits_per_dim_offset((0.0, 1.0), 1)


@pytest.mark.parametrize(
    "beta_start, beta_end, steps",
    [(1e-4, 0.02, 1000), (0.05, 0.2, 100)],  # DDPM's schedule; one with abar_0 = 0.95, where the Jacobian shows
)
def test_vp_epsilon_model_gives_the_exact_vp_density(beta_start, beta_end, steps):
    # catches a missing Jacobian of x_VE = x / sqrt(abar_0) (0.026 nats/dim at abar_0 = 0.95)
    alphas_cumprod = ddpm_alphas_cumprod(steps, beta_start, beta_end, "linear")
    mean, std = 0.2, 0.3
    model = GaussianEpsilonModel(mean=mean, std=std, alphas_cumprod=alphas_cumprod.tolist())
    x = mean + std * torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(5))
    out = log_likelihood(model, (x + 1) / 2, trace="exact", alphas_cumprod=alphas_cumprod, data_range=(-1.0, 1.0))
    abar0 = alphas_cumprod[0].item()
    # the density of u = (x + 1) / 2 on [0, 1]^D is 2^D that of x
    expected = gaussian_log_prob(x, abar0**0.5 * mean, abar0 * std**2 + 1 - abar0) + DIM * math.log(2)
    assert torch.allclose(out.log_prob, expected, atol=1e-3 * DIM)


def test_vp_and_ve_paths_agree_on_gaussian_data():
    # catches the VP path differing from the VE one: the same data, the DDPM schedule's sigma_min = 0.01
    alphas_cumprod = ddpm_alphas_cumprod(1000, 1e-4, 0.02, "linear")
    mean, std = 0.0, 0.3  # VP prior N(0, I), VE prior N(0, sigma_max^2 I): both centred on the data
    x = mean + std * torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(6))
    vp_model = GaussianEpsilonModel(mean=mean, std=std, alphas_cumprod=alphas_cumprod.tolist())
    u = (x + 1) / 2  # the images' coordinates; both models live in [-1, 1]
    vp = log_likelihood(vp_model, u, trace="exact", alphas_cumprod=alphas_cumprod)
    sigma_min, sigma_max = vp_sigma(alphas_cumprod, 0).item(), vp_sigma(alphas_cumprod, 999).item()
    ve = log_likelihood(gaussian_model(mean, std), u, sigma_min, sigma_max, data_range=(-1.0, 1.0), trace="exact")
    assert torch.allclose(vp.log_prob, ve.log_prob, atol=1e-3 * DIM)


def test_encode_follows_the_gaussian_flow_and_decode_inverts_it():
    # catches a drift of the wrong size (the latents of N(mean, s^2) are mean + (x - mean) sqrt((s^2 + sigma_max^2) /
    # (s^2 + sigma_min^2))) and a decode that does not retrace encode
    mean, std = 0.5, 0.1
    flow = flow_for(gaussian_model(mean, std), SIGMA_MIN, SIGMA_MAX, (0.0, 1.0))[0]
    x = mean + std * torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(7))
    latents = encode(flow, x)
    scale = math.sqrt((std**2 + SIGMA_MAX**2) / (std**2 + SIGMA_MIN**2))
    assert torch.allclose(latents, mean + (x - mean) * scale, rtol=1e-3, atol=1e-3)
    assert (decode(flow, latents) - x).abs().max() < 1e-3


def test_encode_decode_round_trip_on_a_mixture_with_heun():
    # catches the fixed-step solver integrating the wrong direction or skipping a level
    means = [[0.2] * DIM, [0.8] * DIM]
    model = ImageMixtureScoreModel(means=means, weights=[0.5, 0.5], std=0.05, sample_size=2)
    flow = flow_for(model, SIGMA_MIN, SIGMA_MAX, (0.0, 1.0))[0]
    x = torch.tensor(means)[torch.tensor([0, 1, 1])].reshape(3, *SHAPE) + 0.03
    back = decode(flow, encode(flow, x, solver="heun", num_steps=200), solver="heun", num_steps=200)
    assert (back - x).abs().max() < 1e-3


def test_ncsn_v1_refinenet_is_refused():
    # catches the ODE evaluating a discrete-level network between its levels (its nearest embedding, silently)
    model = NCSNRefineNet(sample_size=8, in_channels=1, base_channels=4, num_noise_levels=5)
    with pytest.raises(ValueError, match="NCSNRefineNet .*every sigma"):
        log_likelihood(model, torch.rand(1, 1, 8, 8), 0.01, 1.0)


def test_ddpm_unet_without_its_schedule_is_refused():
    from tiny_models import tiny_ddpm_unet

    with pytest.raises(ValueError, match="alphas_cumprod"):
        log_likelihood(tiny_ddpm_unet(), torch.rand(1, 1, 8, 8))


def test_gaussian_reference_density_gives_the_gaussian_entropy():
    # catches a reference density scored with another offset or in nats: N(0, s^2 I) data score its entropy per dim
    std, offset = 0.2, 3.0
    g = torch.Generator().manual_seed(9)
    train, test = std * torch.randn(20000, 1, 2, 2, generator=g), std * torch.randn(20000, 1, 2, 2, generator=g)
    entropy_bits = 0.5 * math.log2(2 * math.pi * math.e * std**2)
    for diagonal in (False, True):
        bpd = gaussian_bits_per_dim(train, test, offset, diagonal)
        assert bpd.mean().item() == pytest.approx(entropy_bits + offset, abs=0.01)


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    torch.manual_seed(0)
    scheduler = PredictorCorrectorScheduler(sigma_max=5.0, sigma_min=0.05, num_noise_levels=10, data_range=(-1, 1))
    path = tmp_path_factory.mktemp("likelihood") / "pipe"
    NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8).eval(), scheduler).save_pretrained(path)
    return str(path)


def test_bpd_command_end_to_end_on_a_saved_pipeline(tiny_pipeline_dir, tmp_path, capsys):
    # catches the command scoring something other than the held-out digits at the model's size and range: the
    # references are real densities of those digits (a full Gaussian beats a diagonal one, both beat uniform)
    path = tmp_path / "bpd.json"
    argv = ["--metric", "bpd", "--pipeline", tiny_pipeline_dir, "--num_samples", "6", "--batch_size", "3"]
    main([*argv, "--rtol", "1e-2", "--json", str(path)])
    results = json.loads(path.read_text())
    assert results["num_images"] == 6 and results["resolution"] == 8
    assert results["offset"] == pytest.approx(4.0)  # 17 levels over [0, 1]: Delta = 1 / 16
    assert len(results["model"]["nfe_per_batch"]) == 2 and math.isfinite(results["model"]["bits_per_dim"])
    assert results["model"]["standard_error"] > 0
    refs = [results[name]["bits_per_dim"] for name in ("gaussian", "diagonal_gaussian", "uniform")]
    assert 0 < refs[0] < refs[1] < refs[2] == pytest.approx(math.log2(17))
    assert "held-out digits at 8x8" in capsys.readouterr().out


def test_bpd_command_needs_a_pipeline():
    with pytest.raises(ValueError, match="--pipeline DIR"):
        main(["--metric", "bpd", "--samples", "x.npy"])


def test_log_likelihood_of_saved_pipelines_reads_their_schedulers(tiny_pipeline_dir):
    # catches a pipeline's sigma range or DDPM schedule not reaching the flow (the VE run would need sigma_min /
    # sigma_max, the DDPM one alphas_cumprod)
    from diffusers import DDPMPipeline, DDPMScheduler
    from tiny_models import tiny_ddpm_unet

    pipe = NCSNPipeline.from_pretrained(tiny_pipeline_dir)
    images = torch.randint(0, 17, (2, 1, 8, 8), generator=torch.Generator().manual_seed(10)) / 16  # 17 levels
    ve = log_likelihood(pipe, images, num_levels=17, solver="heun", num_steps=4, generator=torch.Generator())
    assert ve.nfe == 8 and torch.isfinite(ve.bits_per_dim).all()
    ddpm = DDPMPipeline(unet=tiny_ddpm_unet(), scheduler=DDPMScheduler(num_train_timesteps=50))
    vp = log_likelihood(ddpm, images, solver="heun", num_steps=4, generator=torch.Generator())
    assert vp.nfe == 8 and torch.isfinite(vp.log_prob).all() and vp.latents.shape == images.shape


def test_encode_through_a_saved_pipeline_uses_its_scheduler_sigma_range(tiny_pipeline_dir):
    # catches encode / decode of a pipeline not reading sigma_min / sigma_max from its scheduler (5 and 0.05 here)
    pipe = NCSNPipeline.from_pretrained(tiny_pipeline_dir)
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(11)) * 2 - 1
    latents = encode(pipe, images, solver="heun", num_steps=10)
    explicit = encode(pipe.unet, images, 0.05, 5.0, solver="heun", num_steps=10)
    assert (latents - images).abs().max() > 0.1  # the ODE moved them: the comparison has power
    assert torch.equal(latents, explicit)
    assert torch.equal(
        decode(pipe, latents, solver="heun", num_steps=10),
        decode(pipe.unet, latents, 0.05, 5.0, solver="heun", num_steps=10),
    )


def test_a_pipeline_saved_with_ddim_has_the_flow_of_its_ddpm_schedule(tmp_path):
    # catches the flow of an epsilon pipeline depending on which DDPM-family scheduler it ships: train_ncsn.py
    # --objective epsilon saves DDIMScheduler, and its likelihood must be that of the DDPM schedule's ODE
    from diffusers import DDIMScheduler, DDPMScheduler
    from tiny_models import tiny_ddpm_unet

    unet = tiny_ddpm_unet().eval()
    NCSNPipeline(unet, DDIMScheduler(num_train_timesteps=50), default_num_inference_steps=10).save_pretrained(tmp_path)
    saved = NCSNPipeline.from_pretrained(tmp_path)
    images = torch.randint(0, 17, (2, 1, 8, 8), generator=torch.Generator().manual_seed(12)) / 16  # 17 levels
    kwargs = {"num_levels": 17, "solver": "heun", "num_steps": 4}
    ddim = log_likelihood(saved, images, generator=torch.Generator().manual_seed(0), **kwargs)
    ddpm = log_likelihood(
        NCSNPipeline(unet, DDPMScheduler(num_train_timesteps=50)), images, generator=torch.Generator().manual_seed(0),
        **kwargs,
    )  # fmt: skip
    assert torch.isfinite(ddim.bits_per_dim).all() and torch.allclose(ddim.log_prob, ddpm.log_prob, atol=1e-4)
