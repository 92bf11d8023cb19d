"""Safe writes into mteb's result cache: one task at a time, staged, committed atomically, under a lock.

mteb writes its result file, ``model_meta.json``, ``run_settings.jsonl`` and the predictions in place, so a
kill during a write leaves a 0-byte or half file that breaks every later run, and two runs on one folder
both do all the work. Here each task is evaluated into a private staging cache inside the output folder (same
filesystem), then its files are moved into place with ``os.replace``, the result file last: it is the mark
that the task is done. A per-task lock file (``fcntl.flock``) makes a second run wait and then reuse the
first run's result. A stored result that cannot be read is treated as missing: that task is recomputed,
with a warning. mteb has no hook for any of this, hence this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from linq_eval.core.files import file_lock, inside

logger = logging.getLogger(__name__)

STAGING = ".staging"
LOCKS = ".locks"


def task_lock(cache_path: Path, result_path: Path) -> contextlib.AbstractContextManager[None]:
    """The lock of one (model folder, task) result: a concurrent run on the same folder waits for it."""
    key = hashlib.sha256(str(result_path.relative_to(cache_path)).encode()).hexdigest()[:24]
    return file_lock(cache_path / LOCKS / f"{key}.lock")


def readable_result(path: Path) -> bool:
    """Whether a stored mteb result file exists and parses as a task result; a damaged one is removed (warned)."""
    if not path.is_file():
        return False
    from mteb.results import TaskResult

    try:
        TaskResult.from_disk(path)
        return True
    # empty, cut or non-UTF-8 files raise JSON/Unicode decode errors, both ValueErrors, as pydantic's do
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("stored result %s is unreadable (%s): recomputing that task", path, str(exc).splitlines()[0])
        path.unlink(missing_ok=True)
        return False


@contextlib.contextmanager
def staging_folder(cache_path: Path) -> Iterator[Path]:
    """A private folder inside the cache for one task's evaluation; removed afterwards, kill or not."""
    root = cache_path / STAGING
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    folder = root / f"{os.getpid()}-{os.urandom(4).hex()}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    """Staging folders of processes that are gone (killed runs) hold nothing worth keeping."""
    for entry in root.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit(staged: Path, cache_path: Path, relative: list[Path]) -> None:
    """Move staged files into the cache, in the order given (the result file last), each atomically.

    ``run_settings.jsonl`` is merged with the stored one (mteb keeps one line per task) rather than replaced.
    """
    for rel in relative:
        source = staged / rel
        if not source.is_file():
            continue
        target = inside(cache_path, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.name == "run_settings.jsonl":
            _merge_run_settings(source, target)
            continue
        with source.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)


def _merge_run_settings(source: Path, target: Path) -> None:
    from mteb.results.task_result import _read_run_settings_from_file, _write_and_merge_keyed_json

    merged = source.with_name(source.name + ".merged")
    if target.is_file():
        try:
            shutil.copyfile(target, merged)
            _read_run_settings_from_file(merged)
        except (ValueError, OSError) as exc:  # a damaged settings log: keep only this run's lines
            logger.warning("%s is unreadable (%s): rewriting it", target, exc)
            merged.unlink(missing_ok=True)
    entries: list[dict[str, Any]] = list(_read_run_settings_from_file(source))
    _write_and_merge_keyed_json(merged, entries)
    with merged.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(merged, target)
