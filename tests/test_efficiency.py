"""Thesis Figure 3.1's measurements: a training loop's peak memory, the swept LL parameter counts, and sweep
panels drawn from the runs' train.json numbers."""
from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from taskbal.config import load_table, table_cells
from taskbal.figures import STYLES, sweep_points
from taskbal.machine import PeakMemory
from taskbal.mtl.model import MultiTaskNet


@pytest.mark.skipif(not PeakMemory("cpu").can_measure(), reason="no resettable peak resident set here (not Linux)")
def test_the_cpu_peak_counts_what_the_loop_allocated_and_not_what_came_before():
    # Fresh anonymous mappings, touched page by page: the resident set grows by their size whatever the
    # process allocated and freed before (malloc may serve a tensor from freed memory that is still resident).
    before = touched_block(48)  # resident at the start: part of the start, not of the peak above it
    meter = PeakMemory("cpu")
    meter.start()
    block = touched_block(64)
    block.close()
    small = meter.summary()
    assert 60 <= small["peak_memory_mb"] < 100, small  # the 64 MB block, not the 48 MB before the start
    assert "VmHWM" in small["peak_memory_measure"]
    meter.start()  # a new measurement forgets the old peak
    again = meter.summary()["peak_memory_mb"]
    assert again < 16
    before.close()


def touched_block(megabytes: int) -> mmap.mmap:
    block = mmap.mmap(-1, megabytes * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_the_p_columns_count_the_lower_level_parameters():
    """Each p column's x is the parameter count of the network its runs train (two 10-class heads)."""
    spec = load_table("thesis_figure3_1", REPO / "config/tables")
    x = {column["key"]: column["x"] for column in spec["columns"]}
    cells = [cell for cell in table_cells(spec, "paper") if cell.column.startswith("p")]
    assert {cell.column for cell in cells} == {"p0", "p1", "p2", "p3"}
    for cell in cells:
        net = MultiTaskNet(784, cell.experiment["mtl"]["hidden"], [10, 10])
        assert sum(p.numel() for p in net.parameters()) == x[cell.column]
        assert cell.experiment["weighting"]["lower_steps"] == 64  # the p sweep is at T = 64
    t_steps = {cell.column: cell.experiment["weighting"]["lower_steps"] for cell in table_cells(spec, "paper")
               if cell.column.startswith("t")}
    assert t_steps == {"t8": 8, "t16": 16, "t32": 32, "t64": 64, "t128": 128}


def test_sweep_panels_draw_the_runs_numbers_over_their_own_columns(tmp_path):
    spec = {"source": "Demo", "rows": [{"label": "A"}],
            "figure": {"style": "sweep", "panels": [
                {"value": "step_seconds_median", "label": "time", "columns": ["t1", "t2"], "x_label": "T"},
                {"value": "peak_memory_mb", "label": "memory", "columns": ["p1"], "x_label": "p"}]},
            "columns": [{"key": "t1", "label": "T = 1", "x": 1}, {"key": "t2", "label": "T = 2", "x": 2},
                        {"key": "p1", "label": "p = 10", "x": 10}]}
    finals = {("A", key): {s: {"step_seconds_median": x + s, "peak_memory_mb": 100.0 * x} for s in (0, 1)}
              for key, x in (("t1", 1), ("t2", 2), ("p1", 10))}
    curves = {key: {s: pd.DataFrame({"iteration": [0, 5]}) for s in (0, 1)} for key in finals}
    x, mean, _ = sweep_points(spec, "A", spec["figure"]["panels"][0], curves, finals)
    assert list(x) == [1, 2] and mean == pytest.approx([1.5, 2.5])  # the p column is not in this panel
    x, mean, _ = sweep_points(spec, "A", spec["figure"]["panels"][1], curves, finals)
    assert list(x) == [10] and mean == pytest.approx([1000.0])
    assert STYLES["sweep"](spec, curves, tmp_path / "s.png", "tiny", finals=finals).stat().st_size > 10_000
    del finals["A", "t2"][1]["step_seconds_median"]
    with pytest.raises(ValueError, match=r"row 'A', column 't2', seed 1: no 'step_seconds_median'"):
        sweep_points(spec, "A", spec["figure"]["panels"][0], curves, finals)
    assert np.isfinite(mean).all()
