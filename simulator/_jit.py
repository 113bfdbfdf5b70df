"""JIT policy of the simulator's numba kernels, kept in one place."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

# numba's disk cache checks only the source file of the function it compiled, not those of
# the kernels inlined into it (the random-stream primitives are inlined everywhere): the
# kernels are cached in a folder named after a hash of every simulator source, so any edit
# compiles them afresh. (telematics.core.jit does the same for the platform's kernels; the
# simulator may not import it.)
_HERE = Path(__file__).resolve().parent
_digest = hashlib.sha256()
for _path in sorted(_HERE.glob("*.py")):
    _digest.update(_path.name.encode() + b"\0" + _path.read_bytes() + b"\0")
KERNEL_CACHE_DIR = os.path.join(os.environ.get("NUMBA_CACHE_DIR") or str(_HERE / "__pycache__"),
                                f"simulator-kernels-{_digest.hexdigest()[:16]}")


def _cached_njit(**options: Any) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        numba.config.CACHE_DIR = KERNEL_CACHE_DIR  # type: ignore[attr-defined]
        return cast(F, numba.njit(cache=True, nogil=True, fastmath=False, **options)(func))
    return decorate


# Serial kernels only: the simulator's determinism must not depend on the thread count, and
# fastmath stays off because kernels use NaN to mark samples a sensor did not deliver.
serial_kernel = _cached_njit()
# The random-stream primitives are a few instructions each and sit in every hot loop.
inline_kernel = _cached_njit(inline="always")
