"""Input conversion and validation shared by the core's public wrappers."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def float_column(
    name: str, values: Any, n: int | None = None, *, finite: bool = False
) -> FloatArray:
    """``values`` as a contiguous 1-D float64 array; raises ValueError naming ``name``."""
    try:
        arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not convertible to float64 ({exc})") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: length {arr.shape[0]} differs from t_s length {n}")
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{name}: must be finite, found NaN or inf")
    return arr


def optional_float_column(name: str, values: Any, n: int) -> FloatArray:
    """Like :func:`float_column`; ``None`` becomes an all-NaN column ("not reported")."""
    if values is None:
        return np.full(n, np.nan)
    return float_column(name, values, n)


def offsets_column(offsets: Any, n: int) -> IntArray:
    """Trip boundaries ``offsets[n_trips + 1]``: int64, from 0 to ``n``, non-decreasing."""
    if offsets is None:
        return np.array([0, n], dtype=np.int64)
    arr = np.asarray(offsets)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError("offsets: expected a 1-D array of n_trips + 1 boundaries")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"offsets: expected integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr[0] != 0 or arr[-1] != n:
        raise ValueError(f"offsets: must start at 0 and end at the sample count {n}")
    if np.any(np.diff(arr) < 0):
        raise ValueError("offsets: must be non-decreasing")
    return arr
