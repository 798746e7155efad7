"""No import cycles inside taskbal (tools/import_cycles.py: pure ast, nothing is imported)."""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("import_cycles", REPO / "tools" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_taskbal_has_no_import_cycles():
    checker = _checker()
    graph = checker.import_graph(REPO / "src")
    assert "taskbal.figures" in graph and "taskbal.data.datasets" in graph
    assert checker.cycles(graph) == []


def test_checker_finds_function_level_and_relative_cycles(tmp_path):
    package = tmp_path / "taskbal"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .sub import b\n",  # a module: an import of taskbal.sub.b
        "sub/__init__.py": "from . import c\n",
        "sub/b.py": "def f():\n    from ..a import name\n",  # function level, relative, a name: taskbal.a
        "sub/c.py": "from . import helper_name\n",  # a name of the package: taskbal.sub -> self-cycle with __init__
        "d.py": "import taskbal.a\n",
    }
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))
    checker = _checker()
    graph = checker.import_graph(tmp_path)
    assert graph["taskbal.a"] == {"taskbal.sub.b"}
    assert graph["taskbal.sub.b"] == {"taskbal.a"}
    assert graph["taskbal.sub.c"] == {"taskbal.sub"}
    assert graph["taskbal.d"] == {"taskbal.a"}
    assert checker.cycles(graph) == [["taskbal.a", "taskbal.sub.b"], ["taskbal.sub", "taskbal.sub.c"]]
    assert checker.main([str(tmp_path)]) == 1
