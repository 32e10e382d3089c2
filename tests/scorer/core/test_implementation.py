"""The core runs both ways in one `pytest`: compiled (mypyc, as the install builds it) in this process,
and from its Python source in a child pytest over the core's tests (`FATIGUE_PURE_CORE=1`). Each run
proves which implementation it used, so the "both ways" claim cannot silently become one way."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scorer.core import implementation
from scorer.core.implementation import MANIFEST, PURE_ENV, is_compiled, read_manifest, sha256_of, stale_modules

ROOT = Path(__file__).resolve().parents[3]
CORE_DIR = ROOT / "scorer" / "core"
PURE_RUN = os.environ.get(PURE_ENV) == "1"
CORE_TESTS = [
    "tests/scorer/core",
    "tests/scorer/test_backtest_timers.py",
    "tests/scorer/test_dryrun.py",
    "tests/services/policy/test_decision.py",
    "tests/services/test_stored_values.py",
]
"""Every unit test that exercises the core (the pure-Python run repeats them)."""
SO = re.compile(r"\.(cpython-[^.]+\.)?(so|pyd)$")


def not_compiled() -> frozenset[str]:
    """setup.py's NOT_COMPILED: the one list of core modules the build leaves as source."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name) and target.id == "NOT_COMPILED":
                assert isinstance(node.value, ast.Call)
                return frozenset(ast.literal_eval(node.value.args[0]))
    raise AssertionError("setup.py has no NOT_COMPILED")


def compilable() -> list[str]:
    return sorted(p.stem for p in CORE_DIR.glob("*.py") if p.stem not in not_compiled())


def loaded(name: str) -> bool:
    """Import scorer.core.<name>: True if it came from an extension module."""
    return is_compiled(importlib.import_module(f"scorer.core.{name}"))


@pytest.mark.skipif(not PURE_RUN, reason=f"the pure-Python run ({PURE_ENV}=1) checks this")
def test_the_pure_run_imports_every_core_module_from_source() -> None:
    assert not any(loaded(name) for name in compilable())
    assert implementation.describe().startswith("pure-Python core")


@pytest.mark.skipif(PURE_RUN, reason="the compiled run checks this")
def test_the_suite_runs_the_compiled_core() -> None:
    manifest = read_manifest() or {}
    if not manifest.get("compiled") and "FATIGUE_COMPILE=0" in str(manifest.get("note")):
        pytest.skip(f"the install was told not to compile: {manifest['note']}")
    assert manifest.get("compiled"), (
        f"the core is not compiled ({manifest.get('note', 'no build record')}): run `make build-core`, and see "
        "the install's line about the core")
    assert stale_modules() == [], "the compiled core is older than its source: run `make build-core`"
    assert sorted(manifest["sources"]) == compilable()  # type: ignore[call-overload]
    assert [name for name in compilable() if not loaded(name)] == []
    assert implementation.describe().startswith("compiled core (mypyc)")


@pytest.mark.timeout(900)
@pytest.mark.skipif(PURE_RUN, reason="this is the pure-Python run")
def test_the_core_tests_pass_on_the_pure_python_core() -> None:
    env = {**os.environ, PURE_ENV: "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *CORE_TESTS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=880, check=False)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 100, tail


def fake_package(tmp_path: Path, sources: dict[str, str]) -> Path:
    """A package folder with a compiled module (a dummy file is enough for the check) per source."""
    for name, text in sources.items():
        (tmp_path / f"{name}.py").write_text(text)
        (tmp_path / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    return tmp_path


def test_a_compiled_module_is_stale_once_its_source_changes(tmp_path: Path) -> None:
    package = fake_package(tmp_path, {"engine": "x = 1\n", "windows": "y = 2\n"})
    assert stale_modules(package) == ["engine", "windows"]  # no record of what was built: never trusted
    sources = {name: sha256_of(package / f"{name}.py") for name in ("engine", "windows")}
    (package / MANIFEST).write_text(f'{{"compiled": true, "sources": {sources!r}}}'.replace("'", '"'))
    assert stale_modules(package) == []
    (package / "windows.py").write_text("y = 3\n")
    assert stale_modules(package) == ["windows"]


def copy_of_the_core(tmp_path: Path) -> Path:
    """The installed core package (compiled modules, sources, build record) under tmp_path/scorer/core."""
    shutil.copytree(CORE_DIR, tmp_path / "scorer" / "core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "scorer" / "__init__.py", tmp_path / "scorer" / "__init__.py")
    return tmp_path / "scorer" / "core"


def import_engine(root: Path) -> subprocess.CompletedProcess[str]:
    code = "import scorer.core.engine as e; print(e.__file__, getattr(e, 'EDITED', False))"
    env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    env["PYTHONPATH"] = str(root)
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60, check=True)


@pytest.mark.skipif(PURE_RUN, reason="needs the compiled modules")
def test_an_edit_of_a_compiled_module_runs_from_source_with_a_warning(tmp_path: Path) -> None:
    """An editable install after an edit: the edit runs (never a stale compiled module), and says so."""
    if not any(SO.search(p.name) for p in CORE_DIR.iterdir()):
        pytest.skip("no compiled core here (see test_the_suite_runs_the_compiled_core)")
    core = copy_of_the_core(tmp_path)
    before = import_engine(tmp_path)
    assert SO.search(before.stdout.split()[0]) and before.stderr == ""
    with (core / "engine.py").open("a") as source:
        source.write("\nEDITED = True\n")
    after = import_engine(tmp_path)
    assert after.stdout.split() == [str(core / "engine.py"), "True"]
    assert "engine.py changed since the build" in after.stderr and "make build-core" in after.stderr
