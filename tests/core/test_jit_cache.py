"""Kernels are cached under a hash of every kernel source, so an edit to one file cannot
leave a stale copy of it inlined in another file's cached kernel."""

from __future__ import annotations

from pathlib import Path

import numba
import pytest

from telematics.core import jit


def _twice(x: float) -> float:
    return 2.0 * x


def test_kernels_cache_in_a_folder_named_after_their_sources(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = jit.source_digest(jit._kernel_sources())
    assert jit.KERNEL_CACHE_DIR.endswith(f"ubi-kernels-{digest}")
    names = {p.name for p in jit._kernel_sources()}
    assert {"events.py", "features.py", "imu.py", "pgcopy.py"} <= names
    # Another package's setting of numba's global folder does not leak into our kernels.
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "elsewhere"))
    kernel = jit.serial(_twice)
    assert kernel(2.0) == 4.0
    if not numba.config.DISABLE_JIT:  # without the JIT there is nothing to cache
        assert kernel._cache.cache_path.startswith(jit.KERNEL_CACHE_DIR)


def test_any_edit_to_any_source_changes_the_folder(tmp_path: Path) -> None:
    files = [tmp_path / "a.py", tmp_path / "b.py"]
    files[0].write_text("x = 1\n")
    files[1].write_text("y = 2\n")
    before = jit.source_digest(files)
    assert jit.source_digest(reversed(files)) == before
    files[1].write_text("y = 3\n")
    assert jit.source_digest(files) != before
