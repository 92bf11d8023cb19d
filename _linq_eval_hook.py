"""One-shot import hook that registers linq-eval's models and tasks in mteb once mteb is imported.

The ``.pth`` file installed beside the package puts a tiny finder of its own on ``sys.meta_path`` at
interpreter start-up; only when something imports mteb does that finder import this module and call
:func:`find_spec`, so mteb's own ``mteb run -m linq`` sees our entries while every other Python process
imports nothing of ours (start-up touches only ``sys`` and ``os``, both loaded before any ``.pth`` runs).
It is a top-level module, not part of ``linq_eval``, so that even then our package loads only with mteb. No ``importlib.abc`` base classes: that module alone pulls in
``importlib.resources``, ``pathlib`` and ``tempfile`` (about 60 modules and 20+ ms per interpreter); the
import system only needs ``find_spec`` / ``create_module`` / ``exec_module``. Nothing here may ever raise into
the host process (a failure becomes a warning).
Set ``LINQ_EVAL_NO_HOOK=1`` to disable the start-up hook; our own commands (``linq-eval``, ``linq-train``,
``linq-mteb``), ``linq_eval.register()`` and ``import linq_eval`` after mteb still register then. Importing
``linq_eval`` installs nothing.
"""

import os
import sys

_TARGET = "mteb"
_DISABLE_ENV = "LINQ_EVAL_NO_HOOK"

_state = {"registered": False, "running": False}


def _warn(message: str) -> None:
    import warnings  # only on the failure path

    warnings.warn(message, stacklevel=3)


def register_quietly() -> None:
    """Register our entries in mteb (already imported) now: once per process; a failure only warns."""
    if _state["registered"] or _state["running"]:  # once per process; re-entry while registering is a no-op
        return
    _state["running"] = True
    try:
        from linq_eval.registry import register

        register()
        _state["registered"] = True
        if _is_mteb_cli():
            _one_line_errors()
    except Exception as exc:  # noqa: BLE001 -- the hook must never break the host process
        _warn(f"linq-eval: could not register its models in mteb: {exc!r}")
    finally:
        _state["running"] = False


def _is_mteb_cli() -> bool:
    """Whether this process is mteb's own command line (``mteb ...`` or ``python -m mteb ...``)."""
    script = (sys.argv[0] if sys.argv else "").replace("\\", "/")
    if os.path.basename(script) == "mteb" or script.endswith("mteb/__main__.py"):
        return True
    given = getattr(sys, "orig_argv", [])  # `python -m mteb`: argv[0] is still "-m" while mteb is imported
    return any(a == "-m" and b in {"mteb", "mteb.__main__"} for a, b in zip(given, given[1:], strict=False))


def _one_line_errors() -> None:
    """mteb's CLI does not catch exceptions: our bad-input error (a LinqEvalError: a bad LINQ_MODEL, a missing
    collection) would end in a traceback through mteb's frames. Print it as our commands do, one line naming the
    problem and the fix (``LINQ_EVAL_TRACEBACK=1`` keeps the traceback). Any other exception is left to the hook
    that was there."""
    previous = sys.excepthook

    def hook(kind, error, trace):  # noqa: ANN001,ANN202 -- sys.excepthook's contract
        from linq_eval.core.errors import LinqEvalError

        if isinstance(error, LinqEvalError) and not os.environ.get("LINQ_EVAL_TRACEBACK"):
            sys.stderr.write(f"mteb: error: {error}\n")
            return
        previous(kind, error, trace)

    sys.excepthook = hook


class _RegisteringLoader:
    """Wraps mteb's own loader: runs it, then registers our entries once (importlib's Loader protocol)."""

    def __init__(self, wrapped):  # noqa: ANN001,ANN204 -- importlib contract
        self._wrapped = wrapped

    def create_module(self, spec):  # noqa: ANN001,ANN201 -- importlib contract
        return self._wrapped.create_module(spec)

    def exec_module(self, module):  # noqa: ANN001,ANN201 -- importlib contract
        _uninstall_finder()  # one-shot: mteb is being imported now
        self._wrapped.exec_module(module)  # mteb's own errors propagate unchanged
        # Restore mteb's loader so the spec looks untouched to anyone inspecting it later.
        module.__spec__.loader = self._wrapped
        module.__loader__ = self._wrapped
        register_quietly()


def find_spec(fullname, path=None, target=None):  # noqa: ANN001,ANN201 -- importlib's MetaPathFinder contract
    """mteb's spec, its loader wrapped to register once mteb has run; None for any other module."""
    if fullname != _TARGET:
        return None
    # stay installed until mteb really loads (exec_module): a lookup without import (importlib.util.find_spec,
    # as `python -m mteb` does before importing) must not use up the hook
    try:
        spec = None
        for finder in [f for f in sys.meta_path if not getattr(f, "linq_eval_hook", False)]:  # not ourselves
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec
    except Exception as exc:  # noqa: BLE001 -- fall back to the normal import machinery
        _warn(f"linq-eval: mteb import hook failed: {exc!r}")
        return None


class _MtebFinder:
    """The finder our commands install (the ``.pth`` line defines its own twin, so that start-up does not
    import this module): it finds nothing itself and hands mteb's import to :func:`find_spec`."""

    linq_eval_hook = True  # the mark both finders carry

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001,ANN201 -- importlib contract
        return find_spec(fullname, path, target)


def _uninstall_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "linq_eval_hook", False)]


def is_installed() -> bool:
    """Whether the finder is waiting for mteb to be imported."""
    return any(getattr(f, "linq_eval_hook", False) for f in sys.meta_path)


def install(respect_env: bool = True) -> None:
    """Register now if mteb is already imported; otherwise wait for its import. Never raises.

    Args:
        respect_env: honour ``LINQ_EVAL_NO_HOOK`` (our commands do not: they always see their entries).
    """
    try:
        if respect_env and os.environ.get(_DISABLE_ENV, "").strip().lower() in {"1", "true", "yes"}:
            return
        if _TARGET in sys.modules:
            register_quietly()
        elif not is_installed():
            sys.meta_path.insert(0, _MtebFinder())
    except Exception as exc:  # noqa: BLE001 -- never break interpreter start-up
        _warn(f"linq-eval: hook not installed: {exc!r}")
