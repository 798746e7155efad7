"""A paper table with our numbers beside the paper's, and a verdict per cell.

Per cell: our mean ± 95 % CI over the pooled meta-test tasks (``stats.summarise``), each seed's
value and the Student-t 95 % CI over seeds (a training run is the unit of replication), the
paper's mean ± CI, and two verdicts. ``verdict``: whether our mean lies inside the paper's
interval ('inside': |ours − paper mean| ≤ paper CI, else 'outside'; 'no paper value' where the
paper gives no number — not 'n/a', which pandas.read_csv would turn into NaN; 'not run' where we
have no runs for the cell, e.g. a literature row). ``seed_verdict``: whether the paper's value is
consistent with ours under seed variation ('consistent': our seed interval and the paper's
interval overlap, |ours − paper mean| ≤ seed CI + paper CI; else 'inconsistent', as where a seed's
value is not finite (a blown-up run: no finite mean, no interval); 'too wide' where
they overlap only because our seed interval is wider than both our mean and the paper's value —
seed CI > max(|ours|, |paper mean|), e.g. one seed far off, a diverged or exploding one — since
such an interval overlaps nearly any value of that size; 'one seed' where there is no seed
interval). ``diverged``: the seeds whose training diverged (their train.json's verdict,
taskbal.divergence) and where, those that exploded on the test tasks (mean test MSE far above
their final validation MSE) and, where the table has a ``stall`` rule, those that stalled (the rule's
curve column near zero for most of training: read from the runs' curve.csv), with
``mean_without_diverged``, the other seeds' mean; the cell's value keeps every seed. A column with
``paper_column`` (another reading of the same experiment) is judged against that column's published value.
Per column: our best row (bold; rows whose value is NaN are not ranked), a star when its
improvement over our second best passes the two-sided paired t-test over seeds (per-seed values
paired by seed) at the table's significance level (default 0.1, as the paper's captions define
it; only the best cell can carry a star or a p-value; the task-paired test's p-value is kept in
``p_value_tasks``), and whether our ranking of the rows that have both values equals
the paper's ('kept' / 'changed'; 'not comparable' with fewer than two such rows), with Kendall's
tau between the two rankings and whether the best row is the same. Ties keep the config's row
order. Our values are printed with ``spec['decimals']`` (default 3) decimals; the paper's with
``spec['paper_decimals']``, by default the most decimals any paper value of the table has
(YAML reads the paper's "1.70" as 1.7; this prints it as the paper does, and never rounds one).
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .divergence import (
    SHARE_MIN_TASKS,
    WORST_TASKS,
    Explosion,
    Stall,
    diverged_seeds,
    exploded_seeds,
    explosion_factor,
    explosion_share,
    named_seeds_line,
    names_diverged_seeds,
    stall_rule,
    stall_words,
    stalled_seeds,
)
from .io import atomic_path
from .stats import paired_t_test, seed_paired_t_test, summarise

COLUMNS = ["table", "scale", "row", "column", "metric", "ours_mean", "ours_ci", "n_seeds", "n", "seeds",
           "seed_values", "seed_ci", "paper_mean", "paper_ci", "verdict", "seed_verdict", "best", "significant",
           "p_value", "p_value_tasks", "ordering", "kendall_tau", "best_agrees", "diverged",
           "mean_without_diverged"]
# A cell's seeds and per-seed values are JSON lists in the CSV ("[0, 1, 2]"): one text field each.
# ``diverged``: which seeds diverged and where, or exploded on the test tasks (taskbal.divergence), 'none'
# or 'not checked'; and ``mean_without_diverged`` the mean of the other seeds' values (NaN when none or all
# are named).


def verdict(ours: float | None, paper: list | None) -> str:
    """``ours`` is None when the cell was not run; NaN (a diverged run) is 'outside'."""
    if ours is None:
        return "not run"
    if paper is None:
        return "no paper value"
    return "inside" if abs(ours - paper[0]) <= paper[1] else "outside"


def seed_verdict(ours: float | None, seed_ci: float, paper: list | None) -> str:
    """Whether the paper's value is consistent with ours under seed variation (the two intervals overlap)."""
    if ours is None:
        return "not run"
    if paper is None:
        return "no paper value"
    if not math.isfinite(ours):  # a seed blew up (NaN or infinite): no interval of ours reaches the paper's value
        return "inconsistent"
    if math.isnan(seed_ci):
        return "one seed"
    if not abs(ours - paper[0]) <= seed_ci + paper[1]:
        return "inconsistent"
    return "too wide" if seed_ci > max(abs(ours), abs(paper[0])) else "consistent"


def ranking(values: dict[str, float], lower_is_better: bool) -> list[str]:
    """Rows best first; ``sorted`` is stable, so ties keep the config's row order."""
    return sorted(values, key=lambda row: values[row] if lower_is_better else -values[row])


def column_verdicts(lines: list[dict], lower_is_better: bool) -> dict:
    """Ordering kept or changed among rows that have both our value and the paper's."""
    both = [l for l in lines if not math.isnan(l["paper_mean"]) and not math.isnan(l["ours_mean"])]
    if len(both) < 2:
        return {"ordering": "not comparable", "kendall_tau": float("nan"), "best_agrees": None}
    ours = ranking({l["row"]: l["ours_mean"] for l in both}, lower_is_better)
    paper = ranking({l["row"]: l["paper_mean"] for l in both}, lower_is_better)
    tau = scipy_stats.kendalltau([ours.index(r) for r in paper], list(range(len(paper)))).statistic
    return {"ordering": "kept" if ours == paper else "changed", "kendall_tau": float(tau),
            "best_agrees": ours[0] == paper[0]}


def column_sample(per_seed: dict[int, np.ndarray | pd.DataFrame], column: dict):
    """{seed: values} (and {seed: groups} for group metrics) of one cell.

    A seed's entry is either the per-task values already, or its eval.csv as a DataFrame; then
    the rows matching the column's ``where`` are taken and its ``value`` column (default ``mse``).
    """
    if not all(isinstance(v, pd.DataFrame) for v in per_seed.values()):
        return per_seed, None
    value = column.get("value", "mse")
    values, groups = {}, {}
    for seed, frame in per_seed.items():
        for key, wanted in (column.get("where") or {}).items():
            if key not in frame.columns:
                raise ValueError(f"column {column['key']!r}: 'where' names {key!r}, which eval.csv does not have "
                                 f"(it has {list(frame.columns)})")
            frame = frame[frame[key].astype(str) == str(wanted)]
        if value not in frame.columns:
            raise ValueError(f"column {column['key']!r}: value {value!r} is not a column of eval.csv "
                             f"(it has {list(frame.columns)})")
        values[seed] = frame[value].to_numpy(dtype=float) * (100.0 if column.get("percent") else 1.0)
        if "group" in frame.columns:
            groups[seed] = frame["group"].to_numpy()
    return values, groups or None


def train_sample(per_seed: dict[int, dict], column: dict) -> dict[int, np.ndarray]:
    """{seed: [value]} of a column that reads train.json (``source: train``), e.g. a run's seconds per
    meta-update (``step_seconds_median``): one value per training run."""
    value = column.get("value")
    missing = [seed for seed, summary in per_seed.items() if not isinstance(summary.get(value), (int, float))]
    if missing:
        raise ValueError(f"column {column['key']!r}: value {value!r} is not a number of train.json of seeds "
                         f"{missing} (trained before it was recorded?)")
    return {seed: np.array([float(summary[value])]) for seed, summary in per_seed.items()}


def delta_p_samples(spec: dict, column: dict, cells: dict, trained: dict | None) -> dict[str, tuple]:
    """Per row, each seed's Δp (thesis Eq. 3.33, LibMTL's ``count_improvement``), in percent:

        Δp = 100 · (1/m) Σ_i (1/N_i) Σ_j (−1)^{s_ij} (M_ij − M_ij^base) / M_ij^base

    over the tasks i of ``delta_p.tasks`` (each a list of column keys: the task's N_i metrics), with
    s_ij = 1 where the metric's column ranks lower-is-better. M_ij is the seed's value of the column
    (its mean over the column's eval rows) and M_ij^base the mean over seeds of row ``delta_p.base``'s
    values, so the mean of the seeds' Δp is the Δp of the mean metrics, as the thesis computes it."""
    rule = column["delta_p"]
    by_key = {c["key"]: c for c in spec["columns"]}
    metrics = [(i, by_key[key]) for i, keys in enumerate(rule["tasks"]) for key in keys]
    per_column = {c["key"]: column_samples(spec, c, cells, trained) for _, c in metrics}
    base = rule["base"]
    if any(base not in samples for samples in per_column.values()):
        return {}
    base_mean = {key: float(np.mean([np.mean(v) for v in samples[base][0].values()]))
                 for key, samples in per_column.items()}
    out = {}
    for row in spec["rows"]:
        label = row["label"]
        if any(label not in samples for samples in per_column.values()):
            continue
        seeds = sorted(set.intersection(*(set(samples[label][0]) for samples in per_column.values())))
        values = {}
        for seed in seeds:
            per_task: dict[int, list[float]] = {}
            for task, c in metrics:
                ours, reference = float(np.mean(per_column[c["key"]][label][0][seed])), base_mean[c["key"]]
                sign = -1.0 if c.get("lower_is_better", spec.get("lower_is_better", True)) else 1.0
                per_task.setdefault(task, []).append(sign * (ours - reference) / reference)
            values[seed] = np.array([100.0 * float(np.mean([np.mean(v) for v in per_task.values()]))])
        out[label] = (values, None)
    return out


def column_samples(spec: dict, column: dict, cells: dict, trained: dict | None) -> dict[str, tuple]:
    """Per row label of one column, ``(values per seed, groups per seed or None)``: the row's runs; for a
    row that says ``extrapolate: {row, factor}``, that row's values times the factor; with the column's
    ``relative_to: <row>``, every row's values divided by that row's, seed by seed; with ``delta_p``, each
    seed's Δp against a base row (:func:`delta_p_samples`)."""
    if column.get("delta_p"):
        return delta_p_samples(spec, column, cells, trained)
    samples = {}
    for row in spec["rows"]:
        key = (row["label"], column["key"])
        if column.get("source") == "train":
            if (trained or {}).get(key):
                samples[row["label"]] = (train_sample(trained[key], column), None)
        elif cells.get(key):
            samples[row["label"]] = column_sample(cells[key], column)
    for row in spec["rows"]:
        rule = row.get("extrapolate")
        if rule and rule["row"] in samples:
            values, groups = samples[rule["row"]]
            samples[row["label"]] = ({seed: v * float(rule["factor"]) for seed, v in values.items()}, groups)
    reference = column.get("relative_to")
    if reference:
        if reference not in samples:
            return {}
        base = samples[reference][0]
        samples = {label: ({seed: v / base[seed] for seed, v in values.items()}, groups)
                   for label, (values, groups) in samples.items()}
    return samples


def divergence_text(trained: dict[int, dict] | None, diverged: dict[int, int],
                    exploded: dict[int, Explosion] | None = None, stalled: dict[int, Stall] | None = None) -> str:
    """The cell's ``diverged`` entry: which seeds diverged where, which exploded on the test tasks and which
    stalled; 'none'; or 'not checked' when no seed's train.json has a verdict (trained before divergence was
    recorded, or a curve without the monitored loss)."""
    if diverged or exploded or stalled:
        return named_seeds_line(diverged, exploded or {}, stalled)
    checked = [s for s in (trained or {}).values() if not str(s.get("divergence", "not checked")).startswith("not")]
    return "none" if checked else "not checked"


def test_errors(per_seed: dict[int, np.ndarray | pd.DataFrame] | None, column: dict) -> dict[int, np.ndarray]:
    """seed → per-task MSE over the cell's meta-test tasks (every line of its eval.csv), for the seeds whose
    eval.csv has an ``mse``; none for a column evaluated on another split's tasks (``evaluate_on``),
    which its validation tasks do not come from."""
    if not per_seed or column.get("evaluate_on"):
        return {}
    return {seed: frame["mse"].to_numpy(np.float64) for seed, frame in per_seed.items()
            if isinstance(frame, pd.DataFrame) and "mse" in frame.columns}


def without_diverged(summary, left_out) -> float:
    """Mean of the per-seed values of the seeds not in ``left_out`` (those that diverged, exploded or stalled);
    NaN when none or all are."""
    if summary is None or not left_out:
        return float("nan")
    kept = [value for seed, value in zip(summary.seeds, summary.per_seed) if seed not in left_out]
    return float(np.mean(kept)) if kept else float("nan")


def build_table(spec: dict, cells: dict[tuple[str, str], dict[int, np.ndarray | pd.DataFrame]],
                scale: str, trained: dict[tuple[str, str], dict[int, dict]] | None = None,
                curves: dict[tuple[str, str], dict[int, pd.DataFrame]] | None = None) -> pd.DataFrame:
    """The table's lines (COLUMNS); ``trained``: per cell, each seed's train.json (for divergence);
    ``curves``: per cell, each seed's curve.csv (for the table's stall rule, if it has one)."""
    level = spec.get("significance_level", 0.1)
    factor, share, stall = explosion_factor(spec), explosion_share(spec), stall_rule(spec)
    lines = []
    for column in spec["columns"]:
        metric = column.get("metric", "overall")
        # a column may rank the other way (a spread over tasks, where the table's values are accuracies)
        lower = column.get("lower_is_better", spec.get("lower_is_better", True))
        summaries, column_lines = {}, []
        samples = column_samples(spec, column, cells, trained)
        for row in spec["rows"]:
            paper = (row.get("paper") or {}).get(column.get("paper_column", column["key"]))
            summary = None
            if row["label"] in samples:
                values, groups = samples[row["label"]]
                summary = summarise(values, metric, lower, groups)
            if summary:
                summaries[row["label"]] = summary
            ours = summary.mean if summary else float("nan")
            key = (row["label"], column["key"])
            diverged = diverged_seeds((trained or {}).get(key)) if summary else {}
            exploded = exploded_seeds(test_errors(cells.get(key), column), (trained or {}).get(key), factor,
                                      share) if summary else {}
            stalled = stalled_seeds((curves or {}).get(key), (trained or {}).get(key), stall) if summary else {}
            seed_ci = summary.seed_ci if summary else float("nan")
            column_lines.append({
                "table": spec["name"], "scale": scale, "row": row["label"], "column": column["key"],
                "metric": metric, "ours_mean": ours, "ours_ci": summary.ci if summary else float("nan"),
                "n_seeds": summary.n_seeds if summary else 0, "n": summary.n if summary else 0,
                "seeds": json.dumps(list(summary.seeds)) if summary else float("nan"),
                "seed_values": json.dumps([float(v) for v in summary.per_seed]) if summary else float("nan"),
                "seed_ci": seed_ci,
                "paper_mean": float(paper[0]) if paper else float("nan"),
                "paper_ci": float(paper[1]) if paper else float("nan"),
                "verdict": verdict(summary.mean if summary else None, paper),
                "seed_verdict": seed_verdict(summary.mean if summary else None, seed_ci, paper),
                "best": False, "significant": False, "p_value": float("nan"), "p_value_tasks": float("nan"),
                "diverged": divergence_text((trained or {}).get(key), diverged, exploded, stalled)
                if summary else float("nan"),
                "mean_without_diverged": without_diverged(summary, {*diverged, *exploded, *stalled})})
        finite = {r: s.mean for r, s in summaries.items() if not math.isnan(s.mean)}
        if finite:
            order = ranking(finite, lower)
            best = next(l for l in column_lines if l["row"] == order[0])
            best["best"] = True
            if len(order) > 1:
                try:
                    best["p_value"] = seed_paired_t_test(summaries[order[0]], summaries[order[1]])
                    best["p_value_tasks"] = paired_t_test(summaries[order[0]], summaries[order[1]])
                except ValueError as error:
                    raise ValueError(f"{spec['name']}, column {column['key']!r}: {order[0]!r} against "
                                     f"{order[1]!r}: {error}") from error
                best["significant"] = bool(best["p_value"] < level and finite[order[0]] != finite[order[1]])
        extra = column_verdicts(column_lines, lower)
        for line in column_lines:
            line.update(extra)
        lines += column_lines
    return pd.DataFrame(lines, columns=COLUMNS)


def fmt(value: float, decimals: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def paper_decimals(spec: dict) -> int:
    """Decimals for the paper's values: ``spec['paper_decimals']``, else the most any of them has."""
    if "paper_decimals" in spec:
        return int(spec["paper_decimals"])
    values = [v for row in spec["rows"] for pair in (row.get("paper") or {}).values() if pair for v in pair]
    return min(6, max([-Decimal(repr(float(v))).as_tuple().exponent for v in values] + [0]))


def paper_text(line, spec: dict, pm: str = "±") -> str:
    digits = paper_decimals(spec)
    return f"{line.paper_mean:.{digits}f} {pm} {line.paper_ci:.{digits}f}"


def markdown_cell(line: pd.Series, decimals: int, spec: dict) -> str:
    if line.verdict == "not run":
        ours = "not run"
    else:
        ours = f"{fmt(line.ours_mean, decimals)} ± {fmt(line.ours_ci, decimals)}"
    if line.best:
        ours = f"**{ours}**"
    if line.significant:
        ours += "\\*"  # escaped: "**x***" would not render as bold x followed by a star
    if line.verdict != "not run":
        ours += f" [± {fmt(line.seed_ci, decimals)}]"
    if math.isnan(line.paper_mean):
        return f"{ours} (paper: n/a)" + diverged_text(line, decimals)
    paper = f"paper {paper_text(line, spec)}"
    if line.verdict == "not run":
        return f"{ours} ({paper})"
    return f"{ours} ({paper}, {line.verdict}; {line.seed_verdict})" + diverged_text(line, decimals)


def diverged_text(line: pd.Series, decimals: int) -> str:
    """`` — seed 2 diverged at iteration ~2,000; without: 0.512`` (nothing when no seed diverged)."""
    if not names_diverged_seeds(line.diverged):
        return ""
    return f" — {line.diverged}; without: {fmt(line.mean_without_diverged, decimals)}"


def seed_values_cell(line: pd.Series, decimals: int) -> str:
    if not isinstance(line.seed_values, str):
        return "–"
    return ", ".join(fmt(float(v), decimals) for v in json.loads(line.seed_values))


def md_escape(text) -> str:
    """Keep labels and captions literal: '|' would split a table cell, '*' and '_' start emphasis."""
    return "".join("\\" + char if char in "|*_" else char for char in str(text))


def not_run_reasons(spec: dict, scale: str) -> dict[str, list[str]]:
    """Why cells of the table are not run at ``scale`` (``config.cell_not_run``) → where: a column not run
    in any row is named once, other cells as "row / column"."""
    from .config import cell_not_run

    # a not_run row says why in its own line, an extrapolated row in the extrapolation line
    rows = [row for row in spec["rows"] if "not_run" not in row and "extrapolate" not in row]
    reasons: dict[str, list[str]] = {}
    for column in spec["columns"]:
        whys = [cell_not_run(spec, scale, row, column) for row in rows]
        if whys and whys[0] and all(why == whys[0] for why in whys):
            reasons.setdefault(whys[0], []).append(f"column {md_escape(column['label'])}")
            continue
        for row, why in zip(rows, whys):
            if why:
                reasons.setdefault(why, []).append(f"{md_escape(row['label'])} / {md_escape(column['label'])}")
    return reasons


def to_markdown(frame: pd.DataFrame, spec: dict, scale: str, provenance: dict) -> str:
    decimals = spec.get("decimals", 3)
    columns = spec["columns"]
    out = [f"# {spec['name']}: {spec['source']}", "",
           f"> Paper's caption: {md_escape(' '.join(spec['title'].split()))}", "",
           f"**Scale: {provenance.get('scale_description', scale)}**", ""]
    out += [f"- {key.replace('_', ' ')}: {value}" for key, value in provenance.items() if key != "scale_description"]
    out += ["", "| " + " | ".join(["method"] + [md_escape(c["label"]) for c in columns]) + " |",
            "|" + "---|" * (len(columns) + 1)]
    for row in spec["rows"]:
        cells = []
        for column in columns:
            line = frame[(frame.row == row["label"]) & (frame.column == column["key"])].iloc[0]
            cells.append(markdown_cell(line, decimals, spec))
        out.append("| " + " | ".join([md_escape(row["label"])] + cells) + " |")
    quoted = [f"{md_escape(row['label'])}, {md_escape(next(c['label'] for c in columns if c['key'] == key))}: "
              f"quoted by the paper from {md_escape(source)}" for row in spec["rows"]
              for key, source in (row.get("quoted") or {}).items()]
    if quoted:
        out += ["", "Paper values the paper quotes from other publications (not its own runs): " + "; ".join(quoted)
                + "."]
    extrapolated = [f"{md_escape(row['label'])}: {md_escape(row['extrapolate']['why'])}" for row in spec["rows"]
                    if "extrapolate" in row]
    if extrapolated:
        out += ["", "Extrapolated, not run: " + "; ".join(extrapolated) + "."]
    skipped = not_run_reasons(spec, scale)
    if skipped:
        out += ["", "Not run here: " + "; ".join(f"{', '.join(where)}: {md_escape(why)}"
                                                  for why, where in skipped.items()) + "."]
    seeds = next((json.loads(line.seeds) for line in frame.itertuples() if isinstance(line.seeds, str)), [])
    out += ["", f"Each seed's value (seeds {', '.join(map(str, seeds))}, in that order):", "",
            "| " + " | ".join(["method"] + [md_escape(c["label"]) for c in columns]) + " |",
            "|" + "---|" * (len(columns) + 1)]
    for row in spec["rows"]:
        cells = [seed_values_cell(frame[(frame.row == row["label"]) & (frame.column == c["key"])].iloc[0], decimals)
                 for c in columns]
        out.append("| " + " | ".join([md_escape(row["label"])] + cells) + " |")
    out += ["", "Ordering of the methods, ours against the paper's:"]
    for column in columns:
        line = frame[frame.column == column["key"]].iloc[0]
        agrees = {True: "yes", False: "no"}.get(line.best_agrees, "–")
        out.append(f"- {column['label']}: {line.ordering} (Kendall's tau {fmt(line.kendall_tau, 2)}; "
                   f"same best method: {agrees})")
    out += ["", "Legend: our value is the mean ± 95 % CI over the pooled seeds and meta-test tasks of "
            "the runs listed above (1.96 · sd / √N); in brackets the Student-t 95 % CI over the seeds' "
            "values (a training run is the unit of replication; each seed's value is listed below the "
            "table); **bold** is our best per column; \\* marks a paired t-test over seeds (per-seed "
            "values, paired by seed) of our best against our second best with p < "
            f"{spec.get('significance_level', 0.1)}. The values marked 'paper' are the paper's own published "
            f"numbers, copied from the publication ({spec['source']}), not ours; 'inside'/'outside' says "
            "whether our mean lies within the paper's 95 % CI; 'consistent'/'inconsistent' whether the "
            "paper's interval and our interval over seeds overlap ('inconsistent' too where a seed's value is "
            "not finite; 'too wide': they overlap only because our "
            "interval over seeds is wider than both our mean and the paper's value, which says nothing; 'one "
            "seed': we have no interval over seeds); 'paper: n/a': the paper gives no value; 'not run': we "
            "have no runs for the cell; "
            "'diverged at iteration ~i' names a seed whose training loss became non-finite or jumped far "
            "above its running minimum there and stayed (the rule is in taskbal.divergence), 'exploded on the "
            "test tasks' a seed whose mean test MSE is non-finite or above "
            f"{explosion_factor(spec):g} × its validation MSE at the end of training, or whose worst "
            f"{WORST_TASKS:.0%} of test tasks carry more than {explosion_share(spec):.0%} of its test MSE "
            f"(judged from {SHARE_MIN_TASKS} tasks on), {stall_legend(spec)}and 'without' "
            "is the mean of the other seeds' values (the value shown first includes every seed).", ""]
    return "\n".join(out)


def stall_legend(spec: dict) -> str:
    """The legend's words on the table's stall rule (nothing for a table without one)."""
    rule = stall_rule(spec)
    return f"{stall_words(rule)} (the rule is the table's stall section), " if rule else ""


TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


TEX_PM = "$\\pm$"


def tex_escape(text) -> str:
    return "".join(TEX_SPECIALS.get(char, char) for char in str(text))


def to_latex(frame: pd.DataFrame, spec: dict, scale: str, provenance: dict) -> str:
    decimals = spec.get("decimals", 3)
    columns = spec["columns"]
    described = provenance.get("scale_description")
    out = ["% Generated by taskbal.tables; needs \\usepackage{booktabs}.",
           "\\begin{table}[t]", "\\centering",
           f"\\caption{{{tex_escape(spec['source'])} reproduced at scale \\texttt{{{tex_escape(scale)}}}"
           + (f" ({tex_escape(described)})" if described else "") + ". Ours: mean $\\pm$ 95\\% CI; "
           "in brackets the Student-t 95\\% CI over seeds; in parentheses the paper's published value, copied "
           "from the publication. \\textbf{Bold}: our best; $^{*}$: paired t-test over seeds against our "
           f"second best, $p<{spec.get('significance_level', 0.1)}$. "
           f"Paper's caption: {tex_escape(' '.join(spec['title'].split()))}}}",
           f"\\label{{tab:{spec['name']}-{scale}}}",
           "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
           " & ".join(["Method"] + [tex_escape(c["label"]) for c in columns]) + " \\\\", "\\midrule"]
    for row in spec["rows"]:
        cells = []
        for column in columns:
            line = frame[(frame.row == row["label"]) & (frame.column == column["key"])].iloc[0]
            ours = ("--" if line.verdict == "not run"
                    else f"{fmt(line.ours_mean, decimals)} $\\pm$ {fmt(line.ours_ci, decimals)}")
            if line.best:
                ours = f"\\textbf{{{ours}}}"
            if line.significant:
                ours += "$^{*}$"
            if line.verdict != "not run":
                ours += f" [{fmt(line.seed_ci, decimals)}]"
            paper = " (n/a)" if math.isnan(line.paper_mean) else " (" + paper_text(line, spec, TEX_PM) + ")"
            cells.append(ours + paper)
        out.append(" & ".join([tex_escape(row["label"])] + cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def write_table(frame: pd.DataFrame, spec: dict, out_prefix: Path, scale: str, provenance: dict,
                record: str | None = None) -> list[Path]:
    """Write ``out_prefix``.csv, .md and .tex (and .json, the report's ``record``), each atomically
    (temporary file, then os.replace).

    Markdown and LaTeX are rendered before anything is written, so a rendering error leaves
    no partial set of outputs.
    """
    out_prefix = Path(out_prefix)
    outputs = {".csv": None, ".md": to_markdown(frame, spec, scale, provenance),
               ".tex": to_latex(frame, spec, scale, provenance)}
    if record is not None:
        outputs[".json"] = record
    written = []
    for suffix, text in outputs.items():
        path = out_prefix.with_name(out_prefix.name + suffix)
        with atomic_path(path) as tmp:
            if text is None:
                frame.to_csv(tmp, index=False)
            else:
                tmp.write_text(text)
        written.append(path)
    return written
