"""Files we write and content we pin: atomic writes, paths kept inside their folder, one content digest.

Every file linq-eval writes goes through :func:`atomic_write_text` (temp file in the same folder, fsync,
rename): a kill at any moment leaves either the old file or the new one, never a 0-byte or half-written one,
and a concurrent reader never sees half a JSON document. :func:`inside` refuses any path that would leave
its folder (a ``../`` name, an absolute path, a symlink out). :func:`folder_sha256` is the one content digest
of a directory (data folders, model weights, adapters); it imports neither torch nor mteb.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError

__all__ = ["atomic_write_bytes", "atomic_write_figure", "atomic_write_json", "atomic_write_text", "built_dir", "check_folder", "content_sha256", "file_lock",
           "folder_sha256", "inside", "parse_json", "read_json_file", "sha256_file"]


def inside(folder: str | Path, path: str | Path) -> Path:
    """``path`` (relative to ``folder``, or absolute) resolved, refused unless it lies inside ``folder``."""
    root = Path(folder).resolve()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise LinqEvalError(f"refusing to write {target}: it is outside {root} (a name or split with '..' or '/'?)")
    return target


def check_folder(path: str | Path, option: str) -> Path:
    """An output folder a command will create or write into, checked before anything loads: not a file, not inside
    a file, and its first existing ancestor writable (else the command would fail with a traceback after the
    model had loaded, or, for an evaluation, after the work). Returns the path, ``~`` expanded."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise LinqEvalError(f"{option} {path} is a file: give a folder (created if missing)")
    ancestor = folder.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LinqEvalError(f"{option} {path} lies inside the file {ancestor}: give a folder (created if missing)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LinqEvalError(f"{option} {path}: {ancestor} is not writable: give a folder you can write to")
    return folder


def check_file(path: str | Path, what: str, give: str) -> Path:
    """An input file a command reads: one line naming the problem when it is missing or is not a regular file (a
    folder, a device such as /dev/null), ``give`` saying what to give instead. Returns the path."""
    path = Path(path)
    if not path.exists():
        raise LinqEvalError(f"{what} {path} does not exist: give {give}")
    if not path.is_file():
        raise LinqEvalError(f"{what} {path} is not a file ({'a folder' if path.is_dir() else 'a device or pipe'}): "
                            f"give {give}")
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only be read by setting
    it, which for a moment would let another thread create files with no umask)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """The mode a written file gets: an existing file's own, else what ``open()`` would give (0o666 less the
    umask). mkstemp's temp file is 0o600, so without this every result and baseline would be private to its
    writer, unreadable by the team that shares the folder."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes, *, folder: str | Path | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename); ``folder`` confines the path. The file
    gets the mode ``open()`` would give it (an existing file keeps its own)."""
    target = inside(folder, path) if folder is not None else Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode(target))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | Path, text: str, *, folder: str | Path | None = None) -> Path:
    """UTF-8 text, written atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), folder=folder)


def atomic_write_json(path: str | Path, payload: Any, *, folder: str | Path | None = None,  # noqa: ANN401
                      indent: int = 1, default: Any = None) -> Path:  # noqa: ANN401
    """``payload`` as sorted, indented JSON with a final newline, written atomically."""
    text = json.dumps(payload, indent=indent, sort_keys=True, default=default, allow_nan=False) + "\n"
    return atomic_write_text(path, text, folder=folder)


def atomic_write_figure(path: str | Path, figure: Any, *, dpi: int = 110) -> Path:  # noqa: ANN401 -- a matplotlib Figure
    """A matplotlib figure as a PNG, rendered in memory and written atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def parse_json(text: str, origin: str, fix: str = "restore or delete it") -> Any:  # noqa: ANN401 -- any JSON
    """``json.loads`` whose failures (bad syntax, nesting deep enough to overflow) are one line naming ``origin``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LinqEvalError(f"{origin}: not valid JSON ({exc.msg}, line {exc.lineno}): {fix}") from None
    except RecursionError:
        raise LinqEvalError(f"{origin}: JSON nested too deeply: {fix}") from None


def read_json_file(path: str | Path) -> Any:  # noqa: ANN401
    """A JSON file's content; an unreadable one (empty, cut, not UTF-8, not JSON) is a one-line LinqEvalError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LinqEvalError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise LinqEvalError(f"{path}: not UTF-8 (byte {exc.start}): restore or delete it") from None
    return parse_json(text, str(path))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: str | Path, suffixes: Iterable[str], skip_prefixes: tuple[str, ...] = ()) -> str:
    """One sha256 over the files of ``folder`` with these suffixes: relative paths and contents, sorted.

    Paths and times outside the folder do not enter it, so a copy digests the same, and a file rewritten in
    place does not. Names starting with ``skip_prefixes`` (e.g. optimizer state) and ``.git`` are left out.
    """
    root = Path(folder)
    wanted = set(suffixes)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in wanted
                   and not p.name.startswith(skip_prefixes) and ".git" not in p.relative_to(root).parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


# trainer state beside the weights (optimizer, scheduler, RNG) does not change a single embedding
MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".pt")
_SKIP = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", "scaler")


def content_sha256(folder: str | Path) -> str:
    """The digest of a model or adapter directory: its weights and configs (relative paths and contents).

    Results, baselines and caches are keyed by it, so a checkpoint rewritten in place is a new checkpoint.
    """
    root = Path(folder)
    if not any(p.is_file() and p.suffix in MODEL_SUFFIXES for p in root.rglob("*")):
        raise LinqEvalError(f"{root}: no weights or configs in it: point at a model or adapter directory")
    return folder_sha256(root, MODEL_SUFFIXES, _SKIP)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed); other holders wait here."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def built_dir(target: str | Path, required: tuple[str, ...], build: Callable[[Path], None]) -> Path:
    """``target``, built once by ``build(partial)`` into an empty folder beside it and renamed into place; it is
    complete when every file named in ``required`` is in it.

    Several processes may ask at once (the ranks of one launch on a fresh machine, parallel test workers): a
    lock beside the target makes one build while the others wait and then find it complete. The rename is
    atomic, so an interrupted build never leaves a half folder at ``target``; its partial is cleared next time.
    """
    import shutil

    target = Path(target)

    def complete() -> bool:
        return all((target / name).is_file() for name in required)

    if complete():
        return target
    with file_lock(target.with_name(f".{target.name}.lock")):
        if complete():  # built by another process while this one waited
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        build(partial)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete folder from older versions
        partial.replace(target)
    return target
