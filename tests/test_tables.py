"""Tables: best row, significance, verdicts against the paper, ordering; the written files."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from taskbal.figures import plot_curves
from taskbal.tables import build_table, write_table

SPEC = {
    "name": "demo_table", "source": "Demo paper, Table 9", "title": "A caption.", "lower_is_better": True,
    "rows": [{"label": "A", "paper": {"overall": [1.0, 0.1], "worst10": [3.0, 0.2]}},
             {"label": "B", "paper": {"overall": [2.0, 0.1], "worst10": [4.0, 0.2]}},
             {"label": "C", "paper": {"overall": [3.0, 0.1], "worst10": None}},
             {"label": "Lit", "run": False, "paper": {"overall": [0.5, 0.1]}}],
    "columns": [{"key": "overall", "label": "overall", "metric": "overall"},
                {"key": "worst10", "label": "worst-10%", "metric": "worst10"}],
}


def cells_with_means(means: dict[str, float], seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, size=(3, 100))  # shared task difficulty, paired across rows
    out = {}
    for row, mean in means.items():
        values = {s: base[s] * mean + rng.normal(0, 0.01, 100) for s in range(3)}
        for column in ("overall", "worst10"):
            out[(row, column)] = values
    return out


def line(frame, row, column):
    return frame[(frame.row == row) & (frame.column == column)].iloc[0]


def test_best_row_star_verdicts_and_ordering():
    frame = build_table(SPEC, cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0}), "quick")
    assert len(frame) == 8 and (frame.scale == "quick").all()
    a = line(frame, "A", "overall")
    assert a.best and a.significant and a.p_value < 0.1
    assert a.verdict == "inside" and line(frame, "C", "overall").verdict == "outside"
    assert line(frame, "C", "worst10").verdict == "no paper value"
    assert line(frame, "Lit", "overall").verdict == "not run"
    assert a.ordering == "kept" and a.best_agrees and a.kendall_tau == 1.0


def test_no_star_between_identical_rows_and_changed_ordering():
    frame = build_table(SPEC, cells_with_means({"A": 2.0, "B": 2.0000001, "C": 1.0}), "tiny")
    c = line(frame, "C", "overall")
    assert c.best and line(frame, "C", "overall").ordering == "changed" and not c.best_agrees
    # A and B are the same up to noise: among A, B alone neither may carry a significant star.
    two = dict(SPEC, rows=SPEC["rows"][:2])
    frame = build_table(two, {k: v for k, v in cells_with_means({"A": 2.0, "B": 2.0}).items()}, "tiny")
    assert not frame.significant.any()


def test_written_files(tmp_path):
    frame = build_table(SPEC, cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0}), "quick")
    paths = write_table(frame, SPEC, tmp_path / "demo_table", "quick",
                        {"scale_description": "quick: 2,000 iterations", "seeds": "0, 1, 2"})
    assert sorted(p.name for p in paths) == ["demo_table.csv", "demo_table.md", "demo_table.tex"]
    markdown = (tmp_path / "demo_table.md").read_text()
    assert "quick: 2,000 iterations" in markdown and "Demo paper, Table 9" in markdown
    assert "(paper 1 ± 0.1, inside)" in markdown and "**" in markdown
    assert "paper's own published numbers" in markdown
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "demo_table.csv"), frame, check_dtype=False)
    assert "\\textbf" in (tmp_path / "demo_table.tex").read_text()
    assert not list(tmp_path.glob(".*tmp"))


def test_plot_curves_writes_a_png(tmp_path):
    spec = {"source": "Demo, Figure 1", "rows": [{"label": "A"}, {"label": "B"}],
            "columns": [{"key": "5shot", "label": "5-shot"}]}
    iterations = np.arange(0, 101, 10)
    curves = {(row, "5shot"): {s: pd.DataFrame({"iteration": iterations, "train_loss": 1.0, "val_mse": 1.0,
                                                "test_mse": 3.0 / (1 + iterations / 50) + s * 0.1})
                               for s in range(3)} for row in ("A", "B")}
    out = plot_curves(spec, curves, tmp_path / "fig.png", "tiny")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
