"""A table from the runs built so far: the rows and columns whose runs are all trained and evaluated.

A paper-scale table takes hours to days on a laptop; its runs are built a few at a time (``snakemake --config
scale=paper -- results/runs/paper/<run>/seed<s>/eval.csv``). ``taskbal table-so-far`` renders what those
runs say with the table's own verdicts (paper CI, seed interval, divergence, ordering and the test against
the second best, over the rows it has), so a partial build is read the same way as a finished one, and
names what it leaves out. It is not a rule of the DAG: the table rule keeps declaring every run.
"""
from __future__ import annotations

from dataclasses import dataclass

from .artifacts import CURVE, EVAL, TRAIN_SUMMARY, selection_file, split_sidecar
from .config import seeds_of, table_cells
from .divergence import stall_rule


@dataclass
class Progress:
    """How far a table's build has come at one scale."""
    built: dict[tuple[str, str], bool]  # per (row, column): every seed's eval.csv and train.json exist
    targets: list[str]                  # the eval.csv files (Snakemake targets) not evaluated yet, in table order
    searched: list[str]                 # rows whose grid search has not chosen yet (its choice names their runs)


def progress(spec: dict, scale: str, exists) -> Progress:
    """One walk over the table's cells, testing each run's files with ``exists(path)``. A grid-searched cell
    counts as built only once its search has chosen (the selection's run is its run)."""
    seeds = seeds_of(spec, scale)
    built: dict[tuple[str, str], bool] = {}
    targets: dict[str, None] = {}  # ordered and without repeats: columns of one run share its files
    searched: dict[str, None] = {}
    for cell in table_cells(spec, scale):
        if cell.selection and not exists(selection_file(scale, cell.selection)):
            built[cell.row, cell.column] = False
            searched[cell.row] = None
            continue
        missing = [path for seed in seeds if not exists(path := cell.file(scale, seed, EVAL))]
        targets.update(dict.fromkeys(missing))
        built[cell.row, cell.column] = not missing and all(exists(cell.file(scale, seed, TRAIN_SUMMARY))
                                                           for seed in seeds)
    return Progress(built, list(targets), list(searched))


def restrict_to_built(spec: dict, built: dict[tuple[str, str], bool],
                      column_keys: list[str] | None = None) -> tuple[dict, list[str], list[str]]:
    """The table cut to a block of built cells: the columns ``column_keys``, or else the block with the most
    cells (ties: more columns), a set of columns (one row's built columns, or two rows' in common); with
    every row built in all of them, and the labels of the rows and columns left out. Rows the table never
    runs at this scale (``not_run``, ``extrapolate``) stay: their page line says why."""
    position = {column["key"]: i for i, column in enumerate(spec["columns"])}
    patterns = {row: frozenset(key for (r, key), done in built.items() if r == row and done) for row, _ in built}
    candidates = {pattern for pattern in patterns.values() if pattern} | \
        {a & b for a in patterns.values() for b in patterns.values() if a & b}

    def rows_with(keys: frozenset) -> list[str]:
        return [row for row, pattern in patterns.items() if keys <= pattern]

    def size(keys: frozenset) -> tuple:
        # most cells, then most columns, then the columns that come first in the table (a fixed choice)
        return len(keys) * len(rows_with(keys)), len(keys), sorted((-position[key] for key in keys), reverse=True)

    kept_keys = frozenset(column_keys) if column_keys else max(candidates, key=size)
    runs, full = set(patterns), set(rows_with(kept_keys))
    if not full:
        labels = ", ".join(column["label"] for column in spec["columns"] if column["key"] in kept_keys)
        raise ValueError(f"{spec['name']}: no row has every seed built in the columns asked for ({labels})")
    rows = [row for row in spec["rows"] if row["label"] not in runs or row["label"] in full]
    columns = [column for column in spec["columns"] if column["key"] in kept_keys]
    left_rows = [row["label"] for row in spec["rows"] if row["label"] in runs and row["label"] not in full]
    left_columns = [column["label"] for column in spec["columns"] if column["key"] not in kept_keys]
    return {**spec, "rows": rows, "columns": columns}, left_rows, left_columns


def inputs_of(spec: dict, scale: str) -> dict[str, list[str]]:
    """The files ``taskbal table`` reads for ``spec``: eval.csv, train.json, curve.csv where the table has a
    stall rule, the splits' sidecars and the selections of grid-searched rows."""
    cells = table_cells(spec, scale)
    seeds = seeds_of(spec, scale)
    files = lambda name: sorted({cell.file(scale, seed, name) for cell in cells for seed in seeds})  # noqa: E731
    return {"eval": files(EVAL), "train_summaries": files(TRAIN_SUMMARY),
            "curves": files(CURVE) if stall_rule(spec) else [],
            "splits": sorted({split_sidecar(scale, cell.split) for cell in cells}),
            "selections": sorted({selection_file(scale, cell.selection) for cell in cells if cell.selection})}


def left_out_line(left_rows: list[str], left_columns: list[str]) -> str:
    """What the page leaves out, for its provenance list (the best and the ordering are over the rows shown)."""
    quoted = lambda labels: ", ".join(f"'{label}'" for label in labels)  # noqa: E731  (labels hold commas)
    parts = ([f"rows {quoted(left_rows)}"] if left_rows else []) + \
            ([f"columns {quoted(left_columns)}"] if left_columns else [])
    if not parts:
        return "nothing: every run of the table is built"
    return "; ".join(parts) + " (the best, the test against the second best and the ordering are over the rows shown)"
