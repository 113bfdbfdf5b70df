"""The layout and the dependency rule of docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "pricing": {"telematics", "simulator", "numba", "psycopg", "psycopg_pool", "fastapi"},
    "simulator": {"pricing", "psycopg", "psycopg_pool"},
}


def imported_top_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {node.module.split(".")[0]}
            else:
                continue
            found.setdefault(str(path.relative_to(ROOT)), set()).update(names)
    return found


def test_top_level_layout() -> None:
    for name in ("pyproject.toml", "README.md", "telematics", "pricing", "simulator", "tests",
                 "notebooks", "Makefile", "bench", "docs/ARCHITECTURE.md", ".ci/run"):
        assert (ROOT / name).exists(), name


def test_pricing_and_simulator_respect_the_dependency_rule() -> None:
    for package, forbidden in FORBIDDEN.items():
        for path, names in imported_top_modules(package).items():
            assert not names & forbidden, f"{path} imports {sorted(names & forbidden)}"


def test_importing_pricing_loads_neither_telematics_nor_numba() -> None:
    code = ("import sys, pkgutil, importlib, pricing\n"
            "for m in pkgutil.walk_packages(pricing.__path__, 'pricing.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'telematics', 'simulator', 'numba', 'psycopg'})\n"
            "print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert proc.stdout.strip() == ""
