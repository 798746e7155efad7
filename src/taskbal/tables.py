"""A paper table with our numbers beside the paper's, and a verdict per cell.

Per cell: our mean ± 95 % CI (``stats.summarise``), the paper's mean ± CI, and whether
ours lies inside the paper's interval ('inside' / 'outside'; 'no paper value' where the paper
gives no number; 'not run' where we have none). Per column: our best row (bold), a
star when its improvement over our second best passes the paired t-test at the
table's significance level (as the paper's captions define it), and whether our
ranking of the rows equals the paper's ('kept' / 'changed', with Kendall's tau).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .io import atomic_path
from .stats import paired_t_test, summarise

COLUMNS = ["table", "scale", "row", "column", "metric", "ours_mean", "ours_ci", "n_seeds", "n",
           "paper_mean", "paper_ci", "verdict", "best", "significant", "p_value", "ordering",
           "kendall_tau", "best_agrees"]


def verdict(ours: float, paper: list | None) -> str:
    if paper is None:
        return "no paper value"
    if ours is None or math.isnan(ours):
        return "not run"
    return "inside" if abs(ours - paper[0]) <= paper[1] else "outside"


def ranking(values: dict[str, float], lower_is_better: bool) -> list[str]:
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


def build_table(spec: dict, cells: dict[tuple[str, str], dict[int, np.ndarray]], scale: str) -> pd.DataFrame:
    lower = spec.get("lower_is_better", True)
    level = spec.get("significance_level", 0.1)
    lines = []
    for column in spec["columns"]:
        metric = column.get("metric", "overall")
        summaries, column_lines = {}, []
        for row in spec["rows"]:
            paper = (row.get("paper") or {}).get(column["key"])
            values = cells.get((row["label"], column["key"]))
            summary = summarise(values, metric, lower) if values else None
            if summary:
                summaries[row["label"]] = summary
            ours = summary.mean if summary else float("nan")
            column_lines.append({
                "table": spec["name"], "scale": scale, "row": row["label"], "column": column["key"],
                "metric": metric, "ours_mean": ours, "ours_ci": summary.ci if summary else float("nan"),
                "n_seeds": len(values) if values else 0, "n": summary.n if summary else 0,
                "paper_mean": paper[0] if paper else float("nan"),
                "paper_ci": paper[1] if paper else float("nan"),
                "verdict": verdict(ours, paper), "best": False, "significant": False,
                "p_value": float("nan")})
        finite = {r: s.mean for r, s in summaries.items() if not math.isnan(s.mean)}
        if finite:
            order = ranking(finite, lower)
            best = next(l for l in column_lines if l["row"] == order[0])
            best["best"] = True
            if len(order) > 1:
                best["p_value"] = paired_t_test(summaries[order[0]], summaries[order[1]])
                best["significant"] = bool(best["p_value"] < level and finite[order[0]] != finite[order[1]])
        extra = column_verdicts(column_lines, lower)
        for line in column_lines:
            line.update(extra)
        lines += column_lines
    return pd.DataFrame(lines, columns=COLUMNS)


def fmt(value: float, decimals: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def markdown_cell(line: pd.Series, decimals: int) -> str:
    ours = f"{fmt(line.ours_mean, decimals)} ± {fmt(line.ours_ci, decimals)}"
    if line.significant:
        ours += "*"
    if line.best:
        ours = f"**{ours}**"
    if math.isnan(line.paper_mean):
        return f"{ours} (paper: –)"
    return f"{ours} (paper {line.paper_mean:g} ± {line.paper_ci:g}, {line.verdict})"


def to_markdown(frame: pd.DataFrame, spec: dict, scale: str, provenance: dict) -> str:
    decimals = spec.get("decimals", 3)
    columns = spec["columns"]
    out = [f"# {spec['name']}: {spec['source']}", "", f"> Paper's caption: {spec['title']}", "",
           f"**Scale: {provenance.get('scale_description', scale)}**", ""]
    out += [f"- {key.replace('_', ' ')}: {value}" for key, value in provenance.items() if key != "scale_description"]
    out += ["", "| " + " | ".join(["method"] + [c["label"] for c in columns]) + " |",
            "|" + "---|" * (len(columns) + 1)]
    for row in spec["rows"]:
        cells = []
        for column in columns:
            line = frame[(frame.row == row["label"]) & (frame.column == column["key"])].iloc[0]
            cells.append(markdown_cell(line, decimals))
        out.append("| " + " | ".join([row["label"]] + cells) + " |")
    out += ["", "Ordering of the methods, ours against the paper's:"]
    for column in columns:
        line = frame[frame.column == column["key"]].iloc[0]
        out.append(f"- {column['label']}: {line.ordering} (Kendall's tau {fmt(line.kendall_tau, 2)}; "
                   f"same best method: {line.best_agrees})")
    out += ["", "Legend: our value is the mean ± 95 % CI over the pooled seeds and meta-test tasks of "
            "the runs listed above; **bold** is our best per column; * marks a paired t-test of our best "
            f"against our second best with p < {spec.get('significance_level', 0.1)}. The values marked "
            "'paper' are the paper's own published numbers, copied from the publication, not ours; "
            "'inside'/'outside' says whether our mean lies within the paper's 95 % CI.", ""]
    return "\n".join(out)


def to_latex(frame: pd.DataFrame, spec: dict, scale: str, provenance: dict) -> str:
    decimals = spec.get("decimals", 3)
    columns = spec["columns"]
    out = ["\\begin{table}[t]", "\\centering",
           f"\\caption{{{spec['source']} reproduced at scale \\texttt{{{scale}}}. Ours: mean $\\pm$ 95\\% CI; "
           "in parentheses the paper's published value. \\textbf{Bold}: our best; $^{*}$: paired t-test "
           f"against our second best, $p<{spec.get('significance_level', 0.1)}$.}}",
           f"\\label{{tab:{spec['name']}}}",
           "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
           " & ".join(["Method"] + [c["label"].replace("%", "\\%") for c in columns]) + " \\\\", "\\midrule"]
    for row in spec["rows"]:
        cells = []
        for column in columns:
            line = frame[(frame.row == row["label"]) & (frame.column == column["key"])].iloc[0]
            ours = f"{fmt(line.ours_mean, decimals)} $\\pm$ {fmt(line.ours_ci, decimals)}"
            if line.best:
                ours = f"\\textbf{{{ours}}}"
            if line.significant:
                ours += "$^{*}$"
            paper = "" if math.isnan(line.paper_mean) else f" ({line.paper_mean:g} $\\pm$ {line.paper_ci:g})"
            cells.append(ours + paper)
        out.append(" & ".join([row["label"].replace("%", "\\%")] + cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def write_table(frame: pd.DataFrame, spec: dict, out_prefix: Path, scale: str, provenance: dict) -> list[Path]:
    out_prefix = Path(out_prefix)
    outputs = {".csv": None, ".md": to_markdown(frame, spec, scale, provenance),
               ".tex": to_latex(frame, spec, scale, provenance)}
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
