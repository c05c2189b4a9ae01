"""Techniques 1, 2 and 4 of Song & Ermon (2020) against brute force, their own equations, published configs and a
Monte Carlo simulation of the Langevin chain."""

import inspect
import math

import pytest
import torch

from ncsn_diffusers.schedulers.ncsnv2_ladder_design import (
    gamma_overlap,
    langevin_variance_ratio,
    max_pairwise_distance,
    ncsnv2_hyperparameters,
    ncsnv2_scheduler_config,
    num_noise_levels,
    solve_epsilon,
    solve_gamma,
)


def _brute_force_max_distance(x):
    flat = x.reshape(x.shape[0], -1).double()
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").max().item()


def _random_data(n, seed=0, offset=0.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 3, 3, generator=generator) * 4.0 + offset


# --- Technique 1 -----------------------------------------------------------------------------------------------------


def test_max_pairwise_distance_hand_computed():
    data = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [2.0, 2.0]])
    assert max_pairwise_distance(data) == 5.0


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_max_pairwise_distance_equals_brute_force(offset):
    # A large offset would cost digits in ||a||^2 + ||b||^2 - 2ab without the centring.
    data = _random_data(120, offset=offset)
    assert max_pairwise_distance(data) == pytest.approx(_brute_force_max_distance(data), rel=1e-12)


def test_chunking_does_not_change_the_result():
    data = _random_data(57, seed=1)
    reference = max_pairwise_distance(data, chunk_size=1024)
    for chunk_size in (1, 2, 7, 56, 57):
        assert max_pairwise_distance(data, chunk_size=chunk_size) == reference


def test_subsampling_is_reproducible_and_a_lower_bound():
    data = _random_data(400, seed=2)
    full = max_pairwise_distance(data, max_points=None)
    runs = [max_pairwise_distance(data, max_points=30, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    again = max_pairwise_distance(data, max_points=30, generator=torch.Generator().manual_seed(0))
    assert again == runs[0]
    assert all(r <= full for r in runs)
    assert min(runs) < full  # 30 of 400 points rarely contain the extreme pair: the bound is really a subsample's
    assert max_pairwise_distance(data, max_points=400) == full


# --- Technique 2 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_dim", [5, 64, 784, 3072, 12288])
@pytest.mark.parametrize("C", [0.1, 0.5, 0.567, 0.9])
def test_solved_gamma_satisfies_the_equation(data_dim, C):
    gamma = solve_gamma(data_dim, C)
    assert gamma > 1.0
    assert abs(gamma_overlap(gamma, data_dim) - C) < 1e-9
    # the first crossing: slightly smaller ratios still overlap by more than C
    assert gamma_overlap(1.0 + 0.99 * (gamma - 1.0), data_dim) > C


def test_gamma_overlap_closed_form_at_one():
    # sqrt(2D)(gamma - 1) = 0 at gamma = 1, leaving Phi(3) - Phi(-3) = erf(3 / sqrt(2)).
    assert gamma_overlap(1.0, 3072) == pytest.approx(math.erf(3.0 / math.sqrt(2.0)), abs=1e-15)


@pytest.mark.parametrize(
    ("data_dim", "sigma_max", "published_levels"),
    [(32 * 32 * 3, 50.0, 232), (64 * 64 * 3, 90.0, 500)],  # CIFAR-10, CelebA 64x64 configs of NCSNv2
)
def test_published_ladders_follow_from_c(data_dim, sigma_max, published_levels):
    gamma = solve_gamma(data_dim, 0.567)
    raw_levels = 1.0 + math.log(sigma_max / 0.01) / math.log(gamma)
    assert abs(raw_levels - published_levels) < 0.05  # not a rounding accident
    assert num_noise_levels(sigma_max, 0.01, gamma) == published_levels


# --- Technique 4 -----------------------------------------------------------------------------------------------------


def test_variance_ratio_one_step_by_hand():
    # T = 1: v' = (1 - a)^2 gamma^2 sigma^2 + 2 a sigma^2 with a = eps / sigma_L^2.
    eps, sigma_min, gamma = 3e-5, 0.01, 1.2
    a = eps / sigma_min**2
    assert langevin_variance_ratio(eps, sigma_min, gamma, 1) == pytest.approx(
        (1 - a) ** 2 * gamma**2 + 2 * a, rel=1e-13
    )


@pytest.mark.parametrize(
    ("sigma_max", "levels", "published_eps", "tolerance"),
    [(50.0, 232, 6.2e-6, 0.06), (90.0, 500, 3.3e-6, 0.035)],  # CIFAR-10, CelebA 64x64 (T = 5)
)
def test_published_epsilons_minimise_the_ratio(sigma_max, levels, published_eps, tolerance):
    gamma = (sigma_max / 0.01) ** (1.0 / (levels - 1))
    eps = solve_epsilon(0.01, gamma, steps_per_level=5)
    assert float(f"{eps:.1e}") == published_eps
    best = langevin_variance_ratio(eps, 0.01, gamma, 5)
    published = langevin_variance_ratio(published_eps, 0.01, gamma, 5)
    assert 1.0 < best <= published < 1.0 + tolerance
    assert published - best < 1e-6
    for factor in (0.9, 1.1):
        assert langevin_variance_ratio(eps * factor, 0.01, gamma, 5) > best


def test_variance_ratio_never_reaches_one():
    gamma = 1.05
    for k in range(1, 400):
        eps = 2 * 0.01**2 * k / 400
        assert langevin_variance_ratio(eps, 0.01, gamma, 5) > 1.0


@pytest.mark.parametrize("eps", [1e-7, 2e-6, 5e-6])
def test_solve_epsilon_inverts_the_ratio(eps):
    gamma = (50.0 / 0.01) ** (1.0 / 231)
    target = langevin_variance_ratio(eps, 0.01, gamma, 5)
    assert solve_epsilon(0.01, gamma, 5, target=target) == pytest.approx(eps, rel=1e-8)


def test_variance_ratio_matches_simulated_langevin_chain():
    # Official convention x <- x + alpha s(x) + sqrt(2 alpha) z at level sigma = 0.3 (the ratio is level-free),
    # started from N(0, (gamma sigma)^2), score of the target N(0, sigma^2) is -x / sigma^2.
    sigma, sigma_min, gamma, T, n = 0.3, 0.1, 1.5, 4, 400_000
    eps = 0.3 * sigma_min**2
    alpha = eps * sigma**2 / sigma_min**2
    generator = torch.Generator().manual_seed(0)
    x = gamma * sigma * torch.randn(n, generator=generator, dtype=torch.float64)
    for _ in range(T):
        x = (
            x
            + alpha * (-x / sigma**2)
            + math.sqrt(2 * alpha) * torch.randn(n, generator=generator, dtype=torch.float64)
        )
    empirical = (x.var() / sigma**2).item()
    expected = langevin_variance_ratio(eps, sigma_min, gamma, T)
    # the sample variance has relative standard deviation sqrt(2 / n) = 0.0022: allow 5 of them
    assert abs(empirical / expected - 1.0) < 5 * math.sqrt(2.0 / n)
    assert abs(expected - gamma**2) > 0.5  # the chain really moved


# --- All together ----------------------------------------------------------------------------------------------------


def test_scheduler_config_from_data():
    data = _random_data(64, seed=3)
    config = ncsnv2_scheduler_config(data, sigma_min=0.01, steps_per_level=5)
    assert set(config) == {
        "sigma_max",
        "sigma_min",
        "num_noise_levels",
        "steps_per_level",
        "epsilon",
        "langevin_convention",
        "final_denoise",
    }
    assert config["langevin_convention"] == "official" and config["final_denoise"] is True
    assert config["sigma_max"] == max_pairwise_distance(data)
    assert config["sigma_min"] == 0.01 and config["steps_per_level"] == 5

    details = ncsnv2_hyperparameters(data)
    assert details.scheduler_config() == config
    assert details.data_dim == 18 and not details.subsampled
    assert config["num_noise_levels"] == num_noise_levels(config["sigma_max"], 0.01, solve_gamma(18, 0.567))
    assert details.gamma ** (config["num_noise_levels"] - 1) == pytest.approx(config["sigma_max"] / 0.01, rel=1e-12)
    assert config["epsilon"] == solve_epsilon(0.01, details.gamma, 5)


def test_scheduler_accepts_config():
    module = pytest.importorskip("ncsn_diffusers.scheduling_annealed_langevin")
    config = ncsnv2_scheduler_config(_random_data(32, seed=4))
    parameters = inspect.signature(module.AnnealedLangevinScheduler.__init__).parameters
    assert set(config) <= set(parameters)
    scheduler = module.AnnealedLangevinScheduler(**config)
    assert scheduler.sigmas.shape == (config["num_noise_levels"],)
    assert scheduler.sigmas[0].item() == pytest.approx(config["sigma_max"], rel=1e-6)
    assert scheduler.sigmas[-1].item() == pytest.approx(config["sigma_min"], rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": torch.tensor([[0.0, 1.0], [float("nan"), 2.0]])}, "NaN"),
        ({"data": torch.tensor([[0.0, 1.0], [float("inf"), 2.0]])}, "NaN or inf"),
        ({"data": torch.zeros(1, 3)}, "at least 2 samples"),
        ({"data": torch.zeros(5)}, "data\\[:, None\\]"),
        ({"sigma_min": 0.0}, "sigma_min must be > 0"),
        ({"sigma_min": -1.0}, "sigma_min must be > 0"),
        ({"sigma_min": 100.0}, "must be below sigma_1"),
        ({"C": 0.0}, "C must lie in"),
        ({"C": 1.0}, "C must lie in"),
        ({"steps_per_level": 0}, "steps_per_level must be >= 1"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    arguments = {"data": _random_data(8)} | kwargs
    with pytest.raises(ValueError, match=message):
        ncsnv2_scheduler_config(**arguments)


def test_bad_solver_inputs_raise():
    with pytest.raises(ValueError, match="data_dim"):
        solve_gamma(3, 0.5)  # overlap never drops below 0.997 for D <= 4
    with pytest.raises(ValueError, match="gamma must be > 1"):
        solve_epsilon(0.01, 1.0, 5)
    with pytest.raises(ValueError, match="target must lie in"):
        solve_epsilon(0.01, 1.05, 5, target=1.2)
    with pytest.raises(ValueError, match="chunk_size"):
        max_pairwise_distance(torch.zeros(3, 2), chunk_size=0)
