"""How long planning the workflow takes, as a user pays it on every ``snakemake`` call.

Copies the workflow into a temporary folder (so no results or caches of the checkout count) and
times ``snakemake -n``:

* of one small table (``simol_table5``) and of every table at paper scale;
* cold (no ``.snakemake/taskbal`` cache of the registry checks: what the first call after a
  change of the code pays) and warm (every later call);
* against the same Snakemake on an empty Snakefile in the same run, Snakemake's own start-up, the
  floor of any workflow;
* with ``--jobs``: the mean wall time of a tiny-scale job (``simol_table5`` built from nothing on one
  core, divided by its number of jobs), what CI's tiny builds pay per job, with every job in its own
  process (``job_server=False``) and with the job server (``taskbal.jobserver``), alternating.

Each time is the median of ``--repeats`` runs; the peak memory (max RSS) is the largest seen.

    python benchmarks/bench_dag.py [--repeats 3] [--jobs]
"""
from __future__ import annotations

import argparse
import os
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


# The jobs call ``taskbal`` from the same environment.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, max RSS in MB) of one command that must succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output}")
    return seconds, usage.ru_maxrss / 1024


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


def job_count(work: Path, args: list[str]) -> int:
    """The number of jobs of a dry run (Snakemake's "total" line of its job stats)."""
    result = subprocess.run(args, cwd=work, capture_output=True, text=True, check=True, env=ENV)
    for line in (result.stdout + result.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    raise SystemExit("no job count in the dry run's output")


def tiny_job_seconds(work: Path, sm: str, repeats: int) -> None:
    """A tiny simol_table5 built from nothing on one core, with and without the job server (alternating,
    so that machine noise hits both alike), per job."""
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for server in (False, True):
            target = [sm, "--cores", "1", "--config", "scale=tiny", f"job_server={server}", "--", "simol_table5"]
            shutil.rmtree(work / "results", ignore_errors=True)
            jobs = job_count(work, [sm, "-n", *target[1:]])
            seconds, _ = timed([*target[:1], "-q", *target[1:]], work)
            times[server].append(seconds / jobs)
    own, served = (statistics.median(times[key]) for key in (False, True))
    print(f"\ntiny simol_table5 from nothing on one core ({jobs} jobs), per job, median of {repeats}:")
    print(f"  every job in its own process      {own:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[False])})")
    print(f"  jobs run by the job server        {served:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[True])})")
    print(f"  ratio                             {served / own:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", action="store_true", help="also time tiny builds (a few minutes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder) / "workflow"
        work.mkdir()
        for name in WORKFLOW_FILES:
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
        ENV["PYTHONPATH"] = str(work / "src")  # the jobs run the copied code, as the parse does
        empty = Path(folder) / "empty"
        empty.mkdir()
        (empty / "Snakefile").write_text("rule all:\n    input: []\n")
        sm = snakemake_bin()
        one = [sm, "-n", "simol_table5", "-q"]
        paper = [sm, "-n", "-q", "--config", "scale=paper", every_table(work)]
        floor = measure("snakemake -n, empty Snakefile", [sm, "-n", "-q"], empty, args.repeats, False)
        rows = [("one table (simol_table5), cold", one, True), ("one table (simol_table5), warm", one, False),
                ("every table at paper scale, cold", paper, True), ("every table at paper scale, warm", paper, False)]
        medians = {label: measure(label, command, work, args.repeats, cold) for label, command, cold in rows}
        print("\nratio to Snakemake's own start-up (empty Snakefile):")
        for label, median in medians.items():
            print(f"  {label:40} {median / floor:5.2f}x")
        if args.jobs:
            tiny_job_seconds(work, sm, args.repeats)


if __name__ == "__main__":
    main()
