"""CIs, worst-10 % and the paired t-test, against hand computations and scipy."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from taskbal.stats import ci95, group_statistic, paired_t_test, seed_paired_t_test, summarise, t_ci95, worst_fraction


def test_ci95_is_the_normal_interval():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert ci95(values) == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    low, high = scipy_stats.norm.interval(0.95, loc=values.mean(), scale=scipy_stats.sem(values))
    assert ci95(values) == pytest.approx((high - low) / 2, rel=1e-3)


def test_an_interval_over_a_blown_up_seed_has_no_width_and_warns_nothing():
    # A Meta-SGD seed whose test MSE overflowed: NaN, not numpy's "invalid value" warning on every page.
    blown_up = np.array([2.7, np.inf, 3.1, 2.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(ci95(blown_up)) and np.isnan(t_ci95(blown_up))
        assert np.isnan(t_ci95(np.array([2.7, np.nan, 3.1])))
        groups = np.array([0, 0, 1, 1])
        assert np.isnan(group_statistic(blown_up, groups, "std_group", lower_is_better=True))
        assert group_statistic(blown_up, groups, "worst_group", lower_is_better=True) == np.inf
    huge = np.array([2.7, 6.0e4, 3.1])  # finite, however large: an interval
    assert t_ci95(huge) == pytest.approx(scipy_stats.t.ppf(0.975, 2) * scipy_stats.sem(huge))


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


def test_a_diverged_task_counts_as_the_worst_in_either_direction():
    values = {0: np.array([0.5, np.nan] + [0.1] * 8)}
    for lower_is_better in (True, False):
        worst = worst_fraction(values, 0.1, lower_is_better)[0]
        assert worst.size == 1 and np.isnan(worst[0])
        assert np.isnan(summarise(values, "worst10", lower_is_better).mean)


def test_worst_ten_percent_is_paired_by_rank_within_seed():
    values = {1: np.array([5.0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),
              0: np.arange(20, 0, -1, dtype=float)}
    summary = summarise(values, "worst10")
    # seed 0 first (ascending seeds), each seed's two worst values sorted worst first
    np.testing.assert_array_equal(summary.paired_sample, [20, 19, 20, 19])
    assert summary.seeds == (0, 1) and summary.n_seeds == 2 and summary.n == 4
    assert summary.ci == pytest.approx(ci95(np.array([20.0, 19, 20, 19])))


def test_paired_test_of_worst_values_equals_scipy_on_rank_pairs():
    rng = np.random.default_rng(1)
    a = {s: rng.gamma(2.0, 1.0, 300) for s in range(3)}
    b = {s: rng.gamma(2.0, 1.2, 300) for s in range(3)}
    sa, sb = summarise(a, "worst10"), summarise(b, "worst10")
    rank_a = np.concatenate([np.sort(a[s])[::-1][:30] for s in range(3)])
    rank_b = np.concatenate([np.sort(b[s])[::-1][:30] for s in range(3)])
    assert paired_t_test(sa, sb) == pytest.approx(scipy_stats.ttest_rel(rank_a, rank_b).pvalue)


def test_samples_from_different_seeds_or_metrics_are_not_paired():
    one = summarise({0: np.arange(10.0), 1: np.arange(10.0)}, "overall")
    other_seeds = summarise({0: np.arange(10.0), 2: np.arange(10.0) + 1}, "overall")
    with pytest.raises(ValueError, match="same seeds"):
        paired_t_test(one, other_seeds)
    worst_of_200 = summarise({0: np.arange(200.0)}, "worst10")
    twenty_tasks = summarise({0: np.arange(20.0)}, "overall")
    assert worst_of_200.n == twenty_tasks.n == 20  # same length and seeds, different meaning
    with pytest.raises(ValueError, match="cannot pair"):
        paired_t_test(worst_of_200, twenty_tasks)


def test_identical_samples_give_no_p_value():
    summary = summarise({0: np.arange(10.0)}, "overall")
    assert np.isnan(paired_t_test(summary, summary))


def test_empty_input_is_refused_clearly():
    with pytest.raises(ValueError, match="no seeds"):
        summarise({}, "overall")
    with pytest.raises(ValueError, match="seed 3"):
        summarise({3: np.array([])}, "overall")


@pytest.mark.parametrize("metric", ["overall", "worst10"])
def test_seed_values_their_t_interval_and_the_seed_paired_test_equal_scipy(metric):
    rng = np.random.default_rng(5)
    a = {seed: rng.gamma(2.0, 1.0 + 0.2 * seed, 50) for seed in range(4)}
    b = {seed: values * rng.uniform(0.8, 1.3) for seed, values in a.items()}
    sa, sb = summarise(a, metric), summarise(b, metric)
    by_hand = [values.mean() if metric == "overall" else np.sort(values)[-5:].mean() for values in a.values()]
    np.testing.assert_allclose(sa.per_seed, by_hand)
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(by_hand), scale=scipy_stats.sem(by_hand))
    assert sa.seed_ci == pytest.approx((high - low) / 2) and sa.seed_mean == pytest.approx(sa.mean)
    assert seed_paired_t_test(sa, sb) == pytest.approx(scipy_stats.ttest_rel(sa.per_seed, sb.per_seed).pvalue)
    assert np.isnan(t_ci95(np.array([1.0])))
    with pytest.raises(ValueError, match="same seeds"):
        seed_paired_t_test(sa, summarise({0: a[0], 1: a[1]}, metric))


def test_task_metrics_are_the_worst_task_and_the_spread_over_tasks_per_seed():
    """Nash-GBML's worst / std. dev. over test episodes: each seed's minimum accuracy (or maximum error)
    and population standard deviation over its tasks, then mean and t-interval over seeds."""
    rng = np.random.default_rng(4)
    values = {seed: rng.uniform(20, 90, size=60) for seed in (0, 1, 2)}
    worst = summarise(values, "worst_task", lower_is_better=False)
    assert list(worst.per_seed) == [values[s].min() for s in (0, 1, 2)]
    assert worst.mean == pytest.approx(np.mean([values[s].min() for s in (0, 1, 2)]))
    assert worst.metric == "worst_task" and worst.n_seeds == 3
    assert summarise(values, "worst_task", lower_is_better=True).per_seed[1] == values[1].max()
    spread = summarise(values, "std_task", lower_is_better=False)
    assert spread.per_seed == pytest.approx([np.std(values[s]) for s in (0, 1, 2)])
    assert spread.seed_ci == pytest.approx(t_ci95(spread.per_seed))
    values[2][7] = np.nan  # a diverged task is the worst
    assert np.isnan(summarise(values, "worst_task", lower_is_better=False).per_seed[2])
