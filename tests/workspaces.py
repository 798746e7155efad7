"""A copy of the workflow in a test's folder, and Snakemake run in it: what every test that builds a target
from nothing shares (the tiny builds, the bad-input, Slurm and tracking-server tests)."""
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "environment.yml"]


def copy_workflow(repo: Path, target: Path) -> Path:
    """The files Snakemake reads, without the user's results/ or resources/."""
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy(source, target / name)
    return target


def tiny_workspace(repo: Path, target: Path) -> Path:
    """A git folder holding the workflow (the tables record the commit they were built from)."""
    copy_workflow(repo, target)
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    return target


def edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    spec = yaml.safe_load(path.read_text())
    change(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))


def edit_table(work: Path, table: str, seeds: list[int] | None = None, rows: list[str] | None = None) -> None:
    """Fewer seeds, or only the rows labelled, of a table's config in the copy."""
    def change(spec: dict) -> None:
        if seeds is not None:
            spec["seeds"] = seeds
        if rows is not None:
            spec["rows"] = [row for row in spec["rows"] if row["label"] in rows]
    edit_yaml(work / f"config/tables/{table}.yaml", change)


def mark_generated(dataset_folder: Path) -> None:
    """What the download rule writes once a dataset is checked, so the build uses the generated files."""
    (dataset_folder / ".verified").write_text(json.dumps({"source": "generated for a test"}))


def snakemake(args: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def build_tiny(work: Path, env: dict, *targets: str, config: tuple[str, ...] = ()) -> None:
    """Build targets at tiny scale on two cores; a failure shows the end of Snakemake's output."""
    args = ["--cores", "2", "--quiet", "--config", "scale=tiny", *config] + (["--", *targets] if targets else [])
    result = snakemake(args, work, env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
