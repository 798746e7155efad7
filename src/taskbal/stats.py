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
- paired test: scipy's two-sided ``ttest_rel``; overall values are paired by (seed, task),
  worst-10 % values by rank within each seed (worst with worst: the worst tasks of two
  methods are different tasks, so rank is the only pairing there is). Seeds are always taken
  in ascending order, so two summaries of the same seeds and tasks line up element by element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

Z95 = 1.96


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal-approximation 95 % CI of the mean; NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float("nan")
    return float(Z95 * values.std(ddof=1) / math.sqrt(values.size))


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

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


GROUP_METRICS = ("worst_group", "std_group")
METRICS = ("overall", "worst10") + GROUP_METRICS


def group_statistic(values: np.ndarray, groups: np.ndarray, metric: str, lower_is_better: bool) -> float:
    """One seed's worst group mean or standard deviation of the group means."""
    means = pd.Series(np.asarray(values, dtype=float)).groupby(np.asarray(groups)).mean().to_numpy()
    if metric == "std_group":
        return float(means.std(ddof=0))
    if np.isnan(means).any():
        return float("nan")  # a diverged group is the worst in either direction
    return float(means.max() if lower_is_better else means.min())


def summarise(values_per_seed: dict[int, np.ndarray], metric: str, lower_is_better: bool = True,
              groups_per_seed: dict[int, np.ndarray] | None = None) -> Summary:
    """The table cell of ``metric`` (one of METRICS) from ``{seed: per-task values}``
    (and ``{seed: per-task group}`` for the group metrics)."""
    check_values(values_per_seed)
    if metric in GROUP_METRICS:
        if groups_per_seed is None:
            raise ValueError(f"metric {metric!r} needs a group per task (a 'group' column in eval.csv)")
        seeds = tuple(sorted(values_per_seed))
        per_seed = np.array([group_statistic(values_per_seed[s], groups_per_seed[s], metric, lower_is_better)
                             for s in seeds])
        return Summary(float(per_seed.mean()), ci95(per_seed), per_seed.size, per_seed, seeds, metric)
    seeds = tuple(sorted(values_per_seed))
    if metric == "overall":
        pooled = np.concatenate([np.asarray(values_per_seed[s], dtype=float) for s in seeds])
        return Summary(float(pooled.mean()), ci95(pooled), pooled.size, pooled, seeds, metric)
    if metric == "worst10":
        worst = worst_fraction(values_per_seed, 0.1, lower_is_better)
        pooled = np.concatenate([worst[s] for s in seeds])
        # Mean of per-seed means: every seed weighs the same.
        mean = float(np.mean([worst[s].mean() for s in seeds]))
        return Summary(mean, ci95(pooled), pooled.size, pooled, seeds, metric)
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


def check_values(values_per_seed: dict[int, np.ndarray]) -> None:
    """A clear error for input that would otherwise fail deep inside numpy."""
    if not values_per_seed:
        raise ValueError("no seeds: the dict of per-seed values is empty")
    for seed, values in values_per_seed.items():
        if np.ndim(values) != 1 or np.size(values) == 0:
            raise ValueError(f"seed {seed}: expected a non-empty 1-D array of per-task values, "
                             f"got shape {np.shape(values)}")
