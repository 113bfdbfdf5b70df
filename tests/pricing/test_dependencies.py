"""pricing/ is a pure library: no telematics, simulator, numba or database imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pricing

FORBIDDEN = {"telematics", "simulator", "numba", "llvmlite", "psycopg", "psycopg_pool", "fastapi", "sqlalchemy"}
PRICING_DIR = Path(pricing.__file__).parent


def test_importing_every_module_loads_nothing_forbidden() -> None:
    modules = sorted(f"pricing.{p.stem}" for p in PRICING_DIR.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd=PRICING_DIR.parent)
    loaded = set(json.loads(completed.stdout))
    assert "pricing" in loaded
    assert not loaded & FORBIDDEN


def test_source_imports_nothing_forbidden() -> None:
    for source in sorted(PRICING_DIR.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN, f"{source.name}:{node.lineno} imports {sorted(roots & FORBIDDEN)}"
