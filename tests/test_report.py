"""The reproduction report's list of every table and figure (config/papers.yaml). The page a reader sees
is checked in headless Chromium on the report of the tiny whole-DAG run (test_workflow, report_checks)."""
from __future__ import annotations

import pytest

from taskbal.report import load_papers


def table_names(repo):
    return sorted(path.stem for path in (repo / "config/tables").glob("*.yaml"))


def test_papers_list_every_table_config_once(repo):
    papers = load_papers(repo / "config/papers.yaml", table_names(repo))
    assert [paper["key"] for paper in papers] == ["simol", "nash", "thesis", "damaml", "tow"]
    configs = [e["config"] for paper in papers for e in paper["experiments"] if "config" in e]
    assert sorted(configs) == table_names(repo)


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(config="simol_table1"), "listed twice: ['simol_table1']"),
    (lambda e: e.update(not_yet="later", no_run="a diagram"), "exactly one of config, not_yet, no_run"),
    (lambda e: e.update(config="simol_tabel1"), "'simol_tabel1' is not a file in config/tables/"),
])
def test_papers_errors_name_the_file_and_the_experiment(repo, tmp_path, change, message):
    import yaml

    papers = yaml.safe_load((repo / "config/papers.yaml").read_text())
    pending = next(e for paper in papers["papers"] for e in paper["experiments"] if "no_run" in e)  # not a target
    pending.pop("no_run")
    change(pending)
    path = tmp_path / "papers.yaml"
    path.write_text(yaml.safe_dump(papers))
    with pytest.raises(ValueError) as error:
        load_papers(path, table_names(repo))
    assert message in str(error.value) and str(path) in str(error.value)


def test_a_record_with_an_infinite_value_is_valid_json_with_null():
    import json
    import math

    from taskbal.report import _plain

    record = _plain({"cells": [{"ours_mean": math.inf, "seed_ci": -math.inf, "paper_mean": 0.5}], "n": float("nan")})
    assert json.loads(json.dumps(record, allow_nan=False)) == {
        "cells": [{"ours_mean": None, "seed_ci": None, "paper_mean": 0.5}], "n": None}
