"""Which implementation of the core runs: the modules compiled with mypyc, or their Python source.

The ordinary install compiles the core's modules with mypyc (setup.py) and keeps the `.py` files
beside them as the fallback; Python imports an extension module before a source file of the same
name. This module, run by `scorer/core/__init__.py` before any core module is imported, decides:

- `FATIGUE_PURE_CORE=1` in the environment: the source, always (the suite's pure-Python run, a
  suspected compiled module);
- a compiled module whose source changed since it was built (an editable install after an edit;
  `compiled.json`, written by the build, holds each source's SHA-256): the source of every core
  module, with one warning naming the rebuild step (`make build-core`) — a stale compiled module
  never shadows an edit;
- otherwise whatever Python imports: the compiled modules where the build made them.

    python -c 'from scorer.core.implementation import describe; print(describe())'

Not compiled itself (it decides what the others load from). No clock, no I/O beyond reading the
package's own files once at import.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = "scorer.core"
PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = "compiled.json"
"""Written by the build next to the modules: {"compiled": bool, "note": str, "sources": {name: sha256}}."""
PURE_ENV = "FATIGUE_PURE_CORE"
NOT_COMPILED = frozenset({"__init__", "implementation"})
"""Modules of the package the build never compiles (setup.py reads the same set)."""

log = logging.getLogger(__name__)


class SourceFinder:
    """Finds `scorer.core.<name>` in `<name>.py` of the package folder, never in an extension module."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, leaf = name.rpartition(".")
        source = PACKAGE_DIR / f"{leaf}.py"
        if package != PACKAGE or not source.is_file():
            return None
        return importlib.util.spec_from_file_location(name, source)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(package_dir: Path = PACKAGE_DIR) -> dict[str, object] | None:
    try:
        data = json.loads((package_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def compiled_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Module name -> its extension module in the package folder (what Python would import first)."""
    found: dict[str, Path] = {}
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in package_dir.glob(f"*{suffix}"):
            found.setdefault(path.name[: -len(suffix)], path)
    return found


def stale_modules(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Compiled modules whose `.py` differs from the source they were built from (or with no record of it)."""
    manifest = read_manifest(package_dir) or {}
    sources = manifest.get("sources")
    built = sources if isinstance(sources, dict) else {}
    stale = []
    for name in sorted(compiled_files(package_dir)):
        source = package_dir / f"{name}.py"
        if source.is_file() and built.get(name) != sha256_of(source):
            stale.append(name)
    return stale


def prefer_source() -> None:
    """From now on the core's modules load from their `.py` files (call before importing any)."""
    if not any(finder is SourceFinder for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFinder)


def choose() -> str:
    """Decide once, at `import scorer.core`: 'source' (forced or stale) or 'installed'."""
    if os.environ.get(PURE_ENV) == "1":
        prefer_source()
        return "source"
    stale = stale_modules()
    if stale:
        prefer_source()
        log.warning("scorer.core: the compiled %s not match the source (%s changed since the build): running "
                    "the pure-Python core; rebuild with `make build-core`",
                    "module does" if len(stale) == 1 else "modules do", ", ".join(f"{n}.py" for n in stale))
        return "source"
    return "installed"


def is_compiled(module: ModuleType) -> bool:
    """True when `module` was loaded from an extension module (compiled), False from source."""
    origin = getattr(module.__spec__, "origin", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def describe() -> str:
    """One line: which implementation of the core this process runs, and why."""
    from scorer.core import engine  # the core's entry point: what it was loaded from

    manifest = read_manifest() or {}
    note = str(manifest.get("note") or "no build record: not built by setup.py")
    if is_compiled(engine):
        return f"compiled core (mypyc): {note}"
    if os.environ.get(PURE_ENV) == "1":
        return f"pure-Python core ({PURE_ENV}=1)"
    stale = stale_modules()
    if stale:
        return f"pure-Python core: the compiled modules are stale ({', '.join(stale)}): run `make build-core`"
    return f"pure-Python core: {note}"
