"""Summaries of per-task results, as SIMOL reports them (notes/000_simol.md §7 A14).

- overall: the per-task values of all seeds pooled (N = seeds × tasks); mean and a 95 %
  CI half-width 1.96 · sd / √N (Finn et al.'s convention).
- worst10: per seed, the mean of the worst ⌈10 %⌉ tasks (highest error, or lowest
  accuracy); the value is the mean over seeds; the CI is taken over the pooled worst values.
- paired test: scipy's two-sided ``ttest_rel``; overall values are paired by (seed, task),
  worst-10 % values by rank within each seed (worst with worst).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

Z95 = 1.96


def ci95(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float("nan")
    return float(Z95 * values.std(ddof=1) / math.sqrt(values.size))


def worst_fraction(values_per_seed: dict[int, np.ndarray], fraction: float = 0.1,
                   lower_is_better: bool = True) -> dict[int, np.ndarray]:
    """Per seed, the worst ⌈fraction · tasks⌉ values, sorted worst first."""
    worst = {}
    for seed, values in sorted(values_per_seed.items()):
        values = np.asarray(values, dtype=float)
        count = max(1, math.ceil(fraction * values.size))
        ordered = np.sort(values)[::-1] if lower_is_better else np.sort(values)
        worst[seed] = ordered[:count]
    return worst


@dataclass
class Summary:
    mean: float
    ci: float
    n: int
    paired_sample: np.ndarray  # what the paired t-test compares, in a fixed order


def summarise(values_per_seed: dict[int, np.ndarray], metric: str, lower_is_better: bool = True) -> Summary:
    if metric == "overall":
        pooled = np.concatenate([np.asarray(values_per_seed[s], dtype=float) for s in sorted(values_per_seed)])
        return Summary(float(pooled.mean()), ci95(pooled), pooled.size, pooled)
    if metric == "worst10":
        worst = worst_fraction(values_per_seed, 0.1, lower_is_better)
        pooled = np.concatenate([worst[s] for s in sorted(worst)])
        mean = float(np.mean([w.mean() for w in worst.values()]))
        return Summary(mean, ci95(pooled), pooled.size, pooled)
    raise ValueError(f"metric: expected 'overall' or 'worst10', got {metric!r}")


def paired_t_test(a: Summary, b: Summary) -> float:
    """Two-sided p-value of the paired t-test between two summaries of the same tasks and seeds."""
    if a.paired_sample.shape != b.paired_sample.shape:
        raise ValueError(f"paired t-test needs samples of equal length, got {a.paired_sample.size} "
                         f"and {b.paired_sample.size} (different seeds or test tasks?)")
    return float(scipy_stats.ttest_rel(a.paired_sample, b.paired_sample).pvalue)
