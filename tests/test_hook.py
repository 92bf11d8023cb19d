"""The start-up hook: free at start-up, acts only once mteb is imported, never breaks a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_startup_imports_nothing_heavy() -> None:
    """The .pth runs at every interpreter start: it must not even import linq_eval."""
    res = _python("import sys; print(sorted(m for m in ('linq_eval', 'mteb', 'torch') if m in sys.modules))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    res = _python("import _linq_eval_hook; print(_linq_eval_hook.is_installed())")
    assert res.stdout.strip() == "True", "the .pth hook is not installed in this environment"
    res = _python("import sys; print('_linq_eval_hook' in sys.modules)")
    assert res.stdout.strip() == "False", "start-up imported the hook module before mteb was imported"


def test_startup_hook_imports_no_module() -> None:
    """The .pth line costs no import at all: the same modules as with the hook disabled (issue: it used to pull
    importlib.abc, pathlib and tempfile, 94 modules instead of 33, into every Python process)."""
    code = "import sys; print(' '.join(sorted(sys.modules)))"
    with_hook, without = _python(code), _python(code, LINQ_EVAL_NO_HOOK="1")
    assert with_hook.returncode == without.returncode == 0, with_hook.stderr + without.stderr
    assert set(with_hook.stdout.split()) == set(without.stdout.split())
    finders = "import sys; print(sum(bool(getattr(f, 'linq_eval_hook', False)) for f in sys.meta_path))"
    assert _python(finders).stdout.strip() == "1"  # installed once, and waiting for mteb
    assert _python(finders, LINQ_EVAL_NO_HOOK="1").stdout.strip() == "0"


def test_import_linq_eval_is_light() -> None:
    res = _python("import sys, linq_eval; print([m for m in ('torch', 'transformers', 'mteb') if m in sys.modules])")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("no_hook", ["", "1"])
def test_import_linq_eval_installs_nothing(no_hook: str) -> None:
    """No import finder and no excepthook for a process that only imports the package (mteb not loaded)."""
    code = ("import sys\n"
            "finders, excepthook = list(sys.meta_path), sys.excepthook\n"
            "import linq_eval\n"
            "print(sys.meta_path == finders, sys.excepthook is excepthook, '_linq_eval_hook' in sys.modules)\n")
    res = _python(code, LINQ_EVAL_NO_HOOK=no_hook)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True", "False"]


def test_without_the_hook_import_linq_eval_before_mteb_registers_only_when_asked() -> None:
    code = (
        "import linq_eval, mteb\n"
        "from mteb.models.model_implementations import MODEL_REGISTRY\n"
        "print('linq' in MODEL_REGISTRY)\n"
        "linq_eval.register()\n"
        "print(mteb.get_model_meta('linq').name, mteb.get_task('ADIRetrieval').metadata.name)\n"
    )
    res = _python(code, LINQ_EVAL_NO_HOOK="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "Linq-AI-Research/Linq-Embed-Mistral", "ADIRetrieval"]


def test_our_commands_register_without_the_hook() -> None:
    """linq-eval and linq-train (one dispatch) see our entries in mteb, also with LINQ_EVAL_NO_HOOK=1."""
    code = (
        "import argparse, sys\n"
        "from linq_eval.cli import dispatch\n"
        "def command(args):\n"
        "    import mteb\n"
        "    print(mteb.get_model_meta('linq').name, mteb.get_task('ADIRetrieval').metadata.name)\n"
        "    return 0\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--verbose', action='store_true')\n"
        "parser.set_defaults(func=command)\n"
        "sys.exit(dispatch(parser, []))\n"
    )
    res = _python(code, LINQ_EVAL_NO_HOOK="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["Linq-AI-Research/Linq-Embed-Mistral", "ADIRetrieval"]


def test_plain_import_mteb_registers_linq_without_torch() -> None:
    code = (
        "import sys, mteb\n"
        "meta = mteb.get_model_meta('linq')\n"
        "print(meta.name, mteb.get_model_meta('linq-4bit').experiment_name)\n"
        "print(mteb.get_task('ADIRetrieval').metadata.name)\n"
        "print([m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules])\n"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("Linq-AI-Research/Linq-Embed-Mistral bits_4")
    assert lines[1] == "ADIRetrieval"
    assert lines[2] == "[]"


def test_hook_can_be_disabled_and_import_linq_eval_after_mteb_still_registers() -> None:
    code = (
        "import mteb\n"
        "from mteb.models.model_implementations import MODEL_REGISTRY\n"
        "print('linq' in MODEL_REGISTRY)\n"
        "import linq_eval\n"
        "print(mteb.get_model_meta('linq').name)\n"
    )
    res = _python(code, LINQ_EVAL_NO_HOOK="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "Linq-AI-Research/Linq-Embed-Mistral"]


@pytest.mark.parametrize("failure", ["raise RuntimeError('boom')", "raise ImportError('no such thing')"])
def test_failing_registration_only_warns(failure: str) -> None:
    """A broken registration must never break a process that imports mteb."""
    code = (
        "import sys, types\n"
        "bad = types.ModuleType('linq_eval.registry')\n"
        f"def register():\n    {failure}\n"
        "bad.register = register\n"
        "sys.modules['linq_eval.registry'] = bad\n"
        "import mteb\n"
        "print(mteb.get_task('SciFact').metadata.name)\n"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "SciFact"
    assert "could not register" in res.stderr


def test_registration_is_idempotent() -> None:
    import mteb
    from mteb.models.model_implementations import MODEL_REGISTRY

    from linq_eval.registry import register

    before = len(MODEL_REGISTRY)
    n_tasks = len(mteb.get_tasks(tasks=["ADIRetrieval", "VaswaniRetrieval"]))
    register()
    register()
    assert len(MODEL_REGISTRY) == before
    assert len(mteb.get_tasks(tasks=["ADIRetrieval", "VaswaniRetrieval"])) == n_tasks == 2


def test_a_lookup_without_import_does_not_use_up_the_hook() -> None:
    """importlib.util.find_spec('mteb') (what `python -m mteb` does before importing it) leaves the hook waiting."""
    code = (
        "import importlib.util\n"
        "importlib.util.find_spec('mteb')\n"
        "import mteb\n"
        "from mteb.models.model_implementations import MODEL_REGISTRY\n"
        "print('linq' in MODEL_REGISTRY)\n"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True"]


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_mteb_s_own_cli_reports_our_bad_input_in_one_line(how: str, tmp_path: Path) -> None:
    """mteb's CLI catches nothing: our one-line error, not a traceback through mteb (LINQ_EVAL_TRACEBACK=1 keeps
    it). `python -m mteb` registers our models as the console script does."""
    command = [str(Path(sys.executable).parent / "mteb")] if how == "console script" else [sys.executable, "-m", "mteb"]
    command += ["run", "-m", "linq", "-t", "ADIRetrieval", "--output-folder", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LINQ_MODEL": str(tmp_path / "no-such-model")}
    res = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"mteb: error: model '{tmp_path / 'no-such-model'}' is neither an existing model directory nor a hub id "
        "(org/name): fix the path, or set LINQ_MODEL / --model"], res.stderr[-2000:]
    kept = subprocess.run(command, capture_output=True, text=True, env={**env, "LINQ_EVAL_TRACEBACK": "1"},
                          timeout=300, cwd=tmp_path)
    assert kept.returncode == 1 and "Traceback (most recent call last)" in kept.stderr
