"""Divergence: a training run whose loss becomes non-finite or jumps far above its running level.

A diverged run is marked, not averaged away: the loop records the verdict in the run's
``train.json`` (and so in its MLflow run), and tables show which seeds diverged and their mean
with and without them.

The rule, applied to the curve's rows in iteration order (row 0, before any step, has no training
loss; it has the initial model's validation MSE, the level a run blown up by the next row is judged against):

* the monitored ``metric`` (a curve column, ``train_loss`` by default: the mean meta-batch loss
  since the previous row) is NaN or infinite at a row → diverged there;
* from iteration ``after`` on, the metric exceeds ``factor`` × its *running level*, the lowest
  value of the metric at the earlier rows, and no later row brings it back within ``recovery`` ×
  that level → diverged there (a loss that falls, then climbs far above where it had been and
  stays there). A jump that a later row undoes is a spike: named in the verdict, not divergence
  (MAML with plain SGD inner steps has such spikes when one task's inner steps overshoot); so is a
  finite jump at the last row, which no later row can confirm.

The first row that meets either condition is the divergence point. The rule is the experiment's
optional ``divergence`` section (only what it sets changes the run's identity); absent, the defaults
below apply. A curve without the metric (a runner that records other losses) is not checked.

A run can also pass the rule and still *explode on the test tasks*: a few meta-test tasks that the
validation tasks rarely hold (Meta-SGD's learned inner rates overshooting on the largest sinusoid
amplitudes) make the test error orders of magnitude larger than anything training saw. A table or
figure marks such a seed (:func:`exploded_seeds`) and leaves it out of the mean "without" as it does
a diverged seed. Either of two signs marks it:

* its mean test MSE is non-finite or above ``EXPLOSION_FACTOR`` × its validation MSE at the last
  curve row (validation and test tasks come from one distribution; a table's ``explosion_factor``);
* its worst ⌈1 %⌉ of test tasks carry more than ``EXPLOSION_SHARE`` of its summed test MSE (a table's
  ``explosion_share``), judged from 100 test tasks on. This names a *partial* explosion, a handful
  of tasks whose error is thousands of times the rest's while the mean stays under the factor (a
  few hundred validation tasks seldom hold such a task, so the mean against validation misses it).

A run can also *stall*: stay finite and calm while the quantity that drives its learning collapses.
SIMOL's task weights r_θ(τ) multiply every task's meta-gradient, and at the published budget they
fall to zero for most of training in 3 of the 5 seeds of the selected point and at 15 of the search's
80 points (README, Measured). A table's optional ``stall`` section names a curve column (``metric``),
a level (``below``) and a ``share`` (default ``STALL_SHARE``): a seed whose column is below the level
at more than that share of its curve rows after iteration 0 stalled (:func:`stalled_seeds`). The table
names it and leaves it out of the mean "without", as it does a diverged seed; the cell's value keeps
it, since a stall is the method's own behaviour. A table without the section, or a curve without the
column, is not judged. The section's ``above`` names the opposite failure, with the same share: the quantity
*blown up* for most of training (SIMOL's weights pass 10, ten times where they start, at every point of the
5-shot search with β′ = 1, and most of those runs end at the validation MSE of an untrained model; README,
Measured); such a seed "blew up" and is treated as a stalled one.
A grid search's config may carry the same section: its page then names each point whose search runs stalled
or blew up, without changing what the search selects (the paper's rule: the validation value alone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

DEFAULTS = {"metric": "train_loss", "factor": 2.0, "after": 0, "recovery": 1.25}
# Far above the sampling difference between two sets of tasks from one distribution (the mean MSE of
# 100 sinusoid tasks against 2,500 of them); an exploding seed is above it by orders of magnitude.
EXPLOSION_FACTOR = 10.0
# "Most of the mean error comes from 1 % of the tasks." Over the 962 sinusoid runs measured when the
# rule was set (README, Measured, "Partial explosions"), 923 have their worst 1 % of tasks carry at most
# 0.26 of their test MSE and 36 carry 0.53 to all of it, every run the factor names among them; 3 lie
# between and stay unnamed.
EXPLOSION_SHARE = 0.5
WORST_TASKS = 0.01
SHARE_MIN_TASKS = 100  # below this, ⌈1 %⌉ is one task, and one hard task among few can carry half the error
# "Most of training": a run whose driving quantity is near zero at a minority of its rows has dipped and
# recovered, which SIMOL's weights do in runs that end among the best.
STALL_SHARE = 0.5


def rule_of(experiment: dict) -> dict:
    """The divergence rule of an experiment: its ``divergence`` section over the defaults, checked
    (errors name the field)."""
    section = experiment.get("divergence") or {}
    if not isinstance(section, dict):
        raise ValueError(f"divergence: expected a mapping of {sorted(DEFAULTS)}, got {section!r}")
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"divergence.{unknown[0]}: unknown option of the divergence rule; known: {sorted(DEFAULTS)}")
    rule = {**DEFAULTS, **section}
    if not isinstance(rule["metric"], str) or not rule["metric"]:
        raise ValueError(f"divergence.metric: expected the name of a curve column, got {rule['metric']!r}")
    factor = rule["factor"]
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1:
        raise ValueError(f"divergence.factor: must be a finite number > 1, got {factor!r}")
    after = rule["after"]
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"divergence.after: must be an integer ≥ 0 (an iteration), got {after!r}")
    recovery = rule["recovery"]
    if isinstance(recovery, bool) or not isinstance(recovery, (int, float)) or not 1 <= recovery <= factor:
        raise ValueError(f"divergence.recovery: must be a number from 1 to factor ({factor!r}), got {recovery!r}")
    return rule


@dataclass(frozen=True)
class Verdict:
    checked: bool  # False: the curve has no such metric
    iteration: int | None = None  # the divergence point; None when the run did not diverge
    description: str = ""

    @property
    def diverged(self) -> bool:
        return self.iteration is not None

    def summary(self) -> dict:
        """train.json's entries: ``divergence`` (a text: an MLflow tag) and, when diverged,
        ``diverged_at`` (the iteration: an MLflow metric)."""
        return {"divergence": self.description, **({"diverged_at": self.iteration} if self.diverged else {})}


def _has_value(row: dict, metric: str) -> bool:
    """Whether a curve row holds the metric. Row 0 (before any step) has no training loss, but it has
    the initial model's validation MSE: the first level a run that blows up before the second row
    climbs from."""
    value = row.get(metric)
    return value is not None and not (row["iteration"] == 0 and not math.isfinite(float(value)))


def detect(rows: list[dict], rule: dict) -> Verdict:
    """The rule above over curve rows (dicts with ``iteration`` and the metric)."""
    metric, factor, after, recovery = rule["metric"], rule["factor"], rule["after"], rule["recovery"]
    points = [(int(row["iteration"]), float(row[metric])) for row in sorted(rows, key=lambda r: r["iteration"])
              if _has_value(row, metric)]
    if not points:
        return Verdict(False, None, f"not checked: the curve has no {metric}")
    level, spikes, index = None, [], 0
    while index < len(points):
        iteration, value = points[index]
        if not math.isfinite(value):
            return Verdict(True, iteration, f"diverged at iteration {iteration:,}: {metric} is {value}")
        if level is not None and iteration >= after and value > factor * level:
            back = next((j for j in range(index + 1, len(points)) if not math.isfinite(points[j][1])
                         or points[j][1] <= recovery * level), None)
            if back is None and index == len(points) - 1:  # no later point to tell a spike from divergence
                spikes.append(f"{iteration:,} (the last curve point: not judged)")
                break
            if back is None or not math.isfinite(points[back][1]):
                return Verdict(True, iteration, f"diverged at iteration {iteration:,}: {metric} {value:.4g} > "
                                                f"{factor:g} × its running minimum {level:.4g}, and never back "
                                                f"within {recovery:g} × it")
            spikes.append(f"{iteration:,} (back by {points[back][0]:,})")
            index = back
            continue
        level = value if level is None else min(level, value)
        index += 1
    if spikes:
        return Verdict(True, None, f"none; {metric} spikes at iteration {', '.join(spikes)}")
    return Verdict(True, None, "none")


def diverged_seeds(summaries: dict[int, dict] | None) -> dict[int, int]:
    """seed → divergence iteration of the seeds whose train.json says the run diverged."""
    return {seed: int(summary["diverged_at"]) for seed, summary in (summaries or {}).items()
            if summary.get("diverged_at") is not None}


def names_diverged_seeds(text) -> bool:
    """Whether a table cell's ``diverged`` entry names seeds (not 'none' or 'not checked')."""
    return isinstance(text, str) and text.startswith("seed")


def seeds_line(diverged: dict[int, int]) -> str:
    """``seed 2 diverged at iteration ~2,000`` for a table: seed → divergence iteration."""
    parts = [f"seed {seed} diverged at iteration ~{iteration:,}" for seed, iteration in sorted(diverged.items())]
    return "; ".join(parts)


def _table_setting(spec: dict, field: str, default: float, low: float, high: float, bound: str) -> float:
    value = spec.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low < value <= high:
        raise ValueError(f"{field}: must be a finite number {bound}, got {value!r}")
    return float(value)


def explosion_factor(spec: dict) -> float:
    """A table's ``explosion_factor`` (default ``EXPLOSION_FACTOR``), checked (the error names the field)."""
    return _table_setting(spec, "explosion_factor", EXPLOSION_FACTOR, 1, math.inf, "> 1")


def explosion_share(spec: dict) -> float:
    """A table's ``explosion_share`` (default ``EXPLOSION_SHARE``), checked (the error names the field)."""
    return _table_setting(spec, "explosion_share", EXPLOSION_SHARE, WORST_TASKS, 1,
                          f"above {WORST_TASKS:g} and at most 1")


def worst_share(errors) -> float:
    """The fraction of the summed per-task test errors that the worst ⌈1 %⌉ of tasks carry; NaN with fewer
    than ``SHARE_MIN_TASKS`` tasks or a sum that is not finite and positive."""
    values = np.sort(np.asarray(errors, dtype=np.float64))[::-1]
    total = values.sum()
    if len(values) < SHARE_MIN_TASKS or not math.isfinite(total) or total <= 0:
        return math.nan
    return float(values[:math.ceil(WORST_TASKS * len(values))].sum() / total)


class Explosion(NamedTuple):
    test: float        # mean test MSE
    validation: float  # validation MSE at the last curve row
    share: float       # worst_share of the test errors (NaN: not judged)


def exploded_seeds(test_errors: dict[int, np.ndarray], summaries: dict[int, dict] | None,
                   factor: float = EXPLOSION_FACTOR, share: float = EXPLOSION_SHARE) -> dict[int, Explosion]:
    """The seeds that exploded on the test tasks (the two signs above), from each seed's per-task test MSE.
    A seed that diverged in training (named as such) or has no finite final validation MSE (another kind
    of run) is not judged."""
    found = {}
    for seed, errors in sorted(test_errors.items()):
        summary = (summaries or {}).get(seed, {})
        validation = summary.get("final_val_mse")
        if summary.get("diverged_at") is not None or not isinstance(validation, (int, float)) \
                or not math.isfinite(validation):
            continue
        test, carried = float(np.mean(errors)), worst_share(errors)
        if not math.isfinite(test) or test > factor * validation or carried > share:
            found[seed] = Explosion(test, float(validation), carried)
    return found


def exploded_line(exploded: dict[int, Explosion]) -> str:
    """``seed 0 exploded on the test tasks (mean test MSE 14.7, validation 2.78; its worst 1% of tasks carry
    83% of it)`` for a table or a figure page (the share where it was judged)."""
    def numbers(found: Explosion) -> str:
        text = f"mean test MSE {found.test:.3g}, validation {found.validation:.3g}"
        if math.isfinite(found.share):
            text += f"; its worst {WORST_TASKS:.0%} of tasks carry {found.share:.0%} of it"
        return text
    return "; ".join(f"seed {seed} exploded on the test tasks ({numbers(found)})"
                     for seed, found in sorted(exploded.items()))


def _bound(section: dict, field: str) -> float | None:
    value = section.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"stall.{field}: must be a finite number, got {value!r}")
    return float(value)


def stall_rule(spec: dict) -> dict | None:
    """A table's (or a grid's) ``stall`` section with its default share, checked (errors name the field); None
    when it has none. ``below`` names a collapse (stalled), ``above`` a blow-up; a rule has one or both."""
    section = spec.get("stall")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ValueError(f"stall: expected a mapping with metric, below and/or above, and share, got {section!r}")
    known = ["above", "below", "metric", "share"]
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"stall.{unknown[0]}: unknown option of the stall rule; known: {known}")
    metric = section.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"stall.metric: expected the name of a curve column, got {metric!r}")
    below, above = _bound(section, "below"), _bound(section, "above")
    if below is None and above is None:
        raise ValueError("stall.below: the rule needs a level, below (a collapse) or above (a blow-up) or both")
    if below is not None and above is not None and not below < above:
        raise ValueError(f"stall.above: must be above stall.below ({below:g}), got {above:g}")
    share = section.get("share", STALL_SHARE)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ValueError(f"stall.share: must be a number from 0 to below 1, got {share!r}")
    return {"metric": metric, "below": below, "above": above, "share": float(share)}


class Stall(NamedTuple):
    share: float  # of the curve rows after iteration 0 with the metric beyond the level
    first: int    # the first iteration at which it was
    metric: str
    level: float
    side: str     # "<": stalled (below the level), ">": blew up (above it)

    @property
    def word(self) -> str:
        return "stalled" if self.side == "<" else "blew up"


def stalled_seeds(curves: dict[int, pd.DataFrame] | None, summaries: dict[int, dict] | None,
                  rule: dict | None) -> dict[int, Stall]:
    """seed → Stall for the seeds whose curve has the rule's metric below its ``below`` level (stalled) or above
    its ``above`` level (blew up) at more than its share of the rows after iteration 0 (the larger share where
    both are). A seed that diverged (named as such) or whose curve lacks the metric is not judged; nor is any
    seed without a rule."""
    if not rule:
        return {}
    metric, found = rule["metric"], {}
    for seed, curve in sorted((curves or {}).items()):
        if (summaries or {}).get(seed, {}).get("diverged_at") is not None or metric not in curve.columns:
            continue
        recorded = curve[curve["iteration"] > 0].dropna(subset=[metric])
        if recorded.empty:
            continue
        values, iterations = recorded[metric].to_numpy(np.float64), recorded["iteration"].to_numpy()
        judged = []
        for side, level in (("<", rule.get("below")), (">", rule.get("above"))):
            if level is None:
                continue
            beyond = values < level if side == "<" else values > level
            share = float(beyond.mean())
            if share > rule["share"]:
                judged.append(Stall(share, int(iterations[beyond][0]), metric, level, side))
        if judged:
            found[seed] = max(judged, key=lambda stall: stall.share)
    return found


def stalled_line(stalled: dict[int, Stall]) -> str:
    """``seeds 1, 4 stalled: simol_r_mean < 0.01 at 90%, 82% of their curve rows (first at iteration 1,100,
    1,600)``, then likewise the seeds that blew up; one rule serves a table, so each level is said once."""
    listed = lambda parts: ", ".join(parts)  # noqa: E731
    parts = []
    for side in ("<", ">"):
        seeds = sorted(seed for seed, stall in stalled.items() if stall.side == side)
        if not seeds:
            continue
        first, shares = stalled[seeds[0]], listed(f"{stalled[seed].share:.0%}" for seed in seeds)
        parts.append(f"seed{'s' if len(seeds) > 1 else ''} {listed(str(seed) for seed in seeds)} {first.word}: "
                     f"{first.metric} {side} {first.level:g} at {shares} of {'their' if len(seeds) > 1 else 'its'} "
                     f"curve rows (first at iteration {listed(f'{stalled[seed].first:,}' for seed in seeds)})")
    return "; ".join(parts)


def stall_words(rule: dict) -> str:
    """What the rule calls stalled and blown up, for a legend."""
    return ", ".join(f"'{word}' a seed whose {rule['metric']} (a column of its training curve) is {side} {level:g} "
                     f"at more than {rule['share']:.0%} of its curve rows"
                     for word, side, level in (("stalled", "below", rule["below"]), ("blew up", "above", rule["above"]))
                     if level is not None)


def named_seeds_line(diverged: dict[int, int], exploded: dict[int, Explosion],
                     stalled: dict[int, Stall] | None = None) -> str:
    """The seeds that diverged, then those that exploded on the test tasks, then those that stalled, for a
    table or a figure page."""
    return "; ".join(part for part in (seeds_line(diverged), exploded_line(exploded), stalled_line(stalled or {}))
                     if part)
