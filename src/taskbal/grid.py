"""Hyper-parameter grid searches whose selection feeds a table's runs through the DAG.

A grid config (``config/grids/<name>.yaml``) names the settings it searches (dotted paths into an
experiment, each with its values), the value it selects on (a ``curve.csv`` column of the search runs,
read at their last row: the validation error at the end of training), the seeds of a search run and,
per scale, the settings of the search runs (a shorter budget than the table's) and optionally a
smaller ``search`` (the tiny scale checks the DAG, not the selection).

A table row that says ``grid_search: <name>`` has its searched settings chosen by that grid. For each
of the row's cells the plan derives:

* the *base* experiment: the cell's experiment with the grid's ``search_at`` settings merged in and
  the settings searched at that scale removed. Cells with the same base share one selection (Table 5's deeper
  networks take the selection made with Table 1's network when ``search_at`` fixes the network);
* one *search run* per point of the grid: ``base ⊕ scales[scale].set ⊕ point``, ordinary runs that
  the train rule trains;
* the *selection* (``results/grids/<scale>/<selection>.json``, written by ``taskbal select``): the
  point with the best mean over seeds among the points none of whose seeds diverged;
* the cell's own run: its experiment carries ``grid_search: {grid, selection}`` instead of the
  searched values, and ``taskbal train`` merges the selected values in from the selection file (the
  rule declares it), so the trained ``final.pt`` holds the values actually used.

Nothing here imports torch: the Snakefile's plan uses it.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

from .divergence import stall_rule, stall_words, stalled_line, stalled_seeds
from .io import stable_hash
from .settings import ConfigFileError, deep_merge, nested, read_yaml

GRIDS_DIR = Path("config/grids")
MARKER = "grid_search"  # the experiment key that stands for the selected settings


def load_grid(name: str, grids_dir: Path | str = GRIDS_DIR) -> dict:
    """A grid config by name, its file named in every error."""
    path = Path(grids_dir) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(grids_dir).glob("*.yaml"))
        raise FileNotFoundError(f"grid_search: no grid config {path} (known: {known})")
    spec = read_yaml(path)
    if not isinstance(spec, dict) or spec.get("name") != name:
        raise ConfigFileError(f"{path}: field 'name' must be {name!r}")
    return spec


def without(experiment: dict, paths) -> dict:
    """A copy of ``experiment`` without the settings at the dotted ``paths``."""
    out = copy.deepcopy(experiment)
    for path in paths:
        *parents, last = path.split(".")
        section = out
        for key in parents:
            section = section.get(key, {}) if isinstance(section, dict) else {}
        if isinstance(section, dict):
            section.pop(last, None)
    return out


def search_at_scale(grid: dict, scale: str) -> dict:
    """The searched settings and their values at ``scale`` (a scale may search a smaller grid)."""
    return (grid["scales"].get(scale) or {}).get("search") or grid["search"]


def grid_points(grid: dict, scale: str) -> list[dict]:
    """Every point of the grid at ``scale``, in the config's order: ``{dotted path: value}``."""
    search = search_at_scale(grid, scale)
    paths = list(search)
    return [dict(zip(paths, values)) for values in itertools.product(*(search[path] for path in paths))]


def point_settings(point: dict) -> dict:
    settings: dict = {}
    for path, value in point.items():
        settings = deep_merge(settings, nested(path, value))
    return settings


def seeds_of_grid(grid: dict, scale: str) -> list[int]:
    return list((grid["scales"].get(scale) or {}).get("seeds") or grid["seeds"])


def base_of(grid: dict, experiment: dict, scale: str) -> dict:
    """What a cell's selection depends on besides the grid: its experiment with the grid's ``search_at``
    settings and without the settings searched at ``scale`` (nor the marker)."""
    merged = deep_merge(without(experiment, [MARKER]), grid.get("search_at") or {}, null_removes=True)
    return without(merged, search_at_scale(grid, scale))


def selection_id(grid: dict, base: dict, scale: str) -> str:
    """A selection is named by its grid and a hash of everything that decides it."""
    decided_by = {"base": base, "search": search_at_scale(grid, scale), "select": grid["select"],
                  "seeds": seeds_of_grid(grid, scale), "set": (grid["scales"].get(scale) or {}).get("set") or {}}
    return f"{grid['name']}-{stable_hash(decided_by)}"


def search_experiments(grid: dict, base: dict, scale: str) -> list[tuple[dict, dict]]:
    """(point, experiment) of every search run of a selection."""
    budget = (grid["scales"].get(scale) or {}).get("set") or {}
    trained = deep_merge(base, budget, null_removes=True)
    return [(point, deep_merge(trained, point_settings(point))) for point in grid_points(grid, scale)]


def marked(experiment: dict, grid: dict, selection: str, scale: str) -> dict:
    """A cell's experiment whose settings searched at ``scale`` come from ``selection``."""
    return {**without(experiment, search_at_scale(grid, scale)),
            MARKER: {"grid": grid["name"], "selection": selection}}


def apply_selection(experiment: dict, selection: dict) -> dict:
    """The experiment a marked run trains: the marker replaced by the selected settings. The selection
    file must be the one the experiment names (the rule passes the run's own)."""
    wanted = experiment.get(MARKER)
    if wanted is None:
        raise ValueError(f"--selection given, but the experiment has no {MARKER} to take it")
    if selection.get("selection") != wanted["selection"]:
        raise ValueError(f"selection file is {selection.get('selection')!r}, but this run needs "
                         f"{wanted['selection']!r}")
    if selection.get("selected") is None:
        raise ValueError(f"selection {wanted['selection']}: no point of grid {wanted['grid']} could be selected "
                         "(every point diverged or gave no finite value); see its page")
    return deep_merge(without(experiment, [MARKER]), point_settings(selection["selected"]))


def final_value(curve, column: str) -> float:
    """The selection value of one search run: ``column`` at the curve's last row (non-finite → nan)."""
    if column not in curve:
        raise ValueError(f"select.value: {column!r} is not a column of the search runs' curve.csv "
                         f"(columns: {list(curve.columns)})")
    value = float(curve[column].iloc[-1])
    return value if math.isfinite(value) else math.nan


def choose(points: list[dict], lower_is_better: bool) -> int | None:
    """The index of the best point: the best mean over seeds among those with every seed finite and
    none diverged; the earlier point in the grid's order on a tie; None when no point qualifies."""
    best = None
    for index, point in enumerate(points):
        if point["excluded"]:
            continue
        value = point["mean"] if lower_is_better else -point["mean"]
        if best is None or value < best[0]:
            best = (value, index)
    return None if best is None else best[1]


def score_point(point: dict, run: str, values: dict[int, float], diverged_at: dict[int, int]) -> dict:
    """A grid point's record: its seeds' values, their mean, and why it cannot be selected (if so):
    a seed that diverged (``diverged_at``: seed → iteration) or ended without a finite value."""
    bad = [f"seed {seed} diverged at iteration ~{iteration:,}" for seed, iteration in sorted(diverged_at.items())]
    bad += [f"seed {seed} gave no finite value" for seed, value in values.items() if math.isnan(value)]
    finite = [value for value in values.values() if not math.isnan(value)]
    mean = sum(finite) / len(finite) if finite else math.nan
    return {"point": point, "run": run, "values": {str(seed): value for seed, value in values.items()},
            "mean": mean, "excluded": "; ".join(bad) or None}


def selection_record(grid: dict, scale: str, base: dict, scored: list[dict]) -> dict:
    """What ``taskbal select`` writes: the chosen point and every point's score."""
    select = grid["select"]
    chosen = choose(scored, select.get("lower_is_better", True))
    return {"grid": grid["name"], "source": grid.get("source", ""), "scale": scale,
            "selection": selection_id(grid, base, scale), "value": select["value"],
            "lower_is_better": select.get("lower_is_better", True), "seeds": seeds_of_grid(grid, scale),
            "base": base, "selected": None if chosen is None else scored[chosen]["point"],
            "selected_mean": None if chosen is None else scored[chosen]["mean"], "points": scored}


def label_of(grid: dict, path: str) -> str:
    return (grid.get("labels") or {}).get(path, path)


def selected_line(grid: dict, record: dict) -> str:
    """``λ̂′ = 0.1, λ̂″ = 1, β′ = 0.03 (validation MSE 1.234)`` for a page."""
    if record["selected"] is None:
        return "nothing selected: every point diverged or gave no finite value"
    chosen = ", ".join(f"{label_of(grid, path)} = {value:g}" if isinstance(value, (int, float)) else
                       f"{label_of(grid, path)} = {value}" for path, value in record["selected"].items())
    return f"{chosen} ({record['value']} {record['selected_mean']:.4g})"


def context_of(records: list[dict]) -> dict[str, str]:
    """Each selection's distinguishing settings among ``records`` (e.g. ``data.shots=5,
    learner.inner_optimizer=sgd``): the base settings whose values differ between them."""
    flat = [dict(flatten(record["base"])) for record in records]
    keys = sorted({key for item in flat for key in item})
    differing = [key for key in keys if len({repr(item.get(key)) for item in flat}) > 1]
    return {record["selection"]: ", ".join(f"{key}={item.get(key)}" for key in differing) or "one selection"
            for record, item in zip(records, flat)}


def flatten(settings: dict, prefix: str = ""):
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, path + ".")
        else:
            yield path, value


def with_stalls(records: list[dict], rule: dict | None, curve_of, summary_of) -> list[dict]:
    """The records with each point's ``stalled`` line: which of its seeds' search runs stalled or blew up under
    the grid's stall rule (taskbal.divergence; '' for none), from ``curve_of(run, seed)`` (a curve.csv frame) and
    ``summary_of(run, seed)`` (its train.json). The selection is not changed: it judges the value alone, as the
    paper does. Without a rule the records come back as they are."""
    if not rule:
        return records
    judged = []
    for record in records:
        points = []
        for point in record["points"]:
            seeds = [int(seed) for seed in point["values"]]
            stalled = stalled_seeds({seed: curve_of(point["run"], seed) for seed in seeds},
                                    {seed: summary_of(point["run"], seed) for seed in seeds}, rule)
            points.append({**point, "stalled": stalled_line(stalled)})
        judged.append({**record, "points": points})
    return judged


def stall_counts(record: dict) -> str:
    """``15 stalled, 18 blew up (of 160 points); the selected point: neither`` for a page (a record judged by
    :func:`with_stalls`; a point with seeds of both kinds counts in both)."""
    points = record["points"]
    counts = ", ".join(f"{sum(word in point['stalled'] for point in points)} {word}" for word in ("stalled", "blew up"))
    selected = next((point["stalled"] for point in points if point["point"] == record["selected"]), "")
    return f"{counts} (of {len(points)} points); the selected point: {selected or 'neither'}"


def page_rows(grid: dict, records: list[dict]) -> list[dict]:
    """One row per (selection, point) for the grid's CSV: the setting, the point, its seeds' values."""
    context = context_of(records)
    rows = []
    for record in records:
        for point in record["points"]:
            rows.append({"selection": record["selection"], "setting": context[record["selection"]],
                         **{label_of(grid, path): value for path, value in point["point"].items()},
                         record["value"]: point["mean"], "seed_values": json.dumps(point["values"]),
                         "selected": point["point"] == record["selected"], "excluded": point["excluded"] or "",
                         **({"stalled": point["stalled"]} if "stalled" in point else {}), "run": point["run"]})
    return rows


def page_markdown(grid: dict, scale: str, records: list[dict], used_by: dict[str, list[str]],
                  provenance: dict) -> str:
    """The grid's page: per selection, what it serves, the chosen point, and every point's value."""
    context = context_of(records)
    out = [f"# {grid['source']}: {grid['title']}", "", f"**Scale: {scale}**", ""]
    out += [f"- {key.replace('_', ' ')}: {value}" for key, value in provenance.items()]
    out += [f"- selected on: `{records[0]['value'] if records else grid['select']['value']}` at the last curve row "
            f"of each search run, {'lowest' if grid['select'].get('lower_is_better', True) else 'highest'} mean over "
            f"seeds {', '.join(str(s) for s in seeds_of_grid(grid, scale))}; points with a diverged seed or a "
            "non-finite value are not selected", ""]
    if records:
        fixed = ", ".join(f"{key} = {value}" for key, value in flatten(records[0]["base"].get("weighting", {})))
        out.insert(-1, f"- the search runs' other weighting settings (not searched at this scale): {fixed}")
    rule = stall_rule(grid)
    if rule:
        out.insert(-1, f"- {stall_words(rule)} (the grid's stall section): judged on each point's search runs and "
                       "named in its note; the selection does not use it")
    if grid.get("notes"):
        out += [f"Choices where the paper is silent: {grid['notes']}", ""]
    for record in records:
        name = record["selection"]
        out += [f"## {context[name]}", "", f"- selected: **{selected_line(grid, record)}**",
                f"- used by: {'; '.join(used_by.get(name, [])) or 'no table at this scale'}"]
        if rule and all("stalled" in point for point in record["points"]):
            out.append(f"- stall rule: {stall_counts(record)}")
        out.append("")
        paths = list(record["points"][0]["point"]) if record["points"] else []
        out.append("| " + " | ".join([label_of(grid, path) for path in paths] + [record["value"], "note"]) + " |")
        out.append("|" + "---|" * (len(paths) + 2))
        for point in record["points"]:
            mark = "**" if point["point"] == record["selected"] else ""
            cells = [f"{point['point'][path]:g}" if isinstance(point["point"][path], (int, float))
                     else str(point["point"][path]) for path in paths]
            value = f"{mark}{point['mean']:.4g}{mark}" if not math.isnan(point["mean"]) else "—"
            note = "; ".join(text for text in (point["excluded"], point.get("stalled")) if text)
            out.append("| " + " | ".join(cells + [value, note]) + " |")
        out.append("")
    return "\n".join(out)
