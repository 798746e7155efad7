"""The workflow's plan: every table config, checked, resolved into the runs and splits it needs.

The Snakefile builds its DAG from ``load_plan``. Two checks stop a bad config before any job runs,
each naming the file, the scale, the row and the column:

* the JSON schemas (``workflow/schemas``), compiled once and applied to every cell;
* the code's registries (``runners.check_experiment``: which families, learners, weightings and
  runners exist and which options each takes). That needs the code, torch included, so its verdicts
  are cached in ``.snakemake/taskbal/`` under the hash of the package's source: a cell is checked
  again only when it or the code changed, and parsing the workflow then imports no torch.

The split rules' dataset inputs (a family's ``input_files``) are cached the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import extends_chain, load_table, run_id, split_id, table_cells
from .divergence import explosion_factor, explosion_share, stall_rule
from .grid import MARKER, base_of, search_experiments, seeds_of_grid, without
from .settings import ConfigFileError, read_yaml

PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_DIR = Path(".snakemake/taskbal")


class PlanError(ValueError):
    """A config that cannot be run; the message names the file and the field."""


@dataclass
class Plan:
    tables: dict = field(default_factory=dict)          # name → table config
    runs: dict = field(default_factory=dict)            # (scale, run) → resolved experiment
    splits: dict = field(default_factory=dict)          # (scale, split) → data section
    split_of_run: dict = field(default_factory=dict)    # (scale, run) → split id
    tables_of_run: dict = field(default_factory=dict)   # (scale, run) → names of the tables it serves
    split_inputs: dict = field(default_factory=dict)    # (scale, split) → dataset files it is built from
    resources_of_run: dict = field(default_factory=dict)  # (scale, run) → cluster resources its jobs ask for
    grids: dict = field(default_factory=dict)           # name → grid config (config/grids/)
    selections: dict = field(default_factory=dict)      # (scale, selection) → its grid, base and search runs
    selection_of_run: dict = field(default_factory=dict)  # (scale, run) → the selection it takes settings from

    @property
    def scales(self) -> list[str]:
        return sorted({scale for spec in self.tables.values() for scale in spec["scales"]})

    def names(self, kind: str) -> list[str]:
        return [name for name, spec in self.tables.items() if spec.get("kind", "table") == kind]


def compiled_validator(schema_path: Path):
    import jsonschema

    schema = read_yaml(schema_path)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def schema_error(validator, instance: dict, root: str = "(top level)") -> str | None:
    """The first schema violation as ``field.path: message`` (the field as the user writes it)."""
    error = next(iter(sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or root
    return f"{where}: {error.message}"


def source_hash(schemas_dir: Path) -> str:
    """What the registry checks depend on: the package's Python source and the schemas."""
    digest = hashlib.sha256()
    for path in sorted([*PACKAGE_DIR.rglob("*.py"), *Path(schemas_dir).glob("*.yaml")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class CheckCache:
    """Cells already checked against the registries, and split inputs, for one source hash."""

    def __init__(self, key: str, directory: Path = CACHE_DIR):
        self.path = Path(directory) / f"checked-{key}.json"
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            stored = {}
        self.checked = set(stored.get("checked", []))
        self.split_inputs = dict(stored.get("split_inputs", {}))
        self.changed = False

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"checked": sorted(self.checked), "split_inputs": self.split_inputs}))
        os.replace(tmp, self.path)  # concurrent parses (cluster jobs) each write a whole file


def check_cell(experiment: dict, run: str, cache: CheckCache) -> None:
    if run in cache.checked:
        return
    from .runners import check_experiment  # imports the registries (and torch) only on a miss

    check_experiment(experiment)
    cache.checked.add(run)
    cache.changed = True


def inputs_of_split(data: dict, split: str, cache: CheckCache) -> list[str]:
    if split not in cache.split_inputs:
        from .data import family_module

        family = family_module(data["family"])
        cache.split_inputs[split] = list(family.input_files(data)) if hasattr(family, "input_files") else []
        cache.changed = True
    return cache.split_inputs[split]


def check_paper_values(spec: dict) -> None:
    """Every row of a table gives the paper's value for every column, by the column's key: ``null``
    where the paper gives none, so that a misspelt key cannot pass for a missing value. A column with
    ``paper_column`` (another reading of the same experiment) is compared with that column's value."""
    if spec.get("kind", "table") != "table":
        return
    columns = [column["key"] for column in spec["columns"] if "paper_column" not in column]
    readings = {column["key"]: column["paper_column"] for column in spec["columns"] if "paper_column" in column}
    for key, paper_column in readings.items():
        if paper_column not in columns:
            raise PlanError(f"columns ({key!r}).paper_column: {paper_column!r} is not a column with the paper's "
                            f"values; those are {columns}")
    for index, row in enumerate(spec["rows"]):
        paper = row.get("paper")
        where = f"rows[{index}] ({row.get('label')!r}).paper"
        if not isinstance(paper, dict):
            raise PlanError(f"{where}: give the paper's value for each column {columns} "
                            "(null where the paper reports none)")
        borrowed = [key for key in paper if key in readings]
        if borrowed:
            raise PlanError(f"{where}.{borrowed[0]}: this column takes the paper's value of column "
                            f"{readings[borrowed[0]]!r} (its paper_column); give the value there only")
        unknown = [key for key in paper if key not in columns]
        if unknown:
            raise PlanError(f"{where}.{unknown[0]}: not a column key; the columns are {columns}")
        every = [column["key"] for column in spec["columns"]]
        for option in ("quoted", "not_run_columns", "set_in_columns"):
            wrong = [key for key in (row.get(option) or {}) if key not in every]
            if wrong:
                raise PlanError(f"rows[{index}] ({row.get('label')!r}).{option}.{wrong[0]}: not a column key; the "
                                f"columns are {every}")
        missing = [key for key in columns if key not in paper]
        if missing:
            raise PlanError(f"{where}: no value for column {missing[0]!r}; write `{missing[0]}: null` "
                            "where the paper reports none")
    check_row_references(spec)


def check_panel_columns(spec: dict) -> None:
    """A sweep panel's ``columns`` name columns of the figure."""
    keys = [column["key"] for column in spec["columns"]]
    for index, panel in enumerate((spec.get("figure") or {}).get("panels") or []):
        wrong = [key for key in panel.get("columns") or [] if key not in keys]
        if wrong:
            raise PlanError(f"figure.panels[{index}].columns: {wrong[0]!r} is not a column key; the columns are {keys}")


def check_row_references(spec: dict) -> None:
    """A row's ``extrapolate.row`` and a column's ``relative_to`` and ``delta_p.base`` name a row of the table
    that has runs; ``delta_p.tasks`` name the table's other columns."""
    run = [row["label"] for row in spec["rows"] if "not_run" not in row and "extrapolate" not in row]
    for index, row in enumerate(spec["rows"]):
        source = (row.get("extrapolate") or {}).get("row")
        if source is not None and source not in run:
            raise PlanError(f"rows[{index}] ({row.get('label')!r}).extrapolate.row: {source!r} is not a row with "
                            f"runs; those are {run}")
    metric_keys = [column["key"] for column in spec["columns"] if not column.get("delta_p")]
    for column in spec["columns"]:
        reference = column.get("relative_to")
        if reference is not None and reference not in run:
            raise PlanError(f"columns ({column['key']!r}).relative_to: {reference!r} is not a row with runs; "
                            f"those are {run}")
        delta = column.get("delta_p")
        if delta is not None and delta["base"] not in run:
            raise PlanError(f"columns ({column['key']!r}).delta_p.base: {delta['base']!r} is not a row with runs; "
                            f"those are {run}")
        wrong = [key for keys in (delta or {}).get("tasks", []) for key in keys if key not in metric_keys]
        if wrong:
            raise PlanError(f"columns ({column['key']!r}).delta_p.tasks: {wrong[0]!r} is not a metric column; "
                            f"those are {metric_keys}")


def add_run(plan: Plan, scale: str, run: str, experiment: dict, table: str, resources: dict | None,
            split_files: list[str]) -> None:
    key, split = (scale, run), split_id(experiment)
    plan.runs[key] = experiment
    plan.splits[scale, split] = experiment["data"]
    plan.split_inputs[scale, split] = split_files
    plan.split_of_run[key] = split
    plan.tables_of_run.setdefault(key, set()).add(table)
    plan.resources_of_run[key] = merge_resources(plan.resources_of_run.get(key, {}), resources)


def add_evaluation_split(plan: Plan, scale: str, cell, experiment_schema, cache: CheckCache) -> None:
    """The split a column's ``evaluate_on`` tests the cell's run on, checked as a run's data would be."""
    evaluated = {**without(cell.experiment, [MARKER]), "data": cell.evaluation_data}
    problem = schema_error(experiment_schema, evaluated, "experiment")
    if problem:
        raise PlanError(f"evaluate_on: {problem}")
    try:
        check_cell(evaluated, cell.evaluated_on, cache)
    except ValueError as error:
        raise PlanError(f"evaluate_on: {error}") from None
    plan.splits[scale, cell.evaluated_on] = cell.evaluation_data
    plan.split_inputs[scale, cell.evaluated_on] = inputs_of_split(cell.evaluation_data, cell.evaluated_on, cache)


def check_grid(validator, grid: dict, path: Path, scales) -> None:
    """A grid config's shape; its file is named (the table that uses it is named by the caller)."""
    problem = schema_error(validator, grid)
    missing = [scale for scale in scales if scale not in grid["scales"]] if not problem else []
    if missing:
        problem = f"scales: no settings for scale {missing[0]!r} (the table that uses it has it)"
    if not problem:
        try:
            stall_rule(grid)  # what the schema cannot bound (.nan, above not above below)
        except ValueError as error:
            problem = str(error)
    if problem:
        raise ConfigFileError(f"{path}: {problem}")


def add_search_runs(plan: Plan, spec: dict, scale: str, cell, experiment_schema, cache: CheckCache) -> None:
    """The runs of the grid search that chooses ``cell``'s searched settings (each checked like a cell's
    run); they serve the grid and the table. A selection that other cells share (overall and worst-10 %
    columns, Table 5's depths, Figure 2) is resolved and checked once: later cells only add their table."""
    resources = (spec.get("resources") or {}).get(scale)
    planned = plan.selections.get((scale, cell.selection))
    if planned is not None:
        for run in planned["runs"]:
            plan.tables_of_run[scale, run].add(spec["name"])
            plan.resources_of_run[scale, run] = merge_resources(plan.resources_of_run[scale, run], resources)
        return
    grid = spec["grid_configs"][cell.experiment[MARKER]["grid"]]
    base = base_of(grid, cell.experiment, scale)
    runs = []
    for point, experiment in search_experiments(grid, base, scale):
        run = run_id(experiment)
        try:
            problem = schema_error(experiment_schema, experiment, "experiment")
            if problem:
                raise PlanError(problem)
            check_cell(experiment, run, cache)
        except ValueError as error:
            raise PlanError(f"grid {grid['name']} point {point}: {error}") from None
        add_run(plan, scale, run, experiment, grid["name"], resources,
                inputs_of_split(experiment["data"], split_id(experiment), cache))
        plan.tables_of_run[scale, run].add(spec["name"])
        runs.append(run)
    plan.selections[scale, cell.selection] = {"grid": grid["name"], "base": base, "runs": runs,
                                              "seeds": seeds_of_grid(grid, scale)}


def merge_resources(asked: dict, more: dict | None) -> dict:
    """A run that serves several tables asks for the most that any of them needs."""
    merged = dict(asked)
    for key, value in (more or {}).items():
        merged[key] = max(merged.get(key, value), value)
    return merged


def in_dependency_order(paths: list[Path]) -> list[Path]:
    """Configs that others extend first, so that an error in an inherited value names the file it is
    written in rather than a file that inherits it."""
    return sorted(paths, key=lambda path: (len(extends_chain(path)), path.name))


def load_plan(tables_dir: Path | str, schemas_dir: Path | str, requested: list[str],
              cache_dir: Path = CACHE_DIR) -> Plan:
    """Every table config under ``tables_dir``, checked and resolved; ``requested`` (the config's
    ``tables``) must all exist."""
    tables_dir, schemas_dir = Path(tables_dir), Path(schemas_dir)
    table_schema = compiled_validator(schemas_dir / "table.schema.yaml")
    experiment_schema = compiled_validator(schemas_dir / "experiment.schema.yaml")
    grid_schema = compiled_validator(schemas_dir / "grid.schema.yaml")
    cache = CheckCache(source_hash(schemas_dir), cache_dir)
    plan = Plan()
    try:
        paths = in_dependency_order(list(tables_dir.glob("*.yaml")))
    except ConfigFileError as error:
        raise PlanError(str(error)) from None
    for path in paths:
        try:
            spec = load_table(path)
            problem = schema_error(table_schema, spec)
            if problem:
                raise PlanError(problem)
            check_paper_values(spec)
            explosion_factor(spec)  # table-level settings the schema cannot bound (.inf, .nan)
            explosion_share(spec)
            stall_rule(spec)
            check_panel_columns(spec)
            for name, grid in (spec.get("grid_configs") or {}).items():
                check_grid(grid_schema, grid, tables_dir.parent / "grids" / f"{name}.yaml", spec["scales"])
                plan.grids[name] = grid
            resources = spec.get("resources") or {}
            for scale in spec["scales"]:
                for cell in table_cells(spec, scale):
                    where = f"scale {scale!r}, row {cell.row!r}, column {cell.column!r}"
                    try:
                        written = cell.as_written or cell.experiment  # checked as the user wrote it
                        problem = schema_error(experiment_schema, without(written, [MARKER]), "experiment")
                        if problem:
                            raise PlanError(problem)
                        checked_as = cell.run if cell.as_written is None else run_id(cell.as_written)
                        check_cell(without(written, [MARKER]), checked_as, cache)
                        add_run(plan, scale, cell.run, cell.experiment, spec["name"], resources.get(scale),
                                inputs_of_split(cell.experiment["data"], cell.split, cache))
                        if cell.evaluated_on is not None:
                            add_evaluation_split(plan, scale, cell, experiment_schema, cache)
                        if cell.selection is not None:
                            plan.selection_of_run[scale, cell.run] = cell.selection
                            add_search_runs(plan, spec, scale, cell, experiment_schema, cache)
                    except ValueError as error:
                        raise PlanError(f"{where}: {error}") from None
        except ConfigFileError as error:  # names its own file (``path`` or one it extends)
            cache.save()
            raise PlanError(str(error)) from None
        except (ValueError, FileNotFoundError) as error:
            cache.save()  # what was checked before the error stays checked
            raise PlanError(f"{path}: {error}") from None
        plan.tables[spec["name"]] = spec
    cache.save()
    unknown = [name for name in requested if name not in plan.tables]
    if unknown:
        raise PlanError(f"config key 'tables': no {tables_dir}/<name>.yaml for {unknown}; known: {sorted(plan.tables)}")
    return plan
