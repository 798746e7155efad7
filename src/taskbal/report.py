"""The reproduction report: one self-contained HTML page with every table and figure of a build.

Each table or figure command writes, beside its markdown, a *record* (``<name>.json``): the
config's rows and columns, each cell with our value and the paper's and the verdict, a figure's
claims, and the provenance (scale, seeds, git commit, machines, runs). ``build_report`` puts the
records of one scale together, paper by paper in the order of ``config/papers.yaml`` — which lists
every table and figure of the five papers, so the page also says what is not built and why. Figures
are embedded as data URIs and the styles are inline: the page is one file, readable offline.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections import Counter
from pathlib import Path

from .claims import fmt as short
from .divergence import names_diverged_seeds
from .settings import read_yaml
from .tables import fmt as number
from .tables import paper_decimals

CELL_VERDICTS = ("inside", "outside", "no paper value", "not run")  # taskbal.tables.verdict
# taskbal.tables.seed_verdict: the verdicts that compare an interval over seeds with the paper, and all shown
JUDGED_SEED_VERDICTS = ("consistent", "inconsistent", "too wide")
SEED_VERDICTS = (*JUDGED_SEED_VERDICTS, "one seed")
EXPERIMENT_STATES = ("config", "not_yet", "no_run")


def _plain(value):
    """JSON without NaN or infinity (not valid JSON): they and missing numbers become null (a seed whose
    test error overflowed; the table's CSV and page keep the value)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "item"):  # NumPy scalars
        return _plain(value.item())
    return value


def record_of(spec: dict, scale: str, provenance: dict, *, cells=None, found: dict | None = None,
              figure: str | None = None, machines: dict[str, int] | None = None) -> str:
    """A table's (``cells``: the frame of ``tables.build_table``) or a figure's (``found``:
    ``claims.findings``, ``figure``: its PNG's file name) record, as JSON text; ``machines``: how many
    of its runs each machine trained."""
    record = {"name": spec["name"], "machines": machines or {}, "kind": spec.get("kind", "table"),
              "source": spec["source"],
              "title": " ".join(spec["title"].split()), "notes": spec.get("notes"), "scale": scale,
              "provenance": provenance, "decimals": spec.get("decimals", 3),
              "paper_decimals": paper_decimals(spec), "lower_is_better": spec.get("lower_is_better", True),
              "significance_level": spec.get("significance_level", 0.1),
              "rows": [{"label": row["label"], "not_run": row.get("not_run")} for row in spec["rows"]],
              "columns": [{"key": column["key"], "label": column["label"]} for column in spec["columns"]]}
    if cells is not None:
        record["cells"] = cells.to_dict(orient="records")
    if found is not None:
        record.update(found)
        record["figure"] = figure
    return json.dumps(_plain(record), indent=1, allow_nan=False) + "\n"


def load_papers(path: Path | str, table_names: list[str]) -> list[dict]:
    """config/papers.yaml, checked: each experiment says exactly one of config / not_yet / no_run, and
    every table config is listed exactly once (errors name the file and the experiment)."""
    papers = read_yaml(Path(path))["papers"]
    listed = Counter()
    for paper in papers:
        for experiment in paper["experiments"]:
            where = f"{path}: {paper['key']}, {experiment.get('id')!r}"
            states = [key for key in EXPERIMENT_STATES if experiment.get(key)]
            if len(states) != 1:
                raise ValueError(f"{where}: give exactly one of {', '.join(EXPERIMENT_STATES)} "
                                 f"(got {states or 'none'})")
            if "config" in states:
                if experiment["config"] not in table_names:
                    raise ValueError(f"{where}: config {experiment['config']!r} is not a file in config/tables/")
                listed[experiment["config"]] += 1
    twice = [name for name, count in listed.items() if count > 1]
    missing = [name for name in table_names if name not in listed]
    if twice or missing:
        raise ValueError(f"{path}: every table config must be listed once; "
                         + "; ".join(filter(None, [twice and f"listed twice: {twice}",
                                                   missing and f"not listed: {missing}"])))
    return papers


# ---------------------------------------------------------------- rendering

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 75rem; color: #222; line-height: 1.4 }
h1 { font-size: 1.6rem } h2 { border-bottom: 2px solid #444; margin-top: 2.5rem } h3 { margin-top: 1.8rem }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem }
th, td { border: 1px solid #bbb; padding: .25rem .5rem; vertical-align: top }
th { background: #f0f0f0 } td.num { white-space: nowrap }
.inside, .holds, .reached, .kept { background: #d4edda }
.outside, .does-not-hold, .not-reached, .changed { background: #f8d7da }
.no-paper-value, .not-comparable { background: #eeeeee } .not-run { background: #fff3cd; font-style: italic }
tr > th:first-child { text-align: left } .best { font-weight: bold }
.best .paper, .best .verdict { font-weight: normal }
.paper { color: #555; font-size: .85em; display: block }
.diverged { color: #8a1c00; font-size: .85em; display: block }
.verdict { font-size: .8em; font-variant: small-caps; display: block }
.provenance { font-size: .85rem; color: #444 } .caption { font-style: italic; color: #444 }
.summary li { margin: .2rem 0 } .state { font-size: .9rem; color: #444 } img { max-width: 100%; border: 1px solid #ddd }
"""


def esc(text) -> str:
    return html.escape("" if text is None else str(text))


def css(verdict: str) -> str:
    return verdict.replace(" ", "-")


def provenance_html(record: dict) -> str:
    items = "".join(f"<li>{esc(key.replace('_', ' '))}: {esc(value)}</li>"
                    for key, value in record["provenance"].items())
    return f'<ul class="provenance">{items}</ul>'


def seed_verdict_text(cell: dict) -> str:
    verdict = cell.get("seed_verdict")
    return f" · {esc(verdict)} (seeds)" if verdict in SEED_VERDICTS else ""


def diverged_html(cell: dict, decimals: int) -> str:
    """Which seeds diverged and the mean without them (nothing when none did)."""
    if not names_diverged_seeds(cell.get("diverged")):
        return ""
    return (f'<span class="diverged">{esc(cell["diverged"])}; without: '
            f'{number(cell.get("mean_without_diverged"), decimals)}</span>')


def table_html(record: dict) -> str:
    decimals, paper_digits = record["decimals"], record["paper_decimals"]
    cells = {(c["row"], c["column"]): c for c in record["cells"]}
    head = "".join(f"<th>{esc(column['label'])}</th>" for column in record["columns"])
    body = []
    for row in record["rows"]:
        tds = []
        for column in record["columns"]:
            cell = cells[row["label"], column["key"]]
            if cell["verdict"] == "not run":
                ours = "not run"
            else:
                ours = f"{number(cell['ours_mean'], decimals)} ± {number(cell['ours_ci'], decimals)}"
                ours += "*" if cell["significant"] else ""
                if cell.get("seed_ci") is not None:
                    ours += f" [± {number(cell['seed_ci'], decimals)}]"
            paper = ("paper: n/a" if cell["paper_mean"] is None else
                     f"paper {number(cell['paper_mean'], paper_digits)} ± {number(cell['paper_ci'], paper_digits)}")
            best = " best" if cell["best"] else ""
            tds.append(f'<td class="num {css(cell["verdict"])}{best}" data-verdict="{esc(cell["verdict"])}">'
                       f'{esc(ours)}<span class="paper">{esc(paper)}</span>'
                       f'<span class="verdict">{esc(cell["verdict"])}{seed_verdict_text(cell)}</span>'
                       f'{diverged_html(cell, decimals)}</td>')
        why = f'<br><span class="state">not run: {esc(row["not_run"])}</span>' if row.get("not_run") else ""
        body.append(f"<tr><th>{esc(row['label'])}{why}</th>{''.join(tds)}</tr>")
    orderings = []
    for column in record["columns"]:
        cell = next(c for c in record["cells"] if c["column"] == column["key"])
        same = {True: "yes", False: "no"}.get(cell["best_agrees"], "–")
        tau = "–" if cell["kendall_tau"] is None else f"{cell['kendall_tau']:.2f}"
        orderings.append(f'<li>{esc(column["label"])}: <span class="{css(cell["ordering"])}">{esc(cell["ordering"])}'
                         f"</span> (Kendall's tau {tau}; same best method: {same})</li>")
    return (f'<table class="results"><tr><th>method</th>{head}</tr>{"".join(body)}</table>'
            f"<p>Ordering of the methods, ours against the paper's:</p><ul>{''.join(orderings)}</ul>"
            f'<p class="provenance">Ours: mean ± 95 % CI over the pooled seeds and meta-test tasks, in brackets '
            f"the Student-t 95 % CI over the seeds' values (each seed's value: the table's page); bold: our best "
            f"per column; *: paired t-test over seeds of our best against our second best, p &lt; "
            f"{record['significance_level']}. 'paper': the paper's published value (copied from the publication, "
            f"not ours); inside/outside: whether our mean lies within the paper's 95 % CI; consistent/inconsistent "
            f"(seeds): whether the paper's interval and ours over seeds overlap; too wide (seeds): they overlap only "
            f"because ours is wider than both our mean and the paper's value.</p>")


def figure_html(record: dict, png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    out = [f'<img alt="{esc(record["name"])}: {esc(record["source"])}" src="data:image/png;base64,{data}">']
    if record["claims"]:
        rows = "".join(
            f"<tr><td>{esc(c['text'])}</td><td>{esc(c['value'])} ({esc(c['column'])})</td>"
            f"<td class='num'>{esc(c['better'])}: {short(c['better_mean'])} ± {short(c['better_ci'])}</td>"
            f"<td class='num'>{esc(c['than'])}: {short(c['than_mean'])} ± {short(c['than_ci'])}</td>"
            f"<td class='num'>{short(c['p_value'])}</td><td class='{css(c['verdict'])}' data-verdict="
            f"'{esc(c['verdict'])}'>{esc(c['verdict'])}{' (significant)' if c['significant'] else ''}</td></tr>"
            for c in record["claims"])
        out.append("<table class='claims'><tr><th>the paper's claim</th><th>value</th><th>ours: better row</th>"
                   f"<th>ours: other row</th><th>p (paired, seeds)</th><th>verdict</th></tr>{rows}</table>")
    else:
        out.append("<p>This figure's config states no claim.</p>")
    if record["finals"]:
        labels = list(dict.fromkeys(f["label"] for f in record["finals"]))
        rows = []
        for row in record["rows"]:
            values = {f["label"]: f for f in record["finals"] if f["row"] == row["label"]}
            rows.append(f"<tr><th>{esc(row['label'])}</th>" + "".join(
                "<td class='not-run'>not run</td>" if values[label]["n_seeds"] == 0 else
                f"<td class='num'>{short(values[label]['mean'])} ± {short(values[label]['ci'])}</td>"
                for label in labels) + "</tr>")
        out.append("<p>Final values (ours: mean ± 95 % CI over seeds):</p><table class='finals'><tr><th>method</th>"
                   + "".join(f"<th>{esc(label)}</th>" for label in labels) + f"</tr>{''.join(rows)}</table>")
    if record["paper_numbers"]:
        rows = "".join(f"<tr><td>{esc(v['row'])}</td><td>{esc(v['column'])}</td>"
                       f"<td class='num'>{short(v['paper'])}</td>"
                       f"<td class='num'>{short(v['ours'])} ± {short(v['ours_ci'])}</td>"
                       f"<td class='{css(v['verdict'])}' data-verdict='{esc(v['verdict'])}'>"
                       f"{esc(v['verdict'])}</td></tr>"
                       for v in record["paper_numbers"])
        out.append(f"<p>Numbers the paper states, against ours ({esc(record['paper_value'])}):</p>"
                   "<table class='stated'><tr><th>row</th><th>column</th><th>the paper's</th><th>ours</th>"
                   f"<th>verdict</th></tr>{rows}</table>")
    return "".join(out)


def tally(records: list[dict]) -> dict:
    """Counts for a paper's summary line."""
    cells = [c["verdict"] for r in records for c in r.get("cells", [])]
    seed_cells = [c.get("seed_verdict") for r in records for c in r.get("cells", [])]
    claims = [c["verdict"] for r in records for c in r.get("claims", [])]
    stated = [v["verdict"] for r in records for v in r.get("paper_numbers", [])]
    return {"inside": cells.count("inside"), "compared": cells.count("inside") + cells.count("outside"),
            "seed_consistent": seed_cells.count("consistent"),
            "seed_compared": sum(seed_cells.count(v) for v in JUDGED_SEED_VERDICTS),
            "cells_not_run": cells.count("not run"), "claims_hold": claims.count("holds"),
            "claims_judged": len(claims) - claims.count("not run"), "stated_reached": stated.count("reached"),
            "stated_judged": len(stated) - stated.count("not run")}


def summary_line(paper: dict, records: list[dict]) -> str:
    """E.g. "SIMOL: 3 of 30 cells inside the paper's CI, 9 of 30 consistent with it under seed
    variation, 1 of 2 claims hold (3 of 8 tables and figures in this report; 1 more is a target not
    built here; 4 are not targets yet)"."""
    counts = tally(records)
    states = Counter(next(key for key in EXPERIMENT_STATES if e.get(key)) for e in paper["experiments"])
    parts = []
    if counts["compared"] or counts["cells_not_run"] or not counts["claims_judged"] + counts["stated_judged"]:
        parts.append(f"{counts['inside']} of {counts['compared']} cells inside the paper's CI")
        if counts["seed_compared"]:
            parts.append(f"{counts['seed_consistent']} of {counts['seed_compared']} consistent with it under "
                         "seed variation")
    if counts["claims_judged"]:
        parts.append(f"{counts['claims_hold']} of {counts['claims_judged']} claims hold")
    if counts["stated_judged"]:
        parts.append(f"{counts['stated_reached']} of {counts['stated_judged']} stated numbers reached")
    if not records:
        parts = ["nothing in this report"]

    def many(count: int, one: str, more: str) -> str:
        return f"{count} {one if count == 1 else more}" if count else ""

    rest = [f"{len(records)} of {len(paper['experiments'])} tables and figures in this report",
            many(states["config"] - len(records), "more is a target not built here", "more are targets not built here"),
            many(states["not_yet"], "is not a target yet", "are not targets yet"),
            many(states["no_run"], "has no result to reproduce", "have no result to reproduce")]
    return f"{paper['name']}: " + ", ".join(parts) + " (" + "; ".join(r for r in rest if r) + ")"


def experiment_html(experiment: dict, record: dict | None, pngs: dict[str, Path], scale: str) -> str:
    anchor = f" id='{esc(experiment['config'])}'" if experiment.get("config") else ""
    heading = f"<h3{anchor}>{esc(experiment['id'])}: {esc(experiment['what'])}</h3>"
    if record is not None:
        body = table_html(record) if record["kind"] == "table" else figure_html(record, pngs[record["figure"]])
        notes = (f"<p class='provenance'>Choices where the paper is silent: {esc(record['notes'])}</p>"
                 if record["notes"] else "")
        return (f"{heading}<p class='caption'>Paper's caption: {esc(record['title'])}</p>{body}{notes}"
                f"{provenance_html(record)}")
    if experiment.get("config"):
        state = (f"A target, not built in this report: <code>snakemake --config scale={esc(scale)} -- "
                 f"{esc(experiment['config'])}</code> builds it; list it under <code>tables:</code> in "
                 "config/config.yaml to have it here.")
    elif experiment.get("not_yet"):
        state = f"Not a target yet: {esc(experiment['not_yet'])}."
    else:
        state = f"Nothing to run: {esc(experiment['no_run'])}."
    return f"{heading}<p class='state not-built'>{state}</p>"


def build_report(papers: list[dict], records: list[dict], pngs: dict[str, Path], scale: str) -> str:
    """The page's HTML: a summary line per paper, then each paper's tables and figures in order."""
    by_name = {record["name"]: record for record in records}
    wrong = [r["name"] for r in records if r["scale"] != scale]
    if wrong:
        raise ValueError(f"records of another scale than {scale!r}: {wrong}")
    summaries, sections = [], []
    for paper in papers:
        mine = [by_name[e["config"]] for e in paper["experiments"] if e.get("config") in by_name]
        summaries.append(f"<li><a href='#{esc(paper['key'])}'>{esc(summary_line(paper, mine))}</a></li>")
        parts = [experiment_html(e, by_name.get(e.get("config")), pngs, scale) for e in paper["experiments"]]
        sections.append(f"<section id='{esc(paper['key'])}' class='paper'><h2>{esc(paper['name'])}</h2>"
                        f"<p class='caption'>{esc(paper['title'])}</p>{''.join(parts)}</section>")
    commits = sorted({r["provenance"].get("git_commit", "?") for r in records})
    machines = sorted({machine for r in records for machine in r.get("machines", {})})
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"<h1>taskbal reproduction report: scale {esc(scale)}</h1><ul class='provenance'>"
              f"<li>generated {generated}</li><li>git commit of the tables: {esc(', '.join(commits) or '–')}</li>"
              f"<li>machines that trained the runs: {esc(' | '.join(machines) or '–')}</li>"
              f"<li>scale, seeds and runs: under each table</li></ul>"
              "<p>Each cell shows our value (mean ± 95 % CI), the paper's published value (labelled 'paper'; "
              "copied from the publication, not ours) and the verdict, coloured: <span class='inside'>inside</span> "
              "the paper's CI, <span class='outside'>outside</span>, <span class='no-paper-value'>no paper "
              "value</span>, <span class='not-run'>not run</span>. Figures' claims: <span class='holds'>holds"
              "</span> / <span class='does-not-hold'>does not hold</span>.</p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>taskbal reproduction report "
            f"({esc(scale)})</title><style>{STYLE}</style></head><body>{header}<h2>Summary</h2>"
            f"<ul class='summary'>{''.join(summaries)}</ul>{''.join(sections)}</body></html>\n")


def write_report(papers_path: Path, tables_dir: Path, record_paths: list[Path], png_paths: list[Path],
                 scale: str, out: Path) -> None:
    from .io import atomic_path

    names = sorted(path.stem for path in Path(tables_dir).glob("*.yaml"))
    papers = load_papers(papers_path, names)
    records = [json.loads(Path(path).read_text()) for path in record_paths]
    pngs = {Path(path).name: Path(path) for path in png_paths}
    missing = [r["figure"] for r in records if r["kind"] == "figure" and r["figure"] not in pngs]
    if missing:
        raise ValueError(f"figures of the records not among the inputs: {missing}")
    text = build_report(papers, records, pngs, scale)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
