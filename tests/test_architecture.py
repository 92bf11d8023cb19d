"""The layers of the packages (pyproject's import-linter contracts), L0's freedom from torch and mteb, no circles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_import_contracts_are_kept() -> None:
    """import-linter over pyproject.toml: layers, light/compare/gate independence, linq_train -> linq_eval only."""
    pytest.importorskip("importlinter")
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def _modules(package: str) -> list[str]:
    folder = REPO / Path(*package.split("."))
    return [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]


def test_core_imports_neither_torch_nor_mteb() -> None:
    """Every L0 module, imported in a fresh process, leaves torch, mteb and transformers unloaded."""
    core = _modules("linq_eval.core")
    assert "linq_eval.core.stats" in core and "linq_eval.core.settings" in core
    code = ("import importlib, sys\n"
            f"for name in {core!r}:\n"
            "    importlib.import_module(name)\n"
            "    heavy = [m for m in ('torch', 'mteb', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
            "    assert not heavy, (name, heavy)\n")
    env = {**_env(), "LINQ_EVAL_NO_HOOK": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_no_import_circle_between_modules() -> None:
    """No strongly connected component in the module graph, counting imports inside functions (grimp sees them)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("linq_eval", "linq_train", include_external_packages=False, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert circles == []
