"""Compiles the pure core (scorer/core/) with mypyc where the machine can; everything else is in pyproject.toml.

The `.py` files stay beside the compiled modules and are the fallback: when mypyc is missing, fails,
or the C compiler does, the install goes on with the pure-Python core and says so in one line (never
a failed install). `FATIGUE_COMPILE=0` skips compiling. Either way the build writes
`scorer/core/compiled.json` (what it did, and the SHA-256 of each source it compiled), which
`scorer/core/implementation.py` reads to tell which core runs and to refuse a stale compiled module.

mypyc is not asked for until `build_ext` runs (not for the metadata pip asks for first): mypycify
type-checks and generates C, ~20 s. The placeholder extension makes the wheel platform-specific.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CORE = Path("scorer") / "core"
GROUP = "scorer.core.compiled"
"""The mypyc group: one shared library `scorer/core/compiled__mypyc*.so` and a small module per source."""
NOT_COMPILED = frozenset({"__init__", "implementation", "timeline", "state_codec"})
"""Loader and package (implementation, __init__); timeline.py subclasses RuntimeError, which mypyc
cannot compile as a native class (it is thin glue around engine.py: nothing to gain); state_codec.py
declares a msgspec Struct with `array_like=True`, a class keyword a compiled module drops (the
stored array would be read as a map): its work is msgspec's C code anyway."""
MANIFEST = "compiled.json"
SKIP_ENV = "FATIGUE_COMPILE"


def core_sources() -> list[Path]:
    return sorted(p for p in CORE.glob("*.py") if p.stem not in NOT_COMPILED)


def say(line: str) -> None:
    """The one line the build prints about the core (pip shows it with -v; bootstrap repeats it)."""
    sys.stderr.write(f"contact-fatigue: {line}\n")


def brief(exc: BaseException, limit: int = 160) -> str:
    """The error in a few words (a failed compiler command is a screenful)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mypyc_extensions() -> tuple[list[Extension], str]:
    """(extensions, note): mypyc's extension modules for the core, or none and why."""
    if os.environ.get(SKIP_ENV, "1").strip() == "0":
        return [], f"not compiled ({SKIP_ENV}=0)"
    try:
        from mypy.version import __version__ as mypy_version
        from mypyc.build import mypycify
    except ImportError as exc:
        return [], f"not compiled: mypyc is not installed ({exc})"
    try:
        extensions = mypycify([str(p) for p in core_sources()], group_name=GROUP, opt_level="3")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypy exits on a type error: fall back, never fail
        return [], f"not compiled: mypyc failed ({brief(exc)})"
    return list(extensions), f"compiled with mypyc {mypy_version}"


class BuildCore(build_ext):
    """build_ext that compiles the core if it can and falls back to its source if it cannot."""

    note = ""

    def finalize_options(self) -> None:
        self.distribution.ext_modules, self.note = mypyc_extensions()
        super().finalize_options()

    def run(self) -> None:
        in_source = bool(self.inplace or self.editable_mode)
        package_dir = Path(self.get_finalized_command("build_py").get_package_dir("scorer.core"))
        # Neither the source folder (editable) nor the wheel's staging folder (build/lib, kept between
        # builds of the same tree) keeps a previous build's modules: what is there is this build's.
        self._remove_compiled(Path(self.build_lib) / CORE)
        if in_source:
            self._remove_compiled(package_dir)
        compiled = bool(self.extensions)
        if compiled:
            try:
                super().run()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - no compiler, no headers, a compile error
                self._discard_outputs()
                if in_source:
                    self._remove_compiled(package_dir)
                compiled, self.note = False, f"not compiled: the C build failed ({brief(exc)})"
        target = package_dir if in_source else Path(self.build_lib) / CORE
        self._write_manifest(target, compiled)
        say(f"core {self.note}" + ("" if compiled else "; the pure-Python core is installed"))

    def _discard_outputs(self) -> None:
        """A group is all or nothing: a module's shim without the shared library would not import."""
        for ext in self.extensions:
            Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)

    @staticmethod
    def _remove_compiled(package_dir: Path) -> None:
        for path in package_dir.glob("*.so"):
            path.unlink()
        for path in package_dir.glob("*.pyd"):
            path.unlink()

    def _write_manifest(self, target: Path, compiled: bool) -> None:
        sources = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in core_sources()} if compiled else {}
        target.mkdir(parents=True, exist_ok=True)
        record = {"compiled": compiled, "note": self.note, "sources": sources}
        (target / MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


# The placeholder marks the distribution as having extension modules, so build_ext always runs (also
# with FATIGUE_COMPILE=0: it then removes an editable install's earlier build and says so); BuildCore
# replaces it with mypyc's extensions, or none.
setup(ext_modules=[Extension(f"{GROUP}__mypyc", sources=[])], cmdclass={"build_ext": BuildCore})
