"""The notebooks run top to bottom against a small demo, so they cannot rot.

One small `ubi demo` fills a fresh database; every notebook is then executed in a kernel
running this interpreter, and any cell error fails the test with the cell and its error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from telematics.demo import DemoOptions, run_demo

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("calibrate_and_validate.ipynb", "driver_trips.ipynb", "plan_change_impact.ipynb")
CELL_TIMEOUT_S = 240

pytestmark = [pytest.mark.db, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_env(own_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A small demo in a database of its own (it publishes a plan); the environment a
    kernel needs to read it."""
    workdir = tmp_path_factory.mktemp("notebooks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UBI_DATABASE_URL", own_db_url)
        mp.chdir(workdir)  # the demo keeps its state in ./.ubi/demo
        summary = run_demo(DemoOptions(drivers=8, days=3, policies=20_000, seed=3, out=workdir / "report"))
    assert summary["counted_trips"] > 0 and summary["premiums"]["policies"] > 0, summary
    yield {**os.environ, "UBI_DATABASE_URL": own_db_url, "JUPYTER_PLATFORM_DIRS": "1",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


@pytest.fixture(scope="module")
def kernel_spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec pinned to this interpreter, so the notebooks never run elsewhere."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("kernel")
    install(prefix=str(prefix), kernel_name="ubi-test")
    spec_dir = prefix / "share" / "jupyter" / "kernels"
    spec = KernelSpecManager(kernel_dirs=[str(spec_dir)]).get_kernel_spec("ubi-test")
    assert spec.argv[0] == sys.executable, spec.argv
    return spec_dir


def test_notebooks_are_committed_without_outputs() -> None:
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, \
                    f"{name}: commit the notebook with outputs cleared (cell {cell.get('id')})"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, demo_env: dict[str, str], kernel_spec_dir: Path, tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # A first cell, not saved, that proves the kernel is this interpreter.
    probe = nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix")
    probe["id"] = "interpreter-probe"
    nb.cells.insert(0, probe)
    kernel = KernelManager(kernel_name="ubi-test",
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_spec_dir)]))
    client = NotebookClient(nb, km=kernel, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=demo_env)
    except CellExecutionError as error:
        failed = next((c for c in nb.cells if c.cell_type == "code"
                       and any(o.output_type == "error" for o in c.get("outputs", []))), None)
        source = failed.source if failed is not None else "?"
        pytest.fail(f"{name}: a cell failed\n--- cell ---\n{source}\n--- error ---\n{error}", pytrace=False)
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 3, f"{name}: expected its plots, got {images} images"
