"""JIT policy of the simulator's numba kernels, kept in one place."""

from __future__ import annotations

import numba

# Serial kernels only: the simulator's determinism must not depend on the thread count, and
# fastmath stays off because kernels use NaN to mark samples a sensor did not deliver.
serial_kernel = numba.njit(cache=True, nogil=True, fastmath=False)
# The random-stream primitives are a few instructions each and sit in every hot loop.
inline_kernel = numba.njit(cache=True, nogil=True, fastmath=False, inline="always")
