"""The one place that decides how core kernels are compiled (fastmath, cache, parallel)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

# Fast-math flags that keep NaN and inf semantics: a GPS dropout is NaN by design, so
# "nnan" and "ninf" (and therefore the blanket fastmath=True) are never allowed.
FASTMATH_FLAGS: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def serial(func: F) -> F:
    """Compile a serial kernel: nopython, cached on disk, NaN-safe fast math."""
    return cast(F, numba.njit(cache=True, fastmath=set(FASTMATH_FLAGS), nogil=True)(func))


def parallel(func: F) -> F:
    """Compile a kernel whose one outer ``prange`` loop runs over trips on all threads.

    Not cached: numba's cache of parallel kernels is fragile across thread layers, and
    each call site is a thin outer loop over serial helpers that are cached.
    """
    return cast(F, numba.njit(parallel=True, fastmath=set(FASTMATH_FLAGS), nogil=True)(func))


# Trips handed to a thread at a time. numba's default schedule is static (each thread
# gets a fixed half of the trips), so on a shared machine one descheduled thread stalls
# the whole loop; chunks of a few trips let the free thread take over.
PARALLEL_CHUNK_ITEMS = 8


@contextlib.contextmanager
def dynamic_schedule(chunk_items: int = PARALLEL_CHUNK_ITEMS) -> Iterator[None]:
    """Run the parallel kernels called inside with a dynamic schedule of ``chunk_items``."""
    previous = numba.set_parallel_chunksize(chunk_items)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(previous)
