"""Precision / recall / density / coverage and KID against hand-derived values, a brute-force k-NN and a direct O(n^2)
unbiased MMD written here; `evaluate_features` against the closed-form Fréchet distance of Gaussians."""

import numpy as np
import pytest
import torch

from ncsn_diffusers.evaluation import evaluate_features, kernel_inception_distance, precision_recall_density_coverage
from ncsn_diffusers.evaluation.kid import mmd2_unbiased


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """Kynkäänniemi et al. (2019) and Naeem et al. (2020) by definition, one distance at a time."""

    def radius(points, i):  # distance to the k-th nearest other point; sorted()[0] is the point itself
        return sorted(float(np.linalg.norm(points[i] - p)) for p in points)[k]

    real_radii = [radius(real, i) for i in range(len(real))]
    fake_radii = [radius(fake, j) for j in range(len(fake))]
    # in_real_ball[j][i]: y_j lies in B(x_i, NND_k(x_i))
    in_real_ball = [[np.linalg.norm(y - x) <= r for x, r in zip(real, real_radii)] for y in fake]
    return {
        "precision": np.mean([any(row) for row in in_real_ball]),
        "recall": np.mean([any(np.linalg.norm(x - y) <= r for y, r in zip(fake, fake_radii)) for x in real]),
        "density": sum(map(sum, in_real_ball)) / (k * len(fake)),
        "coverage": np.mean([any(row[i] for row in in_real_ball) for i in range(len(real))]),
    }


def test_prdc_of_a_hand_worked_one_dimensional_example():
    # k = 1. Real 0, 1, 2, 10: radii 1, 1, 1, 8. Samples 0.5, 5, 20: radii 4.5, 4.5, 15.
    # precision: 0.5 in B(0, 1); 5 in B(10, 8); 20 in no real ball -> 2/3.
    # recall: 0, 1, 2 lie in B(0.5, 4.5); 10 in B(20, 15) -> 1.
    # density: 0.5 lies in B(0, 1) and B(1, 1); 5 in B(10, 8); 20 in none -> 3 / (1 * 3) = 1.
    # coverage: B(0, 1), B(1, 1) and B(10, 8) hold a sample, B(2, 1) does not -> 3/4.
    real, fake = torch.tensor([[0.0], [1.0], [2.0], [10.0]]), torch.tensor([[0.5], [5.0], [20.0]])
    scores = precision_recall_density_coverage(real, fake, k=1)
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 1.0, "density": 1.0, "coverage": 0.75}, abs=1e-12)


def test_prdc_matches_brute_force_knn_and_ignores_the_batch_size():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 3))
    fake = 1.3 * rng.standard_normal((30, 3)) + 0.4
    expected = brute_force_prdc(real, fake, k=5)
    assert precision_recall_density_coverage(real, fake, k=5) == pytest.approx(expected, abs=1e-12)
    assert precision_recall_density_coverage(real, fake, k=5, batch_size=7) == pytest.approx(expected, abs=1e-12)
    assert brute_force_prdc(real, fake, k=3) == pytest.approx(precision_recall_density_coverage(real, fake, k=3))


def test_precision_and_recall_tell_fidelity_from_diversity():
    # Same mean, so both failures raise the Fréchet distance; only precision / recall say which one it is.
    rng = np.random.default_rng(1)
    real = rng.standard_normal((300, 4))
    collapsed = 0.3 * rng.standard_normal((300, 4))  # every sample looks real, most of the data is never reached
    scattered = 3.0 * rng.standard_normal((300, 4))  # the data is reached, most samples look unreal
    low_diversity = precision_recall_density_coverage(real, collapsed)
    low_fidelity = precision_recall_density_coverage(real, scattered)
    assert low_diversity["precision"] > 0.95 and low_diversity["recall"] < 0.3 and low_diversity["coverage"] < 0.5
    assert low_fidelity["precision"] < 0.3 and low_fidelity["recall"] > 0.95 and low_fidelity["density"] < 0.2


def test_prdc_rejects_too_few_points():
    with pytest.raises(ValueError, match="more than 5"):
        precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((10, 2)))


def kernel(x, y):
    return (x @ y / len(x) + 1.0) ** 3  # k(x, y) = (x . y / D + 1)^3


def direct_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al. (2018), Eq. 2 with m = n, one kernel evaluation at a time."""
    m = len(x)
    within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    across = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * across / m**2


def test_mmd2_unbiased_matches_the_direct_sum():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 3)) + 0.5
    assert mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(direct_mmd2_unbiased(x, y))


def test_kid_draws_subsets_as_torch_fidelity_does():
    # torch-fidelity: rng = RandomState(2020); per subset, the generated rows first, then the real rows.
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((15, 3)), rng.standard_normal((12, 3)) * 1.5
    draws = np.random.RandomState(2020)
    mmds = []
    for _ in range(4):
        fake_rows, real_rows = draws.choice(12, 5, replace=False), draws.choice(15, 5, replace=False)
        mmds.append(direct_mmd2_unbiased(fake[fake_rows], real[real_rows]))
    kid_mean, kid_std = kernel_inception_distance(real, fake, subsets=4, subset_size=5)
    assert (kid_mean, kid_std) == pytest.approx((np.mean(mmds), np.std(mmds)), rel=1e-10)


def test_kid_subsets_cap_at_the_smaller_set():
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((10, 2)), rng.standard_normal((10, 2)) + 1.0
    # Subsets of all 10 rows are permutations of both sets, and MMD^2_u does not depend on the order.
    kid_mean, kid_std = kernel_inception_distance(real, fake, subsets=3, subset_size=1000)
    assert kid_mean == pytest.approx(direct_mmd2_unbiased(fake, real)) and kid_std == pytest.approx(0.0, abs=1e-12)


def test_evaluate_features_matches_the_closed_form_frechet_distance():
    # Empirical mean and covariance set exactly: d^2 = ||mu_a - mu_b||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    def exact_gaussian(mean, variances, n, seed):
        x = np.random.default_rng(seed).standard_normal((n, len(mean)))
        x -= x.mean(axis=0)
        x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
        return x * np.sqrt(variances) + mean

    real = exact_gaussian(np.array([0.0, 1.0]), np.array([1.0, 4.0]), 60, seed=5)
    fake = exact_gaussian(np.array([1.0, 1.0]), np.array([9.0, 1.0]), 50, seed=6)
    scores = evaluate_features(real, fake, kid_subsets=5)
    assert set(scores) == {"frechet_distance", "precision", "recall", "density", "coverage", "kid_mean", "kid_std"}
    assert scores["frechet_distance"] == pytest.approx(1.0 + (1 - 3) ** 2 + (2 - 1) ** 2, rel=1e-9)
    assert scores["kid_mean"] == pytest.approx(kernel_inception_distance(real, fake, subsets=5)[0])

    same = evaluate_features(real, real, kid_subsets=5)
    assert same["frechet_distance"] == pytest.approx(0.0, abs=1e-9)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0


def test_evaluate_features_names_non_finite_rows():
    fake = np.random.default_rng(7).standard_normal((20, 3))
    fake[[2, 5], 1] = np.nan
    with pytest.raises(ValueError, match="2 of 20 generated feature vectors are not finite"):
        evaluate_features(np.zeros((20, 3)), fake)


def test_evaluate_features_reports_nan_neighbourhood_metrics_for_tiny_sets():
    rng = np.random.default_rng(8)
    with pytest.warns(UserWarning, match="more than k = 5"):
        scores = evaluate_features(rng.standard_normal((20, 3)), rng.standard_normal((5, 3)), kid_subsets=2)
    assert all(np.isnan(scores[key]) for key in ("precision", "recall", "density", "coverage"))
    assert np.isfinite(scores["frechet_distance"]) and np.isfinite(scores["kid_mean"])
