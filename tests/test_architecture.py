"""The import rule of docs/architecture.md, checked on the source: dependencies point one way.

    fatigue (the command)  ->  ingest | scorer | notifier  ->  services

Nothing in services/ imports a service or the command package; no service imports another, except
that the API may import the scorer's pure core (`scorer.core`: it explains customers at read time);
the pure core imports no I/O framework. Every import counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("fatigue", "services", "ingest", "scorer", "notifier")
MAY_IMPORT = {
    "fatigue": {"fatigue", "services", "ingest", "scorer", "notifier"},
    "ingest": {"ingest", "services"},
    "scorer": {"scorer", "services"},
    "notifier": {"notifier", "services"},
    "services": {"services"},
}
IO_FRAMEWORKS = {"faust", "mode", "aiokafka", "kafka", "redis", "httpx", "fastapi", "starlette", "uvicorn", "aiohttp"}


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import statement in a module, nested ones included."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def modules_of(root: Path, package: str) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


PURE_CORE = "scorer.core"
MAY_IMPORT_THE_PURE_CORE = {"ingest"}
"""The API explains customers at read time with the core's own code (ingest/customer_views.py): it may
import the pure core, which reads no clock and does no I/O, and nothing else of the scorer."""


def _allowed(package: str, name: str, allowed: set[str]) -> bool:
    top = name.split(".")[0]
    if top not in OURS or top in allowed:
        return True
    return package in MAY_IMPORT_THE_PURE_CORE and (name == PURE_CORE or name.startswith(PURE_CORE + "."))


def violations(root: Path, package: str, allowed: set[str]) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {name}"
        for path in modules_of(root, package)
        for line, name in imported_modules(root, path)
        if not _allowed(package, name, allowed)
    ]


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_dependencies_point_one_way(package: str) -> None:
    assert modules_of(ROOT, package), f"{package}/ has no modules: the rule would pass vacuously"
    assert violations(ROOT, package, MAY_IMPORT[package]) == []


def test_the_pure_core_imports_no_io_framework() -> None:
    core = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "scorer" / "core").rglob("*.py"))
        for line, name in imported_modules(ROOT, path)
        if name.split(".")[0] in IO_FRAMEWORKS
    ]
    assert core == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule is only worth its test if a wrong import is caught: nested and relative ones too."""
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "probe.py").write_text("def f():\n    from notifier import signing\n    return signing\n")
    (tmp_path / "scorer" / "core").mkdir(parents=True)
    (tmp_path / "scorer" / "core" / "probe.py").write_text("from ...ingest import app\nfrom . import windows\n")
    assert violations(tmp_path, "services", MAY_IMPORT["services"]) == ["services/probe.py:2 imports notifier"]
    assert violations(tmp_path, "scorer", MAY_IMPORT["scorer"]) == ["scorer/core/probe.py:1 imports ingest"]
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "probe.py").write_text("from scorer.core import views\nfrom scorer import processor\n")
    assert violations(tmp_path, "ingest", MAY_IMPORT["ingest"]) == ["ingest/probe.py:2 imports scorer"]
