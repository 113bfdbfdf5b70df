"""PostgreSQL binary COPY encoding of columnar numpy data, in numba."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from telematics.core.jit import cached_njit

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds

KIND_INT8 = 0  # bigint and timestamptz: 8 bytes, big endian
KIND_FLOAT8 = 1  # float64 bits viewed as int64
KIND_BOOL = 2
KIND_TEXT = 3  # value is an index into the text dictionary

# Rows encoded per piece of a streamed payload: about 1 MB of GPS rows, small enough that
# the server starts on a batch while the client encodes the rest, large enough that the
# per-piece overhead (one socket write, one kernel call) is negligible.
ROWS_PER_CHUNK = 8_192


@dataclass(frozen=True)
class TextCodes:
    """A text column as a dictionary: row i holds `texts[codes[i]]`; code -1 is missing."""

    codes: np.ndarray
    texts: tuple[str, ...]


_FLOAT8_OID = 701
_FLOAT8_ARRAY_OID = 1022
_ARRAY_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])


@dataclass(frozen=True)
class Float8Array:
    """A float64 array to send as a ``double precision[]`` parameter (with ``%b``), in
    the array's binary form built by numpy: no Python work per element."""

    values: np.ndarray

    def binary(self) -> bytes:
        n = self.values.shape[0]
        if n == 0:
            return struct.pack(">iiI", 0, 0, _FLOAT8_OID)
        elements = np.empty(n, dtype=_ARRAY_ELEMENT)
        elements["length"] = 8
        elements["value"] = self.values
        return struct.pack(">iiIii", 1, 0, _FLOAT8_OID, n, 1) + elements.tobytes()


class _Float8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = _FLOAT8_ARRAY_OID

    def dump(self, obj: Float8Array) -> bytes:
        return obj.binary()


psycopg.adapters.register_dumper(Float8Array, _Float8ArrayDumper)


def factorize_text(values: object) -> TextCodes:
    """Dictionary-encode a text column. Device and trip ids come in long runs (an upload is
    one trip of one device), so each run is hashed once rather than each row."""
    column = np.asarray(values, dtype=object)
    if len(column) == 0:
        return TextCodes(np.empty(0, dtype=np.int64), ())
    try:
        changes = column[1:] != column[:-1]
    except TypeError:  # pd.NA has no truth value for !=: hash every row instead
        changes = np.ones(len(column) - 1, dtype=np.bool_)
    starts = np.flatnonzero(np.concatenate(([True], changes)))
    run_codes, uniques = pd.factorize(column[starts])
    codes = np.repeat(run_codes.astype(np.int64), np.diff(starts, append=len(column)))
    return TextCodes(codes, tuple(str(u) for u in uniques))


CopyColumn = tuple[int, np.ndarray | TextCodes, np.ndarray | None]


@cached_njit()
def _encoded_size(kinds, values, nulls, text_offsets, lo, hi):  # pragma: no cover - numba
    n_cols = values.shape[0]
    size = 0
    for r in range(lo, hi):
        size += 2
        for c in range(n_cols):
            size += 4
            if nulls[c, r]:
                continue
            k = kinds[c]
            if k == KIND_BOOL:
                size += 1
            elif k == KIND_TEXT:
                code = values[c, r]
                size += text_offsets[code + 1] - text_offsets[code]
            else:
                size += 8
    return size


@cached_njit()
def _put_int(out, pos, value, n_bytes):  # pragma: no cover - numba
    for i in range(n_bytes):
        out[pos + i] = (value >> (8 * (n_bytes - 1 - i))) & 0xFF
    return pos + n_bytes


@cached_njit()
def _encode_rows(kinds, values, nulls, text_blob, text_offsets, lo, hi, out):  # pragma: no cover
    n_cols = values.shape[0]
    pos = 0
    for r in range(lo, hi):
        pos = _put_int(out, pos, n_cols, 2)
        for c in range(n_cols):
            if nulls[c, r]:
                pos = _put_int(out, pos, -1, 4)
                continue
            k = kinds[c]
            if k == KIND_BOOL:
                pos = _put_int(out, pos, 1, 4)
                out[pos] = 1 if values[c, r] != 0 else 0
                pos += 1
            elif k == KIND_TEXT:
                code = values[c, r]
                start = text_offsets[code]
                length = text_offsets[code + 1] - start
                pos = _put_int(out, pos, length, 4)
                for i in range(length):
                    out[pos + i] = text_blob[start + i]
                pos += length
            else:
                pos = _put_int(out, pos, 8, 4)
                pos = _put_int(out, pos, values[c, r], 8)
    return pos


@dataclass(frozen=True)
class _Layout:
    kinds: np.ndarray  # (n_cols,) int64
    values: np.ndarray  # (n_cols, n_rows) int64: integers, float bits, bools or text codes
    nulls: np.ndarray  # (n_cols, n_rows) bool
    text_blob: np.ndarray  # UTF-8 bytes of every distinct text, concatenated
    text_offsets: np.ndarray  # text i is text_blob[text_offsets[i]:text_offsets[i + 1]]


def _layout(columns: Sequence[CopyColumn]) -> _Layout:
    if not columns:
        raise ValueError("columns: at least one column is required")
    first = columns[0][1]
    n_rows = len(first.codes if isinstance(first, TextCodes) else first)
    n_cols = len(columns)
    kinds = np.empty(n_cols, dtype=np.int64)
    values = np.empty((n_cols, n_rows), dtype=np.int64)
    nulls = np.zeros((n_cols, n_rows), dtype=np.bool_)
    texts: dict[str, int] = {}
    for c, (kind, column, null_mask) in enumerate(columns):
        kinds[c] = kind
        if kind == KIND_TEXT:
            coded = column if isinstance(column, TextCodes) else factorize_text(column)
            if len(coded.codes) != n_rows:
                raise ValueError(f"column {c}: length {len(coded.codes)} differs from {n_rows}")
            if (coded.codes < 0).any():
                raise ValueError(f"column {c}: text values may not be missing")
            remap = np.array([texts.setdefault(t, len(texts)) for t in coded.texts],
                             dtype=np.int64)
            values[c] = remap[coded.codes]
        else:
            if isinstance(column, TextCodes):
                raise ValueError(f"column {c}: text given for a kind {kind} column")
            if len(column) != n_rows:
                raise ValueError(f"column {c}: length {len(column)} differs from {n_rows}")
            if kind == KIND_FLOAT8:
                values[c] = np.ascontiguousarray(column, dtype=np.float64).view(np.int64)
            else:
                values[c] = np.asarray(column).astype(np.int64, copy=False)
        if null_mask is not None:
            nulls[c] = null_mask
    encoded = [t.encode("utf-8") for t in texts]
    text_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        text_offsets[1:] = np.cumsum([len(b) for b in encoded])
    text_blob = np.frombuffer(b"".join(encoded) or b"\x00", dtype=np.uint8)
    return _Layout(kinds, values, nulls, text_blob, text_offsets)


def _pieces(layout: _Layout, rows_per_chunk: int) -> Iterator[memoryview]:
    yield memoryview(HEADER)
    n_rows = layout.values.shape[1]
    for lo in range(0, n_rows, rows_per_chunk):
        hi = min(lo + rows_per_chunk, n_rows)
        size = _encoded_size(layout.kinds, layout.values, layout.nulls, layout.text_offsets,
                             lo, hi)
        out = np.empty(size, dtype=np.uint8)
        written = _encode_rows(layout.kinds, layout.values, layout.nulls, layout.text_blob,
                               layout.text_offsets, lo, hi, out)
        if written != size:
            raise AssertionError(f"binary COPY encoder wrote {written} bytes, expected {size}")
        yield out.data
    yield memoryview(TRAILER)


def iter_binary_copy(columns: Sequence[CopyColumn],
                     rows_per_chunk: int = ROWS_PER_CHUNK) -> Iterator[memoryview]:
    """The binary COPY payload of `columns` in pieces (header, rows, trailer) to stream.

    Each column is `(kind, values, null_mask)`: int64 values for KIND_INT8 (timestamps
    already in PostgreSQL microseconds), float64 for KIND_FLOAT8, bool for KIND_BOOL, and
    an object/str array or `TextCodes` for KIND_TEXT. `null_mask` marks NULL rows (or None
    for none). The columns are checked here, before the first piece is asked for; each
    piece of rows is encoded only when the consumer takes it.
    """
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk: {rows_per_chunk} is not positive")
    return _pieces(_layout(columns), rows_per_chunk)


def encode_binary_copy(columns: Sequence[CopyColumn]) -> bytes:
    """The whole binary COPY payload of `columns` (see `iter_binary_copy`) as one bytes."""
    return b"".join(iter_binary_copy(columns))
