"""PostgreSQL binary COPY encoding of columnar numpy data, in numba."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds

KIND_INT8 = 0  # bigint and timestamptz: 8 bytes, big endian
KIND_FLOAT8 = 1  # float64 bits viewed as int64
KIND_BOOL = 2
KIND_TEXT = 3  # value is an index into the text dictionary


@njit(cache=True)
def _encoded_size(kinds, values, nulls, text_offsets):  # pragma: no cover - numba
    n_cols, n_rows = values.shape
    size = 0
    for r in range(n_rows):
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


@njit(cache=True)
def _put_int(out, pos, value, n_bytes):  # pragma: no cover - numba
    for i in range(n_bytes):
        out[pos + i] = (value >> (8 * (n_bytes - 1 - i))) & 0xFF
    return pos + n_bytes


@njit(cache=True)
def _encode_rows(kinds, values, nulls, text_blob, text_offsets, out):  # pragma: no cover
    n_cols, n_rows = values.shape
    pos = 0
    for r in range(n_rows):
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


def encode_binary_copy(columns: list[tuple[int, np.ndarray, np.ndarray | None]]) -> bytes:
    """Encode columns as one binary COPY payload (header, rows, trailer).

    Each column is `(kind, values, null_mask)`: int64 values for KIND_INT8 (timestamps
    already in PostgreSQL microseconds), float64 for KIND_FLOAT8, bool for KIND_BOOL, and
    an object/str array for KIND_TEXT. `null_mask` marks NULL rows (or None for none).
    """
    if not columns:
        raise ValueError("columns: at least one column is required")
    n_rows = len(columns[0][1])
    n_cols = len(columns)
    kinds = np.empty(n_cols, dtype=np.int64)
    values = np.empty((n_cols, n_rows), dtype=np.int64)
    nulls = np.zeros((n_cols, n_rows), dtype=np.bool_)
    texts: dict[str, int] = {}
    for c, (kind, column, null_mask) in enumerate(columns):
        if len(column) != n_rows:
            raise ValueError(f"column {c}: length {len(column)} differs from {n_rows}")
        kinds[c] = kind
        if kind == KIND_TEXT:
            codes, uniques = pd.factorize(np.asarray(column, dtype=object))
            if (codes < 0).any():
                raise ValueError(f"column {c}: text values may not be missing")
            for u in uniques:
                texts.setdefault(str(u), len(texts))
            remap = np.array([texts[str(u)] for u in uniques], dtype=np.int64)
            values[c] = remap[codes]
        elif kind == KIND_FLOAT8:
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
    size = _encoded_size(kinds, values, nulls, text_offsets)
    out = np.empty(len(HEADER) + size + len(TRAILER), dtype=np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
    body = out[len(HEADER): len(HEADER) + size]
    written = _encode_rows(kinds, values, nulls, text_blob, text_offsets, body)
    if written != size:
        raise AssertionError(f"binary COPY encoder wrote {written} bytes, expected {size}")
    out[len(HEADER) + size:] = np.frombuffer(TRAILER, dtype=np.uint8)
    return out.tobytes()
