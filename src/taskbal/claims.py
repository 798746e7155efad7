"""Verdicts on a paper's qualitative claims, for figures that print few or no numbers.

A figure config lists ``claims``; each compares one scalar of the runs' ``eval.json`` (say
the final distance to the Pareto front) between two rows of one column:

    claims:
      - text: "SIMOL ends closer to the Pareto front than mini-batch MGDA"
        value: distance_to_front   # key of eval.json (or curve_mean_<curve.csv column>: its mean
                                   # over the training curve after iteration 0)
        better: SIMOL              # row label
        than: mini-batch MGDA      # row label
        column: main               # column key
        lower_is_better: true

A claim about every column of a figure (a sweep: Nash-GBML's "outperforms GBML in most settings",
one column per batch size) names ``columns: [<key>, ...]`` (or ``columns: all``) instead of
``column``: it is judged once per column, each verdict's text ending "(here: <column label>)".

The verdict is 'holds' when the mean over seeds of ``better`` beats that of ``than``, else
'does not hold'; with two or more seeds the two-sided paired t-test over seeds (paired by
seed: both rows use the same split and seeds) says whether the difference is significant at the
table's ``significance_level``. A claim whose rows were not run is 'not run'.

``than_value`` reads another key for the ``than`` row (a row against itself earlier in training:
``value: curve_end_<column>``, ``than_value: curve_start_<column>``; or one curve of a run against
another of the same run). ``relation: similar`` with ``margin: m`` claims *no difference*: it holds when
the two means differ by at most m (the paper gives no margin: the config says whose it is), and the
paired test is reported beside it; ``relation: different`` claims a difference of more than m.

Numbers a figure's text does state go under a row's ``paper:`` (column key → [value, CI]) as in
tables; with ``figure: {paper_value: <eval.json key>}`` each is set against our mean over seeds of
that key, with the verdict 'reached' when ours is at least as good (the spec's ``lower_is_better``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

from .stats import ci95


def seed_values(finals: dict[tuple[str, str], dict[int, dict]], row: str, column: str, key: str) -> np.ndarray:
    per_seed = finals.get((row, column))
    if not per_seed:
        return np.array([])
    missing = [seed for seed, summary in per_seed.items() if key not in summary]
    if missing:
        raise ValueError(f"claim value {key!r}: eval.json of row {row!r}, column {column!r}, seed {missing[0]} "
                         f"has no such key (it has {sorted(per_seed[missing[0]])})")
    return np.array([float(per_seed[seed][key]) for seed in sorted(per_seed)])


def judge(claim: dict, finals: dict, level: float) -> dict:
    better = seed_values(finals, claim["better"], claim["column"], claim["value"])
    than = seed_values(finals, claim["than"], claim["column"], claim.get("than_value", claim["value"]))
    lower = claim.get("lower_is_better", True)
    result = {"text": claim["text"], "value": claim["value"], "than_value": claim.get("than_value", claim["value"]),
              "better": claim["better"], "than": claim["than"],
              "column": claim["column"], "better_mean": float("nan"), "than_mean": float("nan"),
              "better_ci": float("nan"), "than_ci": float("nan"), "p_value": float("nan"),
              "verdict": "not run", "significant": False}
    if better.size == 0 or than.size == 0:
        return result
    result.update(better_mean=float(better.mean()), than_mean=float(than.mean()),
                  better_ci=ci95(better), than_ci=ci95(than))
    relation = claim.get("relation", "better")
    if relation == "similar":
        holds = abs(better.mean() - than.mean()) <= claim["margin"]
    elif relation == "different":
        holds = abs(better.mean() - than.mean()) > claim["margin"]
    else:
        holds = better.mean() < than.mean() if lower else better.mean() > than.mean()
    result["verdict"] = "holds" if holds else "does not hold"
    # The paired test is undefined when the per-seed differences do not vary (scipy warns, returns NaN).
    if (better.size == than.size and better.size >= 2
            and np.ptp(better - than) > 1e-9 * max(1.0, float(np.abs(better - than).max()))):
        result["p_value"] = float(scipy_stats.ttest_rel(better, than).pvalue)
        result["significant"] = bool(result["p_value"] < level)
    return result


def paper_numbers(spec: dict, finals: dict, key: str, lower: bool) -> list[dict]:
    """Each number a figure's rows give under ``paper:`` (per column key: [value, CI]) against our mean
    over seeds of ``key`` in the runs' eval.json; 'reached' when ours is at least as good."""
    results = []
    for row in spec["rows"]:
        for column, reported in (row.get("paper") or {}).items():
            if reported is None:
                continue
            paper = float(reported[0])
            ours = seed_values(finals, row["label"], column, key)
            result = {"row": row["label"], "column": column, "paper": paper, "ours": float("nan"),
                      "ours_ci": float("nan"), "ratio": float("nan"), "verdict": "not run"}
            if ours.size:
                mean = float(ours.mean())
                reached = mean <= paper if lower else mean >= paper
                result.update(ours=mean, ours_ci=ci95(ours), ratio=mean / paper if paper else float("nan"),
                              verdict="reached" if reached else "not reached")
            results.append(result)
    return results


def fmt(value: float | None) -> str:
    """Four significant digits; '–' for a missing value (NaN here, None in a JSON record)."""
    return "–" if value is None or math.isnan(value) else f"{value:.4g}"


def expanded_claims(spec: dict) -> list[dict]:
    """Every claim once per column it is about (``column``, or each of ``columns``); a row label or column
    key that the figure does not have is an error (it would otherwise read as 'not run')."""
    claims = spec.get("claims") or []
    labels = {column["key"]: column["label"] for column in spec["columns"]} if claims else {}
    rows = {row["label"] for row in spec["rows"]}
    out = []
    for claim in claims:
        unknown = [claim[side] for side in ("better", "than") if claim[side] not in rows]
        if unknown:
            raise ValueError(f"claim {claim['text']!r}: {unknown[0]!r} is not a row of {spec['name']} "
                             f"(rows: {sorted(rows)})")
        if "column" in claim:
            keys, suffix = [claim["column"]], False
        else:
            keys, suffix = (list(labels) if claim["columns"] == "all" else claim["columns"]), True
        for key in keys:
            if key not in labels:
                raise ValueError(f"claim {claim['text']!r}: {key!r} is not a column of {spec['name']} "
                                 f"(columns: {list(labels)})")
            single = {k: v for k, v in claim.items() if k != "columns"}
            text = f"{claim['text']} (here: {labels[key]})" if suffix else claim["text"]
            out.append({**single, "column": key, "text": text})
    return out


def findings(spec: dict, finals: dict) -> dict:
    """Everything a figure's page and the report show: the claims' verdicts, the final values per row
    and the numbers the paper states, against ours."""
    level = spec.get("significance_level", 0.1)
    final_rows = []
    for row in spec["rows"]:
        for final in spec.get("finals") or []:
            values = seed_values(finals, row["label"], final["column"], final["value"])
            final_rows.append({"row": row["label"], "label": final["label"], "n_seeds": int(values.size),
                               "mean": float(values.mean()) if values.size else float("nan"),
                               "ci": ci95(values) if values.size else float("nan")})
    key = (spec.get("figure") or {}).get("paper_value")
    return {"claims": [judge(claim, finals, level) for claim in expanded_claims(spec)], "finals": final_rows,
            "paper_value": key,
            "paper_numbers": paper_numbers(spec, finals, key, spec.get("lower_is_better", True)) if key else []}


def claims_markdown(spec: dict, found: dict, scale: str, provenance: dict, figure_name: str) -> str:
    """The figure's companion page: what each claim says, our numbers, and the verdict (``found``:
    ``findings(spec, finals)``)."""
    level = spec.get("significance_level", 0.1)
    verdicts = found["claims"]
    out = [f"# {spec['name']}: {spec['source']}", "", f"![{spec['name']}]({figure_name})", "",
           f"**Scale: {provenance.get('scale_description', scale)}**", ""]
    out += [f"- {key.replace('_', ' ')}: {value}" for key, value in provenance.items() if key != "scale_description"]
    out += ["", "## The paper's claims, checked on our runs", ""]
    if not verdicts:
        out.append("This figure's config states no claim.")
    else:
        out += ["| claim (the paper's) | value | ours: better row | ours: other row | p (paired, seeds) | verdict |",
                "|---|---|---|---|---|---|"]
        for v in verdicts:
            significance = " (significant)" if v["significant"] else ""
            value = v["value"] if v["than_value"] == v["value"] else f"{v['value']} vs {v['than_value']}"
            out.append(f"| {v['text']} | {value} ({v['column']}) | {v['better']}: {fmt(v['better_mean'])} "
                       f"± {fmt(v['better_ci'])} | {v['than']}: {fmt(v['than_mean'])} ± {fmt(v['than_ci'])} | "
                       f"{fmt(v['p_value'])} | {v['verdict']}{significance} |")
    if spec.get("finals"):
        out += ["", "## Final values (ours: mean ± 95 % CI over seeds)", "",
                "| method | " + " | ".join(f["label"] for f in spec["finals"]) + " |",
                "|---|" + "---|" * len(spec["finals"])]
        for row in spec["rows"]:
            cells = ["not run" if f["n_seeds"] == 0 else f"{fmt(f['mean'])} ± {fmt(f['ci'])}"
                     for f in found["finals"] if f["row"] == row["label"]]
            out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    paper_rows = [(row["label"], row["paper"]) for row in spec["rows"] if row.get("paper")]
    key = found["paper_value"]
    if paper_rows and key:
        lower = spec.get("lower_is_better", True)
        out += ["", f"## Numbers the paper states, against ours ({key})", "",
                "| row | column | the paper's | ours | ours / paper's | verdict |", "|---|---|---|---|---|---|"]
        for v in found["paper_numbers"]:
            out.append(f"| {v['row']} | {v['column']} | {fmt(v['paper'])} | {fmt(v['ours'])} ± {fmt(v['ours_ci'])} | "
                       f"{fmt(v['ratio'])} | {v['verdict']} |")
        out += ["", f"'reached': our mean over seeds is at most the paper's value "
                f"({'lower' if lower else 'higher'} is better)."]
    elif paper_rows:
        out += ["", "Numbers the paper states (the paper's, not ours):", ""]
        out += [f"- {label}: {values}" for label, values in paper_rows]
    out += ["", f"Ours: mean ± 95 % CI over seeds of each run's eval.json value; a claim 'holds' when our mean "
            f"for the first row beats the second's (a claim of no difference: the two means differ by at most its "
            f"margin); 'significant': paired t-test over seeds, p < {level}.", ""]
    return "\n".join(out)
