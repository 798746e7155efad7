"""A paper table with our numbers beside the paper's, and a verdict per cell.

Per cell: our mean ± 95 % CI (``stats.summarise``), the paper's mean ± CI, and whether
ours lies inside the paper's interval ('inside': |ours − paper mean| ≤ paper CI, else 'outside';
'no paper value' where the paper gives no number — not 'n/a', which pandas.read_csv would turn
into NaN; 'not run' where we have no runs for the cell, e.g. a literature row).
Per column: our best row (bold; rows whose value is NaN are not ranked), a star when its
improvement over our second best passes the two-sided paired t-test at the table's
significance level (default 0.1, as the paper's captions define it; only the best cell can
carry a star or a p-value), and whether our ranking of the rows that have both values equals
the paper's ('kept' / 'changed'; 'not comparable' with fewer than two such rows), with Kendall's
tau between the two rankings and whether the best row is the same. Ties keep the config's row
order. Our values are printed with ``spec['decimals']`` (default 3) decimals; the paper's with
``spec['paper_decimals']``, by default the most decimals any paper value of the table has
(YAML reads the paper's "1.70" as 1.7; this prints it as the paper does, and never rounds one).
"""
from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .io import atomic_path
from .stats import paired_t_test, summarise

COLUMNS = ["table", "scale", "row", "column", "metric", "ours_mean", "ours_ci", "n_seeds", "n",
           "paper_mean", "paper_ci", "verdict", "best", "significant", "p_value", "ordering",
           "kendall_tau", "best_agrees"]


def verdict(ours: float | None, paper: list | None) -> str:
    """``ours`` is None when the cell was not run; NaN (a diverged run) is 'outside'."""
    if ours is None:
        return "not run"
    if paper is None:
        return "no paper value"
    return "inside" if abs(ours - paper[0]) <= paper[1] else "outside"


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
        values[seed] = frame[value].to_numpy(dtype=float)
        if "group" in frame.columns:
            groups[seed] = frame["group"].to_numpy()
    return values, groups or None


def build_table(spec: dict, cells: dict[tuple[str, str], dict[int, np.ndarray | pd.DataFrame]],
                scale: str) -> pd.DataFrame:
    lower = spec.get("lower_is_better", True)
    level = spec.get("significance_level", 0.1)
    lines = []
    for column in spec["columns"]:
        metric = column.get("metric", "overall")
        summaries, column_lines = {}, []
        for row in spec["rows"]:
            paper = (row.get("paper") or {}).get(column["key"])
            values = cells.get((row["label"], column["key"]))
            summary = None
            if values:
                values, groups = column_sample(values, column)
                summary = summarise(values, metric, lower, groups)
            if summary:
                summaries[row["label"]] = summary
            ours = summary.mean if summary else float("nan")
            column_lines.append({
                "table": spec["name"], "scale": scale, "row": row["label"], "column": column["key"],
                "metric": metric, "ours_mean": ours, "ours_ci": summary.ci if summary else float("nan"),
                "n_seeds": summary.n_seeds if summary else 0, "n": summary.n if summary else 0,
                "paper_mean": float(paper[0]) if paper else float("nan"),
                "paper_ci": float(paper[1]) if paper else float("nan"),
                "verdict": verdict(summary.mean if summary else None, paper), "best": False, "significant": False,
                "p_value": float("nan")})
        finite = {r: s.mean for r, s in summaries.items() if not math.isnan(s.mean)}
        if finite:
            order = ranking(finite, lower)
            best = next(l for l in column_lines if l["row"] == order[0])
            best["best"] = True
            if len(order) > 1:
                try:
                    best["p_value"] = paired_t_test(summaries[order[0]], summaries[order[1]])
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
    if math.isnan(line.paper_mean):
        return f"{ours} (paper: n/a)"
    paper = f"paper {paper_text(line, spec)}"
    return f"{ours} ({paper})" if line.verdict == "not run" else f"{ours} ({paper}, {line.verdict})"


def md_escape(text) -> str:
    """Keep labels and captions literal: '|' would split a table cell, '*' and '_' start emphasis."""
    return "".join("\\" + char if char in "|*_" else char for char in str(text))


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
    out += ["", "Ordering of the methods, ours against the paper's:"]
    for column in columns:
        line = frame[frame.column == column["key"]].iloc[0]
        agrees = {True: "yes", False: "no"}.get(line.best_agrees, "–")
        out.append(f"- {column['label']}: {line.ordering} (Kendall's tau {fmt(line.kendall_tau, 2)}; "
                   f"same best method: {agrees})")
    out += ["", "Legend: our value is the mean ± 95 % CI over the pooled seeds and meta-test tasks of "
            "the runs listed above; **bold** is our best per column; \\* marks a paired t-test of our best "
            f"against our second best with p < {spec.get('significance_level', 0.1)}. The values marked "
            f"'paper' are the paper's own published numbers, copied from the publication "
            f"({spec['source']}), not ours; 'inside'/'outside' says whether our mean lies within the "
            "paper's 95 % CI; 'paper: n/a': the paper gives no value; 'not run': we have no runs for the cell.", ""]
    return "\n".join(out)


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
           "in parentheses the paper's published value, copied from the publication. \\textbf{Bold}: our "
           f"best; $^{{*}}$: paired t-test against our second best, $p<{spec.get('significance_level', 0.1)}$. "
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
