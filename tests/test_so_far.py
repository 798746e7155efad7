"""`taskbal table-so-far` (taskbal.so_far): a table from the runs built so far, with the table's verdicts."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from taskbal.cli import main
from taskbal.config import load_table, seeds_of, table_cells
from taskbal.so_far import progress, restrict_to_built

TABLE, SCALE = "simol_table1", "tiny"
BUILT_ROWS = ["min average loss (MAML)", "mini-batch MGDA"]  # their 5-shot Adam runs serve two columns


@pytest.fixture()
def empty_workspace(tmp_path, monkeypatch, repo):
    """A working folder with the project's config and nothing built."""
    (tmp_path / "config").symlink_to(repo / "config")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def workspace(empty_workspace):
    """A results/ tree of the tiny simol_table1 with only two rows' 5-shot Adam runs evaluated."""
    root = empty_workspace
    spec = load_table(TABLE)
    rng = np.random.default_rng(0)
    values = {}
    for cell in table_cells(spec, SCALE):
        if cell.row not in BUILT_ROWS or cell.column != "overall_5shot":
            continue
        for seed in seeds_of(spec, SCALE):
            mse = rng.gamma(2.0, 0.5 + BUILT_ROWS.index(cell.row), size=50)
            values[cell.row, seed] = mse
            curve = pd.DataFrame({"iteration": [0, 10, 20], "val_mse": [4.0, 2.0, float(mse.mean())]})
            for name, text in (("eval.csv", pd.DataFrame({"task": range(50), "mse": mse}).to_csv(index=False)),
                               ("train.json", json.dumps({"divergence": "none", "final_val_mse": float(mse.mean())})),
                               ("curve.csv", curve.to_csv(index=False))):  # the train rule writes all three
                path = root / cell.file(SCALE, seed, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        sidecar = root / f"results/splits/{SCALE}/{cell.split}.json"
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text("{}")
    return root, values


def test_the_built_rows_and_columns_are_rendered_with_the_tables_numbers_and_the_rest_named(workspace, capsys):
    root, values = workspace
    main(["table-so-far", TABLE, "--scale", SCALE])
    printed = capsys.readouterr().out
    frame = pd.read_csv(root / f"results/tables/{SCALE}/so_far/{TABLE}.csv")
    assert set(frame.row) == set(BUILT_ROWS)
    assert set(frame.column) == {"overall_5shot", "worst10_5shot"}  # the two columns of the same runs
    for row in BUILT_ROWS:
        line = frame[(frame.row == row) & (frame.column == "overall_5shot")].iloc[0]
        per_seed = [values[row, seed].mean() for seed in (0, 1)]
        assert json.loads(line.seed_values) == pytest.approx(per_seed)
        assert line.ours_mean == pytest.approx(np.mean(per_seed))
        worst = frame[(frame.row == row) & (frame.column == "worst10_5shot")].iloc[0]
        assert json.loads(worst.seed_values) == pytest.approx([np.sort(values[row, s])[-5:].mean() for s in (0, 1)])
    page = (root / f"results/tables/{SCALE}/so_far/{TABLE}.md").read_text()
    assert "built so far, left out: rows 'mini-batch CAGrad'" in page and "'SIMOL'" in page
    assert "columns 'overall 2-shot'" in page and "'worst-10% 2-shot, SGD inner steps'" in page
    # What is left: every other run's evaluation per seed (ungridded rows), and SIMOL's search.
    spec = load_table(TABLE)
    others = {cell.run for cell in table_cells(spec, SCALE) if cell.selection is None} - \
        {cell.run for cell in table_cells(spec, SCALE) if cell.row in BUILT_ROWS and cell.column == "overall_5shot"}
    left = f"{2 * len(others)} evaluations left to build: snakemake --config scale=tiny -- results/runs/tiny/"
    assert left in printed
    assert "rows waiting for their grid search: SIMOL (build the table's target" in printed
    # The table rule's own page is not touched.
    assert not (root / f"results/tables/{SCALE}/{TABLE}.md").exists()


def test_a_row_is_kept_only_where_every_kept_column_is_built():
    spec = load_table(TABLE)
    cells = {(cell.row, cell.column) for cell in table_cells(spec, SCALE)}
    built = {key: key[0] in BUILT_ROWS and key[1] in {"overall_5shot", "worst10_5shot"} for key in cells}
    built["mini-batch CAGrad", "overall_5shot"] = True  # built in one kept column only: left out
    subset, left_rows, left_columns = restrict_to_built(spec, built)
    assert [row["label"] for row in subset["rows"]] == BUILT_ROWS
    assert [column["key"] for column in subset["columns"]] == ["overall_5shot", "worst10_5shot"]
    assert "mini-batch CAGrad" in left_rows and "overall 2-shot" in left_columns
    # Nothing on disk: nothing built.
    assert not any(progress(spec, SCALE, lambda path: False).built.values())


def test_nothing_built_is_a_clear_error_and_writes_nothing(empty_workspace, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["table-so-far", TABLE, "--scale", SCALE])
    assert stop.value.code == 2
    assert "simol_table1 at scale 'tiny': no cell has every seed's eval.csv and train.json" in capsys.readouterr().err
    assert not (empty_workspace / "results").exists()


def test_a_figure_is_refused(empty_workspace, capsys):
    with pytest.raises(SystemExit):
        main(["table-so-far", "nash_figure2", "--scale", SCALE])
    assert "nash_figure2 is a figure" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["simol_table1", "--scale", "huge"], "scale: 'huge' is not defined in table simol_table1"),
    (["simol_tabel1", "--scale", "tiny"], "table config config/tables/simol_tabel1.yaml does not exist"),
])
def test_an_unknown_scale_or_table_is_named(empty_workspace, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(["table-so-far", *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (empty_workspace / "results").exists()


def test_the_block_with_the_most_built_cells_is_shown():
    # One row built in all 12 columns, three in the four Adam columns: 4 rows x 4 columns beat 1 x 12.
    spec = load_table(TABLE)
    cells = {(cell.row, cell.column) for cell in table_cells(spec, SCALE)}
    adam = {"overall_5shot", "overall_2shot", "worst10_5shot", "worst10_2shot"}
    rows = ["mini-batch MGDA", "mini-batch CAGrad", "mini-batch PCGrad"]
    built = {key: key[0] == "min average loss (MAML)" or (key[0] in rows and key[1] in adam) for key in cells}
    subset, left_rows, left_columns = restrict_to_built(spec, built)
    assert [row["label"] for row in subset["rows"]] == ["min average loss (MAML)", *rows]
    assert {column["key"] for column in subset["columns"]} == adam and len(left_columns) == 8
    assert left_rows == ["mini-batch improvement function", "SIMOL"]


def test_progress_names_each_missing_evaluation_once_and_waits_for_the_search():
    spec = load_table(TABLE)
    cells = table_cells(spec, SCALE)
    maml = [cell for cell in cells if cell.row == "min average loss (MAML)" and cell.column == "overall_5shot"][0]
    seeds = seeds_of(spec, SCALE)
    on_disk = {maml.file(SCALE, seed, "eval.csv") for seed in seeds} | {maml.file(SCALE, seeds[0], "train.json")}
    done = progress(spec, SCALE, on_disk.__contains__)
    # Evaluated in every seed, train.json in one only: not built, and not a target either.
    assert not done.built["min average loss (MAML)", "overall_5shot"]
    assert not set(done.targets) & on_disk
    # A run serves two columns (overall, worst 10 %): its files are named once, and every other run's are.
    unsearched = {cell.file(SCALE, seed, "eval.csv") for cell in cells if not cell.selection for seed in seeds}
    assert len(done.targets) == len(set(done.targets)) and set(done.targets) == unsearched - on_disk
    # SIMOL's row waits for its search: no target, and named as searched.
    assert done.searched == ["SIMOL"]
    assert not any(done.built[key] for key in done.built if key[0] == "SIMOL")
    on_disk |= {maml.file(SCALE, seed, "train.json") for seed in seeds}
    assert progress(spec, SCALE, on_disk.__contains__).built["min average loss (MAML)", "overall_5shot"]


def test_columns_asked_for_replace_the_largest_block():
    # MAML built everywhere, SIMOL in the clipped columns only: the largest block (MAML's 12 columns) leaves
    # SIMOL out; asking for the clipped columns shows both rows there.
    spec = load_table(TABLE)
    cells = {(cell.row, cell.column) for cell in table_cells(spec, SCALE)}
    clipped = ["overall_5shot_sgd_clip", "worst10_5shot_sgd_clip"]
    built = {key: key[0] == "min average loss (MAML)" or (key[0] == "SIMOL" and key[1] in clipped) for key in cells}
    assert [row["label"] for row in restrict_to_built(spec, built)[0]["rows"]] == ["min average loss (MAML)"]
    subset, left_rows, left_columns = restrict_to_built(spec, built, clipped)
    assert [row["label"] for row in subset["rows"]] == ["min average loss (MAML)", "SIMOL"]
    assert [column["key"] for column in subset["columns"]] == clipped and len(left_columns) == 10
    built["min average loss (MAML)", "overall_2shot"] = False
    with pytest.raises(ValueError, match=r"no row has every seed built in the columns asked for \(overall 2-shot\)"):
        restrict_to_built(spec, built, ["overall_2shot"])


def test_the_columns_option_renders_only_those_columns(workspace):
    root, _ = workspace
    main(["table-so-far", TABLE, "--scale", SCALE, "--columns", "overall_5shot"])
    frame = pd.read_csv(root / f"results/tables/{SCALE}/so_far/{TABLE}.csv")
    assert set(frame.column) == {"overall_5shot"} and set(frame.row) == set(BUILT_ROWS)


def test_an_unknown_column_is_named_with_the_tables_columns(workspace, capsys):
    root, _ = workspace
    with pytest.raises(SystemExit) as stop:
        main(["table-so-far", TABLE, "--scale", SCALE, "--columns", "overall_5shot,overall_7shot"])
    error = capsys.readouterr().err
    assert stop.value.code == 2
    assert "--columns: overall_7shot is not a column of config/tables/simol_table1.yaml" in error
    assert "overall_2shot_sgd_clip" in error
    assert not (root / "results/tables").exists()
