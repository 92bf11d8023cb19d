"""Move linq-eval's flat modules into layered subpackages and rewrite every reference to them (issue 20).

Usage::

    python tools/restructure.py /path/to/checkout            # transform the checkout in place
    python tools/restructure.py /path/to/checkout --dry-run  # only print what it would do

Re-runnable on any newer checkout of the flat layout: it ``git mv``-s each module of :data:`MODULES` that it
finds (and prints those it does not), then rewrites, in every tracked text file, each dotted name
(``linq_eval.compare_run``: imports, lazy-import tables, ``-m`` calls, monkeypatch targets, entry points) and
each file path (``linq_eval/compare_run.py``: docs, comments) by the same table, in one pass per file, so a
name is never rewritten twice. It refuses to run on a checkout that is already restructured.

The layers (one direction, enforced by the import-linter contracts in ``pyproject.toml``):

- L0 ``linq_eval.core``: specifications and statistics, no torch and no mteb at import;
- L1 ``linq_eval.tasks`` (mteb task declarations) and ``linq_eval.models`` (loader, encoder, mteb entries);
- ``linq_eval.registry``: the only writer into mteb's registries;
- L2 ``linq_eval.evaluation``: the runner, result store, pre-load checks and retrieval systems;
- L3 ``linq_eval.light``, ``linq_eval.compare``, ``linq_eval.gate``: independent of one another;
- L4 ``linq_eval.cli``;
- ``linq_train.refine`` and ``linq_train.fit`` over ``linq_train.schema``/``store``; linq_train imports linq_eval.

Only the standard library is used; ``ruff`` (when installed) re-sorts the rewritten imports.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

# old module -> new module. Modules that exist only on some branches are listed too (files, result_store).
MODULES: dict[str, str] = {
    # L0: specifications and statistics (no torch, no mteb)
    "linq_eval.errors": "linq_eval.core.errors",
    "linq_eval.files": "linq_eval.core.files",
    "linq_eval.console": "linq_eval.core.console",
    "linq_eval.precision": "linq_eval.core.precision",
    "linq_eval.instructions": "linq_eval.core.instructions",
    "linq_eval.local_data": "linq_eval.core.local_data",
    "linq_eval.light_manifest": "linq_eval.core.light_manifest",
    "linq_eval.baseline": "linq_eval.core.baseline",
    "linq_eval.per_query": "linq_eval.core.per_query",
    "linq_eval.stats": "linq_eval.core.stats",
    "linq_eval.gate_rule": "linq_eval.core.gate_rule",
    # L1: mteb task declarations
    "linq_eval.local_mteb": "linq_eval.tasks.local_source",
    "linq_eval.collection_tasks": "linq_eval.tasks.ir_collections",
    "linq_eval.light_tasks": "linq_eval.tasks.light",
    "linq_eval.light_metadata": "linq_eval.tasks.light_metadata",
    # L1: models
    "linq_eval.model": "linq_eval.models.build",
    "linq_eval.offline_models": "linq_eval.models.references",
    "linq_eval.encoder": "linq_eval.models.encoder",
    "linq_eval.loader": "linq_eval.models.mteb_loader",
    "linq_eval.meta": "linq_eval.models.entries",
    # the one writer into mteb's registries
    "linq_eval.register": "linq_eval.registry",
    # L2: evaluation
    "linq_eval.runner": "linq_eval.evaluation.runner",
    "linq_eval.result_store": "linq_eval.evaluation.result_store",
    "linq_eval.light_systems": "linq_eval.evaluation.systems",
    "linq_eval.checkpoint": "linq_eval.evaluation.checkpoint",
    # L3: commands' logic, independent of one another
    "linq_eval.light_build": "linq_eval.light.build",
    "linq_eval.light_validate": "linq_eval.light.validate",
    "linq_eval.light_report": "linq_eval.light.report",
    "linq_eval.compare": "linq_eval.compare.driver",
    "linq_eval.compare_run": "linq_eval.compare.job",
    "linq_eval.compare_analysis": "linq_eval.compare.analysis",
    "linq_eval.compare_report": "linq_eval.compare.report",
    "linq_eval.gate": "linq_eval.gate.driver",
    "linq_eval.gate_report": "linq_eval.gate.report",
    # L4: linq_eval.cli stays where it is.
    # linq_train: refine/ and fit/ over the shared schema and stage store (which stay)
    "linq_train.config": "linq_train.refine.config",
    "linq_train.craft": "linq_train.refine.craft",
    "linq_train.filter": "linq_train.refine.filter",
    "linq_train.leakage": "linq_train.refine.leakage",
    "linq_train.negatives": "linq_train.refine.negatives",
    "linq_train.output": "linq_train.refine.output",
    "linq_train.prompts": "linq_train.refine.prompts",
    "linq_train.synthetic": "linq_train.refine.synthetic",
    "linq_train.teacher": "linq_train.refine.teacher",
    "linq_train.report": "linq_train.refine.report",
    "linq_train.refine": "linq_train.refine.pipeline",
    "linq_train.fit": "linq_train.fit.train",
    "linq_train.fit_config": "linq_train.fit.config",
    "linq_train.fit_data": "linq_train.fit.data",
    "linq_train.fit_model": "linq_train.fit.model",
    "linq_train.fit_callbacks": "linq_train.fit.callbacks",
    "linq_train.losses": "linq_train.fit.losses",
    "linq_train.sampler": "linq_train.fit.sampler",
}

# Modules that stay where they are (so that an unmapped module is reported, not silently left flat).
STAYS = {"linq_eval", "linq_eval.cli", "linq_train", "linq_train.cli", "linq_train.schema", "linq_train.store"}

# New packages and the docstring of their __init__ (the layer each one is).
PACKAGES: dict[str, str] = {
    "linq_eval.core": "L0: specifications and statistics. Imports neither torch nor mteb (tests check it): paths and\n"
                      "environment variables, digests and atomic writes, instructions, precisions, local data readers,\n"
                      "light manifests and baselines as schemas, per-query score files, statistics and the gate rule.",
    "linq_eval.tasks": "L1: mteb task declarations: mteb's tasks on local copies, the classic IR collections, light\n"
                       "sets. Tasks import ``core`` only: never models, the runner or the registration code.",
    "linq_eval.models": "L1: models: the one loader ``build_model``, model references (``pypi:``), the mteb encoder\n"
                        "and the ``linq`` entries for mteb's model registry (declared, not written: see registry).",
    "linq_eval.evaluation": "L2: evaluation: one route from a model reference to results (the runner), the result\n"
                            "store, the pre-load checks shared by compare and gate, and retrieval systems for pooling.",
    "linq_eval.light": "L3: light sets: build a manifest, validate it against the full task, report.",
    "linq_eval.compare": "L3: ``linq-eval compare``: precisions (and checkpoints) against a reference, per task.",
    "linq_eval.gate": "L3: ``linq-eval baseline save`` and ``linq-eval gate``: non-inferiority against a baseline.",
    "linq_train.refine": "``linq-train refine``: craft -> leakage guard -> teacher -> filter -> mine -> synthetic.",
    "linq_train.fit": "``linq-train fit``: LoRA contrastive training in stages on sentence-transformers' trainer.",
}

TEXT_SUFFIXES = {".py", ".pyi", ".toml", ".ini", ".cfg", ".md", ".rst", ".txt", ".yml", ".yaml", ".pth", ".sh"}
TEXT_NAMES = {"Makefile", "Dockerfile"}


def _path(module: str) -> Path:
    return Path(*module.split(".")).with_suffix(".py")


def _git(root: Path, *args: str, dry: bool = False) -> str:
    if dry:
        print("  git", *args)
        return ""
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


def _dotted_pattern() -> re.Pattern[str]:
    names = sorted(MODULES, key=len, reverse=True)  # longest first: compare_run before compare
    return re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in names) + r")(?![\w])")


def _path_pattern() -> re.Pattern[str]:
    names = sorted(MODULES, key=len, reverse=True)
    return re.compile(r"(?<![\w./])(" + "|".join(re.escape(n.replace(".", "/")) for n in names) + r")\.py\b")


_FROM_PACKAGE = re.compile(r"^(?P<indent>[ \t]*)from (?P<pkg>linq_eval|linq_train) import (?P<names>[^()\n#]+?)"
                           r"(?P<comment>[ \t]*#.*)?$", re.M)


def _rewrite_from_package(text: str) -> str:
    """``from linq_eval import stats`` (a module) -> ``from linq_eval.core import stats``."""
    def repl(m: re.Match[str]) -> str:
        items = [n.strip() for n in m.group("names").split(",") if n.strip()]
        kept, lines = [], []
        for item in items:
            name, _, alias = item.partition(" as ")
            old = f"{m.group('pkg')}.{name.strip()}"
            if old not in MODULES:
                kept.append(item)
                continue
            parent, leaf = MODULES[old].rsplit(".", 1)
            bound = alias.strip() or name.strip()
            lines.append(f"{m.group('indent')}from {parent} import {leaf}" + (f" as {bound}" if bound != leaf else ""))
        if not lines:
            return m.group(0)
        if kept:
            lines.insert(0, f"{m.group('indent')}from {m.group('pkg')} import {', '.join(kept)}")
        return "\n".join(lines) + (m.group("comment") or "")
    return _FROM_PACKAGE.sub(repl, text)


_FILE_DEPTH = re.compile(r"Path\(__file__\)(?P<res>\.resolve\(\))?\.(?:parent(?![s\w])|parents\[(?P<n>\d+)\])")


def _deepen_file_paths(text: str, levels: int) -> str:
    """A module moved ``levels`` folders deeper: ``Path(__file__).parent`` -> ``.parents[levels]`` and so on."""
    def repl(m: re.Match[str]) -> str:
        n = int(m.group("n")) if m.group("n") is not None else 0
        return f"Path(__file__){m.group('res') or ''}.parents[{n + levels}]"
    return _FILE_DEPTH.sub(repl, text)


def rewrite(text: str) -> str:
    """Every reference to an old module in ``text``, rewritten by :data:`MODULES` (one pass per pattern)."""
    text = _rewrite_from_package(text)
    text = _dotted_pattern().sub(lambda m: MODULES[m.group(1)], text)
    return _path_pattern().sub(lambda m: MODULES[m.group(1).replace("/", ".")].replace(".", "/") + ".py", text)


def _tracked_text_files(root: Path) -> list[Path]:
    out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    files = [root / p for p in out.split("\0") if p]
    return [f for f in files if f.is_file() and not f.is_symlink()
            and (f.suffix in TEXT_SUFFIXES or f.name in TEXT_NAMES) and not f.match("tools/restructure.py")]


def _flat_modules(root: Path) -> list[str]:
    found = []
    for pkg in ("linq_eval", "linq_train"):
        found += [f"{pkg}.{p.stem}" if p.stem != "__init__" else pkg for p in sorted((root / pkg).glob("*.py"))]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--no-ruff", action="store_true", help="do not re-sort imports with ruff")
    args = parser.parse_args(argv)
    root: Path = args.checkout.resolve()
    if not (root / "linq_eval" / "__init__.py").is_file():
        print(f"{root}: not a linq-eval checkout (no linq_eval/__init__.py)", file=sys.stderr)
        return 2
    done = [p for p in PACKAGES if (root / Path(*p.split(".")) / "__init__.py").is_file()]
    if done:
        print(f"{root}: already restructured ({', '.join(done)} exist): nothing to do", file=sys.stderr)
        return 1

    present = {old: new for old, new in MODULES.items() if (root / _path(old)).is_file()}
    missing = sorted(set(MODULES) - set(present))
    unmapped = [m for m in _flat_modules(root) if m not in MODULES and m not in STAYS]
    for old in missing:
        print(f"not found (skipped): {old}")
    for mod in unmapped:
        print(f"WARNING: no mapping for {mod}: left where it is; add it to MODULES and rerun on a fresh checkout")

    # 1. new packages, then the moves (git keeps each file's history)
    for package, doc in PACKAGES.items():
        init = root / Path(*package.split(".")) / "__init__.py"
        print(f"create {init.relative_to(root)}")
        if not args.dry_run:
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(f'"""{doc}"""\n\n__all__: list[str] = []\n', encoding="utf-8")
            _git(root, "add", str(init.relative_to(root)))
    moved: list[Path] = []
    tracked = set(_git(root, "ls-files", "-z").split("\0"))
    for old, new in present.items():
        src, dst = _path(old), _path(new)
        if src.as_posix() in tracked:
            print(f"git mv {src} {dst}")
            _git(root, "mv", str(src), str(dst), dry=args.dry_run)
        else:  # a new module not yet added to git: move it, and leave it untracked as it was
            print(f"mv {src} {dst} (untracked)")
            if not args.dry_run:
                (root / src).rename(root / dst)
        if not args.dry_run:
            moved.append(root / dst)
            levels = len(dst.parts) - len(src.parts)
            if levels:
                text = dst_text = (root / dst).read_text(encoding="utf-8")
                dst_text = _deepen_file_paths(text, levels)
                if dst_text != text:
                    print(f"  {dst}: Path(__file__) references deepened by {levels}")
                    (root / dst).write_text(dst_text, encoding="utf-8")

    # 2. every reference, by the same table
    changed = []
    for path in _tracked_text_files(root) if not args.dry_run else []:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new_text = rewrite(text)
        if new_text != text:
            path.write_text(new_text, encoding="utf-8")
            changed.append(path)
    print(f"rewrote references in {len(changed)} files")

    # 3. import order after renames (ruff's isort rules, as `ruff check` enforces them)
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    py = [str(p) for p in {*changed, *moved} if p.suffix == ".py" and p.is_file()]
    if py and not args.no_ruff and Path(ruff).is_file():
        subprocess.run([ruff, "check", "--quiet", "--fix", "--select", "I", *py], cwd=root, check=False)
        print(f"re-sorted imports with ruff in {len(py)} files")
    if missing or unmapped:
        print(f"done, with {len(missing)} modules not found and {len(unmapped)} unmapped (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
