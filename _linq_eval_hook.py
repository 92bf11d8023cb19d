"""One-shot import hook that registers linq-eval's models and tasks in mteb once mteb is imported.

A ``.pth`` file installed beside the package runs :func:`install` at interpreter start-up, so mteb's own
``mteb run -m linq`` sees our entries. It is a top-level module, not part of ``linq_eval``, so that start-up
does not even import our package. Start-up must stay free: this module imports neither torch nor mteb,
and nothing here may ever raise into the host process (a failure becomes a warning).
Set ``LINQ_EVAL_NO_HOOK=1`` to disable the start-up hook; ``import linq_eval``, ``linq-mteb`` and
``linq_eval.register()`` still register then.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import warnings
from types import ModuleType

_TARGET = "mteb"
_DISABLE_ENV = "LINQ_EVAL_NO_HOOK"


_state = {"registered": False, "running": False}


def _register_quietly() -> None:
    if _state["registered"] or _state["running"]:  # once per process; re-entry while registering is a no-op
        return
    _state["running"] = True
    try:
        from linq_eval.register import register

        register()
        _state["registered"] = True
    except Exception as exc:  # noqa: BLE001 -- the hook must never break the host process
        warnings.warn(f"linq-eval: could not register its models in mteb: {exc!r}", stacklevel=2)
    finally:
        _state["running"] = False


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps mteb's own loader: runs it, then registers our entries once."""

    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self._wrapped = wrapped

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)  # mteb's own errors propagate unchanged
        # Restore mteb's loader so the spec looks untouched to anyone inspecting it later.
        module.__spec__.loader = self._wrapped
        module.__loader__ = self._wrapped
        _register_quietly()


class _MtebFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the other finders for mteb's spec and wraps its loader."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001,ANN201 -- importlib contract
        if fullname != _TARGET:
            return None
        _uninstall_finder()  # one-shot; also prevents recursion below
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                for finder in sys.meta_path:
                    find = getattr(finder, "find_spec", None)
                    spec = find(fullname, path, target) if find else None
                    if spec is not None:
                        break
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader)
            return spec
        except Exception as exc:  # noqa: BLE001 -- fall back to the normal import machinery
            warnings.warn(f"linq-eval: mteb import hook failed: {exc!r}", stacklevel=2)
            return None


def _uninstall_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _MtebFinder)]


def is_installed() -> bool:
    """Whether the finder is waiting for mteb to be imported."""
    return any(isinstance(f, _MtebFinder) for f in sys.meta_path)


def install(respect_env: bool = True) -> None:
    """Register now if mteb is already imported; otherwise wait for its import. Never raises.

    Args:
        respect_env: honour ``LINQ_EVAL_NO_HOOK`` (the ``.pth`` does; ``import linq_eval`` does not).
    """
    try:
        if respect_env and os.environ.get(_DISABLE_ENV, "").strip().lower() in {"1", "true", "yes"}:
            return
        if _TARGET in sys.modules:
            _register_quietly()
        elif not is_installed():
            sys.meta_path.insert(0, _MtebFinder())
    except Exception as exc:  # noqa: BLE001 -- never break interpreter start-up
        warnings.warn(f"linq-eval: hook not installed: {exc!r}", stacklevel=2)
