"""CIs, worst-10 % and the paired t-test, against hand computations and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from taskbal.stats import ci95, paired_t_test, summarise, worst_fraction


def test_ci95_is_the_normal_interval():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert ci95(values) == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    low, high = scipy_stats.norm.interval(0.95, loc=values.mean(), scale=scipy_stats.sem(values))
    assert ci95(values) == pytest.approx((high - low) / 2, rel=1e-3)


def test_worst_ten_percent_of_errors_and_of_accuracies():
    values = {0: np.arange(1, 1001, dtype=float)}
    assert summarise(values, "worst10").mean == pytest.approx(950.5)  # mean of 901..1000
    assert summarise(values, "worst10", lower_is_better=False).mean == pytest.approx(50.5)  # 1..100
    worst = worst_fraction({0: np.array([3.0, 9.0, 1.0])}, 0.1)[0]
    np.testing.assert_array_equal(worst, [9.0])  # ceil(0.3) = 1 task


def test_worst_ten_percent_is_averaged_over_seeds():
    values = {0: np.arange(10, dtype=float), 1: np.arange(10, dtype=float) + 100}
    summary = summarise(values, "worst10")
    assert summary.mean == pytest.approx((9 + 109) / 2) and summary.n == 2


def test_overall_pools_seeds():
    values = {0: np.array([1.0, 2.0]), 1: np.array([3.0, 6.0])}
    summary = summarise(values, "overall")
    assert summary.mean == pytest.approx(3.0) and summary.n == 4
    assert summary.ci == pytest.approx(ci95(np.array([1.0, 2.0, 3.0, 6.0])))


def test_paired_test_uses_the_pairing():
    rng = np.random.default_rng(0)
    task_difficulty = rng.uniform(0, 10, size=200)
    a = {0: task_difficulty + rng.normal(0, 0.1, 200)}
    b = {0: task_difficulty + 0.1 + rng.normal(0, 0.1, 200)}
    sa, sb = summarise(a, "overall"), summarise(b, "overall")
    p = paired_t_test(sa, sb)
    assert p == pytest.approx(scipy_stats.ttest_rel(a[0], b[0]).pvalue)
    assert p < 1e-6 < scipy_stats.ttest_ind(a[0], b[0]).pvalue  # unpaired cannot see it


def test_mismatched_samples_raise():
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test(summarise({0: np.ones(5)}, "overall"), summarise({0: np.ones(6)}, "overall"))


def test_unknown_metric_names_it():
    with pytest.raises(ValueError, match="metric"):
        summarise({0: np.ones(3)}, "median")
