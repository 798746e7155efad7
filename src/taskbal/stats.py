"""Summaries of per-task results, as SIMOL reports them (the paper does not fully specify its CI,
seeds, worst-10 % or t-test; the choices made here are below).

- overall: the per-task values of all seeds pooled (N = seeds × tasks); mean and a 95 %
  CI half-width 1.96 · sd / √N (Finn et al.'s convention).
- worst10: per seed, the mean of the worst ⌈10 %⌉ tasks (highest error, or lowest
  accuracy); the value is the mean over seeds; the CI half-width is 1.96 · sd / √M over the
  pooled worst values (M = seeds × ⌈0.1 · tasks⌉). A NaN value (a diverged task) counts as the
  worst in either direction, so a diverged run shows up as NaN instead of being hidden.
- worst_group / std_group (Nash-GBML's "worst" and "std. dev." over amplitude bins): per
  seed, the mean of each group (bin) of tasks, then the worst group mean (highest error, or
  lowest accuracy) or the standard deviation of the group means (ddof = 0: the bins are the
  whole population of bins, not a sample); the value is the mean over seeds, the CI
  half-width 1.96 · sd / √seeds over the per-seed values, and the paired sample is the
  per-seed values.
- worst_task / std_task (Nash-GBML's "worst" and "std. dev." on mini-ImageNet, where the unit is
  not stated: each test episode is its own group): per seed, the worst task's value or the standard
  deviation over tasks (ddof = 0), summarised over seeds as the group metrics are.
- seed-level statistics (a training run is the unit of replication): each seed's value of the
  metric (its overall mean, its worst-10 % mean, its group statistic), their mean, and the
  Student-t 95 % CI half-width t(0.975, S − 1) · sd / √S over the S seeds; the seed-paired test
  is scipy's two-sided ``ttest_rel`` of two rows' per-seed values, paired by seed (the same seed
  draws the same tasks for every row).
- task-paired test: scipy's two-sided ``ttest_rel``; overall values are paired by (seed, task),
  worst-10 % values by rank within each seed (worst with worst: the worst tasks of two
  methods are different tasks, so rank is the only pairing there is). Seeds are always taken
  in ascending order, so two summaries of the same seeds and tasks line up element by element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

Z95 = 1.96


def half_width(values: np.ndarray, quantile) -> float:
    """``quantile(n)`` · sd / √n of the values; NaN for fewer than 2 values or a non-finite one (a seed
    that blew up: the interval has no width to give)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2 or not np.isfinite(values).all():
        return float("nan")
    return float(quantile(values.size) * values.std(ddof=1) / math.sqrt(values.size))


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal-approximation 95 % CI of the mean (see ``half_width`` for NaN)."""
    return half_width(values, lambda n: Z95)


def t_ci95(values: np.ndarray) -> float:
    """Half-width of the Student-t 95 % CI of the mean (few values: seeds; see ``half_width`` for NaN)."""
    from scipy import stats as scipy_stats

    return half_width(values, lambda n: scipy_stats.t.ppf(0.975, n - 1))


def worst_fraction(values_per_seed: dict[int, np.ndarray], fraction: float = 0.1,
                   lower_is_better: bool = True) -> dict[int, np.ndarray]:
    """Per seed, the worst ⌈fraction · tasks⌉ values, sorted worst first."""
    check_values(values_per_seed)
    worst = {}
    for seed, values in sorted(values_per_seed.items()):
        values = np.asarray(values, dtype=float)
        count = max(1, math.ceil(fraction * values.size))
        # Larger badness = worse, in either direction; NaN is the worst of all. A stable sort
        # keeps ties in task order, so the result does not depend on the sorting algorithm.
        badness = np.where(np.isnan(values), np.inf, values if lower_is_better else -values)
        worst[seed] = values[np.argsort(-badness, kind="stable")[:count]]
    return worst


@dataclass
class Summary:
    mean: float
    ci: float
    n: int
    paired_sample: np.ndarray  # what the paired t-test compares, in a fixed order
    seeds: tuple[int, ...] = ()  # so that a paired test can refuse samples from different seeds
    metric: str = "overall"
    per_seed: np.ndarray = field(default_factory=lambda: np.empty(0))  # each seed's value, in seed order

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def seed_mean(self) -> float:
        return float(self.per_seed.mean()) if self.per_seed.size else float("nan")

    @property
    def seed_ci(self) -> float:
        return t_ci95(self.per_seed)


GROUP_METRICS = ("worst_group", "std_group")
TASK_METRICS = {"worst_task": "worst_group", "std_task": "std_group"}  # a group metric, one task per group
METRICS = ("overall", "worst10") + GROUP_METRICS + tuple(TASK_METRICS)


def group_statistic(values: np.ndarray, groups: np.ndarray, metric: str, lower_is_better: bool) -> float:
    """One seed's worst group mean or standard deviation of the group means."""
    means = pd.Series(np.asarray(values, dtype=float)).groupby(np.asarray(groups)).mean().to_numpy()
    if metric == "std_group":  # a group whose mean is not finite (a blown-up seed) leaves no spread to give
        return float(means.std(ddof=0)) if np.isfinite(means).all() else float("nan")
    if np.isnan(means).any():
        return float("nan")  # a diverged group is the worst in either direction
    return float(means.max() if lower_is_better else means.min())


def summarise(values_per_seed: dict[int, np.ndarray], metric: str, lower_is_better: bool = True,
              groups_per_seed: dict[int, np.ndarray] | None = None) -> Summary:
    """The table cell of ``metric`` (one of METRICS) from ``{seed: per-task values}``
    (and ``{seed: per-task group}`` for the group metrics)."""
    check_values(values_per_seed)
    if metric in TASK_METRICS:
        groups = {seed: np.arange(np.asarray(values).size) for seed, values in values_per_seed.items()}
        summary = summarise(values_per_seed, TASK_METRICS[metric], lower_is_better, groups)
        summary.metric = metric
        return summary
    if metric in GROUP_METRICS:
        if groups_per_seed is None:
            raise ValueError(f"metric {metric!r} needs a group per task (a 'group' column in eval.csv)")
        seeds = tuple(sorted(values_per_seed))
        per_seed = np.array([group_statistic(values_per_seed[s], groups_per_seed[s], metric, lower_is_better)
                             for s in seeds])
        return Summary(float(per_seed.mean()), ci95(per_seed), per_seed.size, per_seed, seeds, metric, per_seed)
    seeds = tuple(sorted(values_per_seed))
    if metric == "overall":
        pooled = np.concatenate([np.asarray(values_per_seed[s], dtype=float) for s in seeds])
        per_seed = np.array([np.asarray(values_per_seed[s], dtype=float).mean() for s in seeds])
        return Summary(float(pooled.mean()), ci95(pooled), pooled.size, pooled, seeds, metric, per_seed)
    if metric == "worst10":
        worst = worst_fraction(values_per_seed, 0.1, lower_is_better)
        pooled = np.concatenate([worst[s] for s in seeds])
        # Mean of per-seed means: every seed weighs the same.
        per_seed = np.array([worst[s].mean() for s in seeds])
        return Summary(float(per_seed.mean()), ci95(pooled), pooled.size, pooled, seeds, metric, per_seed)
    raise ValueError(f"metric: expected one of {list(METRICS)}, got {metric!r}")


def paired_t_test(a: Summary, b: Summary) -> float:
    """Two-sided p-value of the paired t-test between two summaries of the same tasks and seeds.

    Raises ValueError when the samples cannot be paired: a p-value from mismatched pairs would
    look valid and mean nothing. NaN when the samples are identical (the test is undefined).
    """
    if a.paired_sample.shape != b.paired_sample.shape:
        raise ValueError(f"paired t-test needs samples of equal length, got {a.paired_sample.size} "
                         f"and {b.paired_sample.size} (different seeds or test tasks?)")
    if a.seeds and b.seeds and a.seeds != b.seeds:
        raise ValueError(f"paired t-test needs the same seeds, got {list(a.seeds)} and {list(b.seeds)}")
    if a.metric != b.metric:
        raise ValueError(f"paired t-test cannot pair a {a.metric!r} sample with a {b.metric!r} sample")
    if np.array_equal(a.paired_sample, b.paired_sample):
        return float("nan")  # scipy would warn about a zero variance and return NaN too
    from scipy import stats as scipy_stats  # scipy.stats takes longer to import than a tiny job trains

    return float(scipy_stats.ttest_rel(a.paired_sample, b.paired_sample).pvalue)


def seed_paired_t_test(a: Summary, b: Summary) -> float:
    """Two-sided p-value of the paired t-test of two rows' per-seed values, paired by seed; NaN with
    fewer than two seeds or when the per-seed differences do not vary (the test is undefined)."""
    if a.seeds != b.seeds:
        raise ValueError(f"paired t-test over seeds needs the same seeds, got {list(a.seeds)} and {list(b.seeds)}")
    differences = a.per_seed - b.per_seed
    if differences.size < 2 or np.all(differences == differences[0]):
        return float("nan")
    from scipy import stats as scipy_stats

    return float(scipy_stats.ttest_rel(a.per_seed, b.per_seed).pvalue)


def check_values(values_per_seed: dict[int, np.ndarray]) -> None:
    """A clear error for input that would otherwise fail deep inside numpy."""
    if not values_per_seed:
        raise ValueError("no seeds: the dict of per-seed values is empty")
    for seed, values in values_per_seed.items():
        if np.ndim(values) != 1 or np.size(values) == 0:
            raise ValueError(f"seed {seed}: expected a non-empty 1-D array of per-task values, "
                             f"got shape {np.shape(values)}")
