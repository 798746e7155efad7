"""What a reader of the reproduction report sees, checked in headless Chromium (Debian's chromium,
driven by Playwright): the checks of the report built by the tiny whole-DAG run of test_workflow."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pandas as pd

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
COLOURS = {"inside": "rgb(212, 237, 218)", "outside": "rgb(248, 215, 218)"}  # report.STYLE


def png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def check_report(work: Path, scale: str, tables: list[str], figure: str, not_built: str, screenshot: Path) -> None:
    """The report of ``tables`` and ``figure`` (SIMOL's) at ``scale``, built in ``work``."""
    from playwright.sync_api import sync_playwright

    page_path = work / f"results/report/{scale}.html"
    frames = {name: pd.read_csv(work / f"results/tables/{scale}/{name}.csv") for name in tables}
    digits = {name: json.loads((work / f"results/tables/{scale}/{name}.json").read_text())["paper_decimals"]
              for name in tables}
    png = work / f"results/figures/{scale}/{figure}.png"
    machine = json.loads(next((work / f"results/runs/{scale}").glob("*/seed0/train.json")).read_text())["machine"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requested = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(page_path.as_uri())
        text = page.inner_text("body")
        page.screenshot(path=str(screenshot), full_page=True)

        # Self-contained: nothing but the page itself and its inline data is fetched.
        assert all(url == page_path.as_uri() or url.startswith("data:") for url in requested), requested
        assert page.title() == f"taskbal reproduction report ({scale})"

        # The summary line counts what the tables' CSVs say.
        verdicts, seed_verdicts = pd.concat(frames.values()).verdict, pd.concat(frames.values()).seed_verdict
        inside, compared = int((verdicts == "inside").sum()), int(verdicts.isin(["inside", "outside"]).sum())
        consistent = int((seed_verdicts == "consistent").sum())
        judged = int(seed_verdicts.isin(["consistent", "inconsistent", "too wide"]).sum())
        assert (f"SIMOL: {inside} of {compared} cells inside the paper's CI, {consistent} of {judged} consistent "
                "with it under seed variation") in text

        # Each cell shows our value, the paper's and the verdict, coloured by the verdict.
        for name, frame in frames.items():
            columns = list(dict.fromkeys(frame.column))
            for line in frame.itertuples():
                row = page.locator(f"#{name} ~ table.results tr", has_text=line.row).first
                cell = row.locator("td").nth(columns.index(line.column))
                shown = cell.inner_text()
                assert f"{line.ours_mean:.3f} ± {line.ours_ci:.3f}" in shown, (name, line.row, shown)
                assert f"paper {line.paper_mean:.{digits[name]}f}" in shown and line.verdict in shown
                assert f"[± {line.seed_ci:.3f}]" in shown and f"{line.seed_verdict} (seeds)" in shown
                background = cell.evaluate("e => getComputedStyle(e).backgroundColor")
                assert background == COLOURS[line.verdict], (name, line.row, line.column, background)

        # The figure is drawn inline, decoded at the PNG's size.
        image = page.locator(f"#{figure} ~ img").first
        assert image.evaluate("e => e.complete && e.naturalWidth") == png_width(png)
        assert image.bounding_box()["width"] > 300
        # What was not built, and why; the scale, seeds, commit and machine behind the numbers.
        assert "Not a target yet" not in text  # every experiment of config/papers.yaml is a target
        assert f"A target, not built in this report: snakemake --config scale={scale} -- {not_built}" in text
        assert "Nothing to run:" in text  # e.g. Nash-GBML's complexity table
        assert f"scale description: {scale}:" in text and "seeds: 0" in text
        assert machine in text and "git commit" in text
        browser.close()
    assert screenshot.stat().st_size > 50_000
