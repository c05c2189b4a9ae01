import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ncsn_diffusers.training.toy import (
    TOY_MEANS,
    TOY_WEIGHTS,
    MixtureScoreModel,
    ToyScoreNet,
    mixture_log_prob,
    mixture_score,
    sample_mixture,
    train_toy_score_net,
)

REPO = Path(__file__).resolve().parents[2]


def reference_mixture(var: float) -> torch.distributions.Distribution:
    """p = 0.2 N((-5, -5), var I) + 0.8 N((5, 5), var I), built from torch.distributions alone."""
    means = torch.tensor(TOY_MEANS, dtype=torch.float64)
    components = torch.distributions.Independent(torch.distributions.Normal(means, var**0.5), 1)
    weights = torch.distributions.Categorical(torch.tensor(TOY_WEIGHTS, dtype=torch.float64))
    return torch.distributions.MixtureSameFamily(weights, components)


def autograd_score(distribution, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(distribution.log_prob(x).sum(), x)
    return grad


# Points near both modes, between them and in the far corners (where one responsibility underflows).
POINTS = torch.tensor(
    [[-5.0, -5.0], [5.0, 5.0], [0.0, 0.0], [-1.3, 2.7], [-8.0, 8.0], [8.0, -8.0], [-8.0, -8.0], [3.0, -6.5]],
    dtype=torch.float64,
)


def test_data_score_is_the_gradient_of_the_log_density():
    torch.testing.assert_close(mixture_log_prob(POINTS), reference_mixture(1.0).log_prob(POINTS))
    torch.testing.assert_close(mixture_score(POINTS), autograd_score(reference_mixture(1.0), POINTS))
    # at a mode the other component's responsibility is ~e^-50, so the score is ~0
    torch.testing.assert_close(mixture_score(POINTS[:2]), torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("sigma", [0.1, 1.0, 20.0])
def test_perturbed_score_is_the_mixture_score_with_variance_one_plus_sigma_squared(sigma):
    torch.testing.assert_close(mixture_score(POINTS, sigma), autograd_score(reference_mixture(1 + sigma**2), POINTS))


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_perturbed_score_is_the_score_of_the_convolution(sigma):
    # grad log (p_data * N(0, sigma^2 I))(x) = E[y - x | x] / sigma^2, the expectation over
    # y ~ p_data(y) N(x; y, sigma^2 I) computed by quadrature on a grid: no closed form involved.
    axis = torch.arange(-14.0, 14.0, 0.04, dtype=torch.float64)
    y = torch.cartesian_prod(axis, axis)  # (M, 2)
    log_p_data = reference_mixture(1.0).log_prob(y)
    x = POINTS[2:6]
    log_weights = log_p_data[None] - (x[:, None] - y[None]).pow(2).sum(-1) / (2 * sigma**2)  # (B, M)
    posterior = torch.softmax(log_weights, dim=1)
    expected = ((posterior[..., None] * y[None]).sum(1) - x) / sigma**2
    torch.testing.assert_close(mixture_score(x, sigma), expected, rtol=1e-6, atol=1e-6)


def test_sample_mixture_draws_the_weights_and_the_unit_variance_modes():
    x = sample_mixture(20000, generator=torch.Generator().manual_seed(0))
    left = x.sum(1) < 0
    assert left.float().mean().item() == pytest.approx(0.2, abs=0.01)  # std of the fraction: 0.003
    torch.testing.assert_close(x[left].mean(0), torch.tensor([-5.0, -5.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(x[~left].var(0), torch.ones(2), atol=0.05, rtol=0)
    same = sample_mixture(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, same)


def test_mixture_score_model_is_the_perturbed_score():
    model = MixtureScoreModel()
    x = POINTS.float()
    torch.testing.assert_close(model(x, torch.tensor(2.0)).sample, mixture_score(x, 2.0))
    torch.testing.assert_close(model(x, 2.0, return_dict=False)[0], mixture_score(x, 2.0))
    with pytest.raises(ValueError, match="weights="):
        MixtureScoreModel(weights=[0.5, 0.6])


def score_errors(model: ToyScoreNet, sigma: float) -> tuple[float, float]:
    """RMS of ||s_theta - grad log p_sigma|| on samples of p_data and on grid points where p_data < 1e-4."""
    on_data = sample_mixture(2000, generator=torch.Generator().manual_seed(123))
    axis = torch.linspace(-8, 8, 41)
    grid = torch.cartesian_prod(axis, axis)
    low_density = grid[mixture_log_prob(grid).exp() < 1e-4]
    with torch.no_grad():
        return tuple(
            (model(x, sigma).sample - mixture_score(x, sigma)).norm(dim=1).pow(2).mean().sqrt().item()
            for x in (on_data, low_density)
        )


def test_dsm_learns_the_score_where_the_data_is_and_not_in_low_density_regions():
    # Song & Ermon (2019), Sec. 3.2.1 / Fig. 2: DSM at one small sigma only sees samples near the modes.
    torch.manual_seed(0)
    model = ToyScoreNet(hidden_dim=64)
    high_before, _ = score_errors(model, 0.1)
    train_toy_score_net(model, 0.1, num_steps=400, generator=torch.Generator().manual_seed(0))
    high, low = score_errors(model, 0.1)
    # observed over seeds 0-5: high 0.25-0.44 (from 1.9-3.0 untrained), low 4.2-4.6; the true score there is ~7.6
    assert high < 0.7 and high < 0.4 * high_before
    assert low > 2.5 and low > 5 * high


def test_toy_score_net_contracts(tmp_path):
    torch.manual_seed(0)
    model = ToyScoreNet(hidden_dim=16, num_hidden_layers=2).eval()
    x = torch.randn(5, 2)
    with torch.no_grad():
        out = model(x, 0.5).sample
        torch.testing.assert_close(model(x, torch.full((5,), 0.5)).sample, out)
        torch.testing.assert_close(model(x, torch.tensor(0.5), return_dict=False)[0], out)
        # s_theta = F_theta(x, log sigma) / sigma
        torch.testing.assert_close(
            model(x, 0.25).sample * 0.25, model.net(torch.cat([x, torch.full((5, 1), 0.25).log()], 1))
        )
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ToyScoreNet.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, 0.5).sample, out)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(sigmas=[]), "sigmas=\\[\\]"), (dict(sigmas=-0.1), "sigmas="), (dict(num_steps=0), "num_steps=0")],
)
def test_train_toy_score_net_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_toy_score_net(ToyScoreNet(hidden_dim=4), **kwargs)


def test_paper_figures_command_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/paper_figures.py", "--output_dir", str(tmp_path), "--num_samples", "400"]
        + ["--train_steps", "50", "--seed", "1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    fractions = dict(re.findall(r"^(.+) samples: fraction in the left mode ([0-9.]+)", result.stdout, re.MULTILINE))
    # std of a fraction of 400 samples: ~0.02 (weight 0.2) and ~0.025 (weight 0.5)
    assert float(fractions["i.i.d."]) == pytest.approx(0.2, abs=0.1)
    assert float(fractions["annealed Langevin"]) == pytest.approx(0.2, abs=0.1)
    assert float(fractions["Langevin"]) > 0.35
    for name in ("figure_scores.png", "figure_mixing.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 500 and image.height > 300
