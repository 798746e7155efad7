"""How long planning the workflow takes, as a user pays it on every ``snakemake`` call.

Copies the workflow into a temporary folder (so no results or caches of the checkout count) and
times ``snakemake -n``:

* of one small table (``simol_table5``) and of every table at paper scale;
* cold (no ``.snakemake/taskbal`` cache of the registry checks: what the first call after a
  change of the code pays) and warm (every later call);
* against the same Snakemake on an empty Snakefile in the same run, Snakemake's own start-up, the
  floor of any workflow.

Each time is the median of ``--repeats`` runs; the peak memory (max RSS) is the largest seen.

    python benchmarks/bench_dag.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "environment.yml", "src"]


def snakemake_bin() -> str:
    return str(Path(sys.executable).with_name("snakemake"))


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, max RSS in MB of the child) of one command that must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def every_table(work: Path) -> str:
    return "tables=[" + ",".join(sorted(p.stem for p in (work / "config/tables").glob("*.yaml"))) + "]"


def measure(label: str, args: list[str], cwd: Path, repeats: int, clear_cache: bool) -> float:
    times, peak = [], 0.0
    for _ in range(repeats):
        if clear_cache:
            shutil.rmtree(cwd / ".snakemake", ignore_errors=True)
        seconds, rss = timed(args, cwd)
        times.append(seconds)
        peak = max(peak, rss)
    median = statistics.median(times)
    print(f"{label:42} {median:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)}; max RSS {peak:.0f} MB)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder) / "workflow"
        work.mkdir()
        for name in WORKFLOW_FILES:
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
        empty = Path(folder) / "empty"
        empty.mkdir()
        (empty / "Snakefile").write_text("rule all:\n    input: []\n")
        sm = snakemake_bin()
        one = [sm, "-n", "-q", "simol_table5"]
        paper = [sm, "-n", "-q", "--config", "scale=paper", every_table(work)]
        floor = measure("snakemake -n, empty Snakefile", [sm, "-n", "-q"], empty, args.repeats, False)
        rows = [("one table (simol_table5), cold", one, True), ("one table (simol_table5), warm", one, False),
                ("every table at paper scale, cold", paper, True), ("every table at paper scale, warm", paper, False)]
        medians = {label: measure(label, command, work, args.repeats, cold) for label, command, cold in rows}
        print("\nratio to Snakemake's own start-up (empty Snakefile):")
        for label, median in medians.items():
            print(f"  {label:40} {median / floor:5.2f}x")


if __name__ == "__main__":
    main()
