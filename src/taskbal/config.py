"""From a table config to the runs it needs.

A table config (``config/tables/<name>.yaml``) holds the base ``experiment`` of every run,
``scales`` that override it (``paper`` as published, ``quick`` and ``tiny`` smaller), the
table's ``rows`` and ``columns`` (each may ``set`` part of the experiment), the seeds, and
the paper's reported numbers. A config may ``extend`` another one and then inherits its
experiment, scales and seeds.

A cell's run is ``experiment ⊕ scales[scale] ⊕ row.set ⊕ column.set``. Its identity is a
hash of that resolved dict, so two tables that need the same run (Table 5's 2-layer row is
Table 1's SIMOL 2-shot cell) share one set of files; a setting that provably cannot change the
run is dropped first (``without_inert_penalty``), so cells that differ only by it share a run too.
The Snakefile and the ``table``
command both resolve cells with this module, so they always agree on paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .grid import base_of, load_grid, marked, selection_id
from .io import stable_hash
from .settings import ConfigFileError, deep_merge, read_yaml

TABLES_DIR = Path("config/tables")


def extends_chain(path: Path) -> list[str]:
    """The names of the configs ``path`` extends, nearest first (``[]`` when it extends none)."""
    chain, spec = [], read_yaml(path)
    while isinstance(spec, dict) and spec.get("extends") and spec["extends"] not in chain:
        chain.append(spec["extends"])
        parent = path.parent / f"{spec['extends']}.yaml"
        spec = read_yaml(parent) if parent.exists() else None
    return chain


def load_table(name_or_path: str | Path, tables_dir: Path = TABLES_DIR) -> dict:
    """Read a table config by name (``simol_table1``) or path, following ``extends``."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = Path(tables_dir) / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"table config {path} does not exist")
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ConfigFileError(f"{path}: expected a mapping at the top level")
    if spec.get("name") != path.stem:
        raise ConfigFileError(f"{path}: field 'name' is {spec.get('name')!r}, expected {path.stem!r}")
    parent_name = spec.get("extends")
    if parent_name:
        parent = load_table(parent_name, path.parent)
        for key in ("experiment", "scales", "seeds", "scale_seeds", "resources"):
            if key in parent:
                spec[key] = deep_merge(parent[key], spec.get(key)) if isinstance(parent[key], dict) \
                    else spec.get(key, parent[key])
    attach_grids(spec, path.parent.parent / "grids")
    return spec


def attach_grids(spec: dict, grids_dir: Path) -> None:
    """The grid configs that rows name in ``grid_search`` (``config/grids/<name>.yaml``, beside the
    tables' folder), read once into ``spec["grid_configs"]`` so that resolving cells reads no file."""
    names = sorted({row["grid_search"] for row in spec.get("rows") or [] if isinstance(row, dict)
                    and isinstance(row.get("grid_search"), str)})
    if names:
        spec["grid_configs"] = {name: load_grid(name, grids_dir) for name in names}


def resolve_experiment(spec: dict, scale: str, *overrides: dict | None) -> dict:
    """A cell's run: ``experiment ⊕ scales[scale] ⊕ overrides`` (row.set, column.set, the column's and
    the row's settings at that scale, and the row's ``set_in_columns`` for that column, in that order)."""
    if scale not in spec["scales"]:
        raise ValueError(f"scale: {scale!r} is not defined in table {spec['name']} "
                         f"(defined: {sorted(spec['scales'])})")
    experiment = deep_merge(spec["experiment"], spec["scales"][scale], null_removes=True)
    for override in overrides:
        experiment = deep_merge(experiment, override, null_removes=True)
    data = experiment["data"]
    if "shots" in data and data.get("query") is None:
        data["query"] = data["shots"]
    return experiment


def shots_part(data: dict) -> str:
    """``-5shot`` in a run's or split's name; ``-anyshot`` for any-shot episodes (a dict of shots)."""
    if "shots" not in data:
        return ""
    return "-anyshot" if isinstance(data["shots"], dict) else f"-{data['shots']}shot"


def split_id(experiment: dict) -> str:
    data = experiment["data"]
    return f"{data['family']}{shots_part(data)}-{stable_hash(data)}"


def without_inert_penalty(experiment: dict) -> dict:
    """``experiment`` without a Nash penalty that cannot change its run, so that the penalised and the plain
    configuration are one run. Played at the inner steps (``at: inner``, Nash-GBML's Algorithm 2), the game
    starts with every task at the same point, where the penalty, its partials and their derivatives with
    respect to θ are exactly zero (taskbal.learners.nash_penalty): with at most one inner step (set in the
    experiment) the penalised run is the plain run, and training it twice would only differ by the rounding
    of another code path. The table still shows the cell; its run is the plain one."""
    learner = experiment.get("learner")
    penalty = learner.get("penalty") if isinstance(learner, dict) else None
    steps = learner.get("inner_steps") if isinstance(learner, dict) else None
    if not isinstance(penalty, dict) or penalty.get("at", "inner") != "inner" \
            or type(steps) is not int or steps > 1:
        return experiment
    plain = {key: value for key, value in learner.items() if key != "penalty_gradients"}
    return {**experiment, "learner": {**plain, "penalty": None}}  # as a plain row writes it (``penalty: null``)


def run_id(experiment: dict) -> str:
    data, weighting = experiment["data"], experiment["weighting"]
    return f"{data['family']}-{weighting['name']}{shots_part(data)}-{stable_hash(experiment)}"


@dataclass(frozen=True)
class Cell:
    row: str
    column: str
    metric: str
    run: str
    split: str
    experiment: dict
    selection: str | None = None  # the grid selection that chooses some of its settings (taskbal.grid)
    evaluated_on: str | None = None  # the split whose test tasks it is evaluated on, when not its own
    evaluation_data: dict | None = None  # that split's data section
    as_written: dict | None = None  # the experiment before an inert setting was dropped (without_inert_penalty)

    def evaluated_on_for(self, name: str) -> str | None:
        """The split a file of this cell is of: ``evaluated_on`` for eval.csv / eval.json, else the run's own."""
        from .artifacts import EVALUATION_FILES

        return self.evaluated_on if name in EVALUATION_FILES else None

    def file(self, scale: str, seed: int, name: str) -> str:
        """The cell's file of one seed: its run's, except eval.csv / eval.json of another split's tasks."""
        from .artifacts import run_file

        return run_file(scale, self.run, seed, name, self.evaluated_on_for(name))


def evaluation_split(experiment: dict, column: dict) -> tuple[str | None, dict | None]:
    """A column's ``evaluate_on: {<data settings>}``: its runs train as the column says and are evaluated on
    the test tasks of the data section changed by these settings (another dataset of the same family: TOW's
    mini-ImageNet runs tested on CUB). Its split id and data section, or (None, None) for the run's own."""
    evaluate_on = column.get("evaluate_on")
    if not evaluate_on:
        return None, None
    if evaluate_on.get("family", experiment["data"]["family"]) != experiment["data"]["family"]:
        raise ValueError(f"columns ({column['key']!r}).evaluate_on.family: a run of family "
                         f"{experiment['data']['family']!r} cannot be evaluated on tasks of family "
                         f"{evaluate_on['family']!r}")
    data = deep_merge(experiment["data"], evaluate_on, null_removes=True)
    return split_id({"data": data}), data


def cell_not_run(spec: dict, scale: str, row: dict, column: dict) -> str | None:
    """Why a (row, column) is not run at ``scale``, or None: a row with ``not_run: <why>`` carries only
    the paper's numbers (e.g. a result the paper copies from another publication); a row's
    ``not_run_columns: {<column>: <why>}`` leaves single cells out (a combination the paper does not
    report); a column with ``scales: [...]`` is run at those scales only (data or hardware a laptop
    build does not have)."""
    if "not_run" in row:
        return row["not_run"]
    if "extrapolate" in row:  # its values are another row's, scaled (tables.column_samples)
        return row["extrapolate"]["why"]
    if column["key"] in (row.get("not_run_columns") or {}):
        return row["not_run_columns"][column["key"]]
    for part in (column, row):
        if "scales" in part and scale not in part["scales"]:
            return f"run at scale {' and '.join(part['scales'])} only"
    return None


def scale_settings(part: dict, scale: str) -> dict | None:
    """A row's or column's own settings at ``scale``: with ``scales: {<scale>: {...}}`` (a mapping rather
    than a list), applied after its ``set`` (e.g. a paper-scale column's 600 test tasks cut down at tiny
    scale, since the column's ``set`` comes after the table's ``scales``)."""
    scales = part.get("scales")
    return scales.get(scale) if isinstance(scales, dict) else None


def table_cells(spec: dict, scale: str) -> list[Cell]:
    """Every (row, column) of the table that is run by the pipeline at ``scale`` (see ``cell_not_run``)."""
    cells = []
    for row in spec["rows"]:
        for column in spec["columns"]:
            if cell_not_run(spec, scale, row, column):
                continue
            experiment = resolve_experiment(spec, scale, row.get("set"), column.get("set"),
                                            scale_settings(column, scale), scale_settings(row, scale),
                                            (row.get("set_in_columns") or {}).get(column["key"]))
            selection = None
            if row.get("grid_search"):
                experiment, selection = selected_by_grid(spec["grid_configs"][row["grid_search"]], experiment, scale)
            evaluated_on, evaluation_data = evaluation_split(experiment, column)
            run_experiment = without_inert_penalty(experiment)
            cells.append(Cell(row["label"], column["key"], column.get("metric", "overall"),
                              run_id(run_experiment), split_id(run_experiment), run_experiment, selection,
                              evaluated_on, evaluation_data,
                              experiment if run_experiment is not experiment else None))
    return cells


def selected_by_grid(grid: dict, experiment: dict, scale: str) -> tuple[dict, str]:
    """A cell whose row says ``grid_search``: its experiment marked to take the searched settings from
    the grid's selection for it, and that selection's name."""
    selection = selection_id(grid, base_of(grid, experiment, scale), scale)
    return marked(experiment, grid, selection, scale), selection


def seeds_of(spec: dict, scale: str) -> list[int]:
    """The seeds of a table at a scale: ``scale_seeds[scale]`` when given (fewer seeds for ``tiny``,
    so a many-row table stays a quick end-to-end check), else ``seeds``."""
    return list((spec.get("scale_seeds") or {}).get(scale, spec["seeds"]))


def describe_scale(spec: dict, scale: str) -> str:
    """One line naming the scale and what it means for this table's runs."""
    experiment = resolve_experiment(spec, scale)
    data, outer = experiment["data"], experiment.get("outer", {})
    parts = []
    if "iterations" in outer:
        batch = f" of {outer['meta_batch']} tasks" if "meta_batch" in outer else ""
        parts.append(f"{outer['iterations']:,} training iterations{batch}")
    for key, label in (("train_tasks", "training tasks"), ("test_tasks", "meta-test tasks")):
        if isinstance(data.get(key), int):
            parts.append(f"{data[key]:,} {label}")
    parts.append(f"seeds {', '.join(str(s) for s in seeds_of(spec, scale))}")
    return f"{scale}: " + ", ".join(parts)
