"""The confidence intervals the sampler comparisons report (`ncsn_diffusers.evaluation.intervals`), against closed
forms: Student's t by hand, and the coverage and expected width of the interval over seeds of a metric whose per-seed
spread is known (the mean of Gaussian features of known variance)."""

import math

import numpy as np
import pytest

from ncsn_diffusers.evaluation.intervals import format_interval, mean_interval, paired_difference_interval


def test_t_interval_by_hand():
    result = mean_interval([1.0, 2.0, 3.0, 4.0])
    # s = sqrt(5/3); t_{3, 0.975} = 3.182446305284263 (tables)
    assert result["mean"] == 2.5 and result["std"] == pytest.approx(math.sqrt(5 / 3))
    assert result["half_width"] == pytest.approx(3.182446305284263 * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert result["num_seeds"] == 4 and format_interval([1.0, 2.0, 3.0, 4.0]) == "2.50 ± 2.05"


def test_interval_over_seeds_of_gaussian_features_covers_and_has_the_closed_form_width():
    """Each 'seed' scores the mean of N features drawn from N(m, v): the per-seed spread is sqrt(v / N), exactly.
    Over 3 seeds, the 95% t-interval must cover m in 95% of repetitions, and its half-width average
    t_{2, 0.975} c4(3) sqrt(v / N) / sqrt(3), with c4(3) = Gamma(3/2) / Gamma(1) = sqrt(pi) / 2.
    Bug caught: a normal quantile (1.96) instead of Student's t for 3 seeds covers only ~80%; ddof = 0 narrows it."""
    rng = np.random.default_rng(0)
    m, v, n_features, repetitions = 3.0, 4.0, 50, 4000
    per_seed = rng.normal(m, math.sqrt(v), size=(repetitions, 3, n_features)).mean(axis=2)
    results = [mean_interval(seeds) for seeds in per_seed]
    covered = np.mean([abs(r["mean"] - m) <= r["half_width"] for r in results])
    assert covered == pytest.approx(0.95, abs=3 * math.sqrt(0.95 * 0.05 / repetitions))
    expected_width = 4.302652729911275 * (math.sqrt(math.pi) / 2) * math.sqrt(v / n_features) / math.sqrt(3)
    assert np.mean([r["half_width"] for r in results]) == pytest.approx(expected_width, rel=0.03)


def test_paired_differences_remove_the_spread_two_samplers_share():
    """Two samplers on the same seeds: a common per-seed offset (the seed's luck) cancels in the paired interval.
    Bug caught: comparing two unpaired intervals calls a constant 0.5 advantage insignificant."""
    seed_luck = np.array([3.0, -2.0, 0.5])
    a, b = 8.0 + seed_luck + np.array([0.01, -0.01, 0.0]), 7.5 + seed_luck
    assert mean_interval(a)["half_width"] > 0.5  # unpaired: the intervals overlap
    paired = paired_difference_interval(a, b)
    assert paired["mean"] == pytest.approx(0.5) and paired["half_width"] < 0.05 and paired["significant"]


def test_one_seed_has_no_interval_and_bad_input_is_named():
    assert mean_interval([7.0])["half_width"] == math.inf
    with pytest.raises(ValueError, match="finite numbers"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"level=95 must lie in \(0, 1\)"):
        mean_interval([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="seed by seed: got 2 and 3"):
        paired_difference_interval([1.0, 2.0], [1.0, 2.0, 3.0])


def test_comparison_table_reports_intervals_paired_differences_and_cost():
    """Bug caught: a table whose differences are not paired seed by seed, or whose cost ignores the sample count."""
    from ncsn_diffusers.evaluation.sampler_comparison import comparison_table

    def cell(fd, rough=0.0):
        return {"num_samples": 500, "fd": fd, "min_class": 0.08, "max_class": 0.12, "rough": rough, "cpu_seconds": 5.0}

    cells = {"a": [cell(8.0), cell(10.0), cell(6.0)], "b": [cell(9.0, 0.5), cell(11.1), cell(6.9)]}
    table = comparison_table(cells, {"a": 10, "b": 20}).splitlines()
    half = 4.302652729911275 * 2.0 / math.sqrt(3)  # s = 2 for (8, 10, 6)
    assert table[2] == f"| a | 10 | 8.00 ± {half:.2f} | 8.00 / 10.00 / 6.00 | best | 8.0-12.0% | 0.0% | 10 |"
    # differences 1.0, 1.1, 0.9: s = 0.1, half-width 4.30 * 0.1 / sqrt(3) = 0.25, which excludes 0
    assert (
        table[3].startswith("| b | 20 | 9.00 ± ") and "| +1.00 ± 0.25* |" in table[3] and "| 16.7% | 10 |" in table[3]
    )


def test_few_call_goals_name_each_missed_goal_with_its_budget():
    """Bug caught: a goals check that reads the rough share below 10 calls, misses a class share outside 5-15% on one
    seed only, or compares the fewest-call FD with its own family's best instead of the table's."""
    from ncsn_diffusers.evaluation.sampler_comparison import few_call_goals

    def cell(fd, rough=0.0, low=0.08, high=0.12):
        return {"num_samples": 500, "fd": fd, "min_class": low, "max_class": high, "rough": rough, "cpu_seconds": 1.0}

    cells = {
        "a@5": [cell(12.0, rough=0.5), cell(12.0, rough=0.5)],  # rough at 5 calls is allowed
        "a@10": [cell(10.0), cell(10.0, high=0.16)],  # one seed's class at 16%
        "b@5": [cell(13.0), cell(13.0)],  # 1.3x the table's best (10.0), not b's own best (13.0)
        "b@10": [cell(13.0, rough=0.03), cell(13.0, rough=0.02)],  # 2.5% rough
        "c@5": [cell(12.9), cell(13.1)],
        "c@10": [cell(11.0), cell(11.0)],
    }
    calls = {name: int(name.split("@")[1]) for name in cells}
    lines = few_call_goals(cells, calls, {"a": ["a@5", "a@10"], "b": ["b@5", "b@10"], "c": ["c@5", "c@10"]})
    assert lines[0] == "a: misses: a class outside 5-15% at 10 calls (FD at 5 calls / best FD 10.00 = 1.20)"
    assert lines[1] == "b: misses: over 2% rough at 10 calls (FD at 5 calls / best FD 10.00 = 1.30)"
    assert lines[2] == "c: meets the goals (FD at 5 calls / best FD 10.00 = 1.30)"
