"""The one place that decides how core kernels are compiled (fastmath, cache, parallel)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

# Fast-math flags that keep NaN and inf semantics: a GPS dropout is NaN by design, so
# "nnan" and "ninf" (and therefore the blanket fastmath=True) are never allowed.
FASTMATH_FLAGS: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def source_digest(paths: Iterable[Path]) -> str:
    """A short hash over the names and contents of the given source files."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _kernel_sources() -> list[Path]:
    core = Path(__file__).resolve().parent
    return [*core.glob("*.py"), core.parent / "store" / "pgcopy.py"]


# numba's disk cache checks only the source file of the function it compiled, not the
# files of the kernels inlined into it: after an edit to events.py the cached features
# kernel would go on running the old events code. Kernels are therefore cached in a
# folder named after a hash of every kernel source, so that any edit (or upgrade)
# compiles them afresh. Set before any kernel is decorated: numba picks a function's
# cache folder then.
KERNEL_CACHE_DIR = os.path.join(
    os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).resolve().parent / "__pycache__"),
    f"ubi-kernels-{source_digest(_kernel_sources())}")


def cached_njit(**options: Any) -> Callable[[F], F]:
    """``numba.njit(cache=True, **options)`` with the cache in ``KERNEL_CACHE_DIR``. The
    folder is numba's global setting, read when a function is decorated, so it is set at
    each decoration (another package may have pointed it elsewhere meanwhile)."""
    def decorate(func: F) -> F:
        numba.config.CACHE_DIR = KERNEL_CACHE_DIR  # type: ignore[attr-defined]
        return cast(F, numba.njit(cache=True, **options)(func))
    return decorate


def serial(func: F) -> F:
    """Compile a serial kernel: nopython, cached on disk, NaN-safe fast math."""
    return cached_njit(fastmath=set(FASTMATH_FLAGS), nogil=True)(func)


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
