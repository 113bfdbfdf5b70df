"""Wire-format parsing and per-sample validation of uploads (docs/WIRE_FORMAT.md)."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_SAMPLES_PER_BATCH = 250_000  # all streams together; Settings.max_samples_per_batch
FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000


class WireError(ValueError):
    """The whole request is unusable. `code` is stable, `field` a JSON path."""

    def __init__(self, code: str, field: str, message: str, status: int = 422,
                 **extra: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = message
        self.status = status
        self.extra = extra


@dataclass(frozen=True)
class StreamSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    booleans: tuple[str, ...] = ()


GPS_SPEC = StreamSpec(
    "gps", ("lat_deg", "lon_deg"),
    ("speed_mps", "heading_deg", "accuracy_m", "altitude_m", "speed_limit_mps"),
    {"lat_deg": (-90.0, 90.0), "lon_deg": (-180.0, 180.0), "accuracy_m": (0.0, np.inf),
     "speed_mps": (0.0, np.inf), "speed_limit_mps": (0.0, np.inf)},
)
IMU_SPEC = StreamSpec(
    "imu", ("acc_x_mps2", "acc_y_mps2", "acc_z_mps2"),
    ("gyr_x_radps", "gyr_y_radps", "gyr_z_radps"),
)
OBD_SPEC = StreamSpec(
    "obd", (), ("speed_kmh", "rpm", "odometer_km", "throttle_pct"),
    {"speed_kmh": (0.0, 400.0), "rpm": (0.0, 20_000.0), "odometer_km": (0.0, 5e6),
     "throttle_pct": (0.0, 100.0)},
    booleans=("ignition",),
)


@dataclass
class Rejection:
    index: int
    seq: int | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "seq": self.seq, "field": self.field, "reason": self.reason}


@dataclass
class CleanStream:
    """Accepted samples of one stream, sorted by time, unique on (seq, t_us)."""

    t_us: np.ndarray
    seq: np.ndarray
    values: dict[str, np.ndarray]  # float columns with NaN for missing; bool columns as-is
    received: int
    rejected: list[Rejection]
    duplicates_in_batch: int

    @property
    def accepted(self) -> int:
        return len(self.t_us)


def decode_body(raw: bytes, content_encoding: str | None) -> bytes:
    """The request body, decompressed with the size limit enforced after decompression."""
    if len(raw) > MAX_BODY_BYTES:
        raise WireError("body_too_large", "body", f"exceeds {MAX_BODY_BYTES} bytes", 413)
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise WireError("unsupported_encoding", "Content-Encoding",
                        f"'{encoding}' is not supported; use gzip or none", 415)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise WireError("bad_gzip", "body", f"is not valid gzip ({exc})", 400) from None
    if len(out) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise WireError("body_too_large", "body",
                        f"exceeds {MAX_BODY_BYTES} bytes after decompression", 413)
    if not inflater.eof:
        raise WireError("bad_gzip", "body", "gzip stream is truncated", 400)
    return out


def gzip_body(payload: bytes) -> bytes:
    return gzip.compress(payload, compresslevel=5, mtime=0)


class _NaNToken:
    """A `NaN` literal of the tolerant parse: a bad value, unlike `null` (a missing one)."""

    def __repr__(self) -> str:
        return "NaN"


_NAN_TOKEN = _NaNToken()
_NON_FINITE = {"NaN": _NAN_TOKEN, "Infinity": float("inf"), "-Infinity": float("-inf")}


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_json_tolerant(body)
    if not isinstance(doc, dict):
        raise WireError("bad_type", "body", "must be a JSON object")
    return doc


def _parse_json_tolerant(body: bytes) -> Any:
    """JSON with the literals NaN, Infinity and -Infinity and numbers beyond the float range,
    which phones send (Python's json.dumps writes them by default) and orjson refuses.

    Several times slower than orjson, so tried only on a body orjson refused (at most
    MAX_BODY_BYTES), and otherwise no more lenient: UTF-8 only, no unpaired surrogates.
    """
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_NON_FINITE.__getitem__,
                         parse_int=_parse_int)
    except UnicodeDecodeError as exc:
        raise WireError("bad_json", "body", f"is not valid UTF-8 ({exc.reason} at byte "
                        f"{exc.start})", 400) from None
    except RecursionError:
        raise WireError("bad_json", "body", "is not valid JSON (nested too deeply)", 400) from None
    except ValueError as exc:
        raise WireError("bad_json", "body", f"is not valid JSON ({exc})", 400) from None
    # An escaped unpaired surrogate is the one thing json accepts that orjson does not; such
    # a string cannot be stored or echoed, so refuse it here as orjson would have.
    if b"\\u" in body and _has_unpaired_surrogate(doc):
        raise WireError("bad_json", "body", "is not valid JSON (a string holds an unpaired "
                        "surrogate)", 400)
    return doc


def _parse_int(text: str) -> int | float:
    # As orjson reads an integer: exact within 64 bits, else a float (inf beyond its range).
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return float(text)


def _has_unpaired_surrogate(doc: Any) -> bool:
    pending = [doc]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(v for v in value if isinstance(v, str | list | dict))
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _number_array(values: Any, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The values as float64 (null is NaN), and where the body said NaN (None: nowhere)."""
    if not isinstance(values, list):
        raise WireError("bad_type", path, "must be an array")
    try:
        return np.array(values, dtype=np.float64), None
    except (TypeError, ValueError):
        pass
    # Only an array holding NaN literals (from the tolerant parse) or bad values gets here.
    nan_token = np.array([v is _NAN_TOKEN for v in values], dtype=np.bool_)
    try:
        arr = np.array([None if v is _NAN_TOKEN else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in values if v is not None and v is not _NAN_TOKEN
                    and not isinstance(v, int | float)), None)
        # Never the repr of a container: a deeply nested one would overflow the stack.
        found = ("an array" if isinstance(bad, list) else "an object" if isinstance(bad, dict)
                 else repr(bad)[:40])
        raise WireError("bad_type", path, f"must hold numbers or null, found {found}") from None
    return arr, nan_token


def _int_array(values: Any, path: str) -> np.ndarray:
    arr, nan_token = _number_array(values, path)
    if nan_token is not None:
        raise WireError("bad_type", path, "must hold integers, found NaN")
    if np.isnan(arr).any():
        raise WireError("missing_value", path, "may not contain null")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(np.abs(arr) > 2**62):
        raise WireError("bad_type", path, "must hold integers")
    return arr.astype(np.int64)


def _bool_array(values: Any, path: str) -> np.ndarray:
    if not isinstance(values, list) or any(v is not None and not isinstance(v, bool)
                                           for v in values):
        raise WireError("bad_type", path, "must be an array of true, false or null")
    return np.array([bool(v) for v in values], dtype=np.bool_)


def check_sample_count(streams: dict[str, Any], max_samples: int) -> None:
    """Refuse a batch whose streams together hold more than `max_samples` samples (413),
    counted by their `seq` arrays before any column is converted."""
    counts = {name: len(stream["seq"]) for name, stream in streams.items()
              if isinstance(stream, dict) and isinstance(stream.get("seq"), list)}
    total = sum(counts.values())
    if total > max_samples:
        detail = " + ".join(f"{n} {name}" for name, n in counts.items())
        raise WireError("too_many_samples", "body", f"{total} samples ({detail}) exceed the "
                        f"limit of {max_samples} samples per batch", 413,
                        limit=max_samples, samples=total)


def parse_stream(doc: Any, spec: StreamSpec, path: str, *, now_us: int,
                 oldest_us: int) -> CleanStream:
    """Validate one columnar stream; bad samples are rejected one by one with a reason."""
    if not isinstance(doc, dict):
        raise WireError("bad_type", path, "must be an object of arrays")
    known = {"seq", "t_us", *spec.required, *spec.optional, *spec.booleans}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise WireError("unknown_field", f"{path}.{unknown[0]}", "is not a field of this stream")
    for name in ("seq", "t_us", *spec.required):
        if name not in doc:
            raise WireError("missing_field", f"{path}.{name}", "is required")
    seq = _int_array(doc["seq"], f"{path}.seq")
    n = len(seq)
    t_us = _int_array(doc["t_us"], f"{path}.t_us")
    values: dict[str, np.ndarray] = {}
    nan_tokens: dict[str, np.ndarray] = {}
    for name in (*spec.required, *spec.optional, *spec.booleans):
        if name not in doc:
            continue
        if name in spec.booleans:
            values[name] = _bool_array(doc[name], f"{path}.{name}")
            continue
        values[name], nan_token = _number_array(doc[name], f"{path}.{name}")
        if nan_token is not None:
            nan_tokens[name] = nan_token
    for name, arr in [("t_us", t_us), *values.items()]:
        if len(arr) != n:
            raise WireError("length_mismatch", f"{path}.{name}",
                            f"has {len(arr)} values but seq has {n}")

    bad = np.zeros(n, dtype=np.bool_)
    rejected: list[Rejection] = []

    def reject(mask: np.ndarray, fld: str, reason: str) -> None:
        new = mask & ~bad
        for i in np.flatnonzero(new):
            rejected.append(Rejection(int(i), int(seq[i]), f"{path}.{fld}", reason))
        bad[:] |= new

    reject(seq < 0, "seq", "negative sequence number")
    reject(t_us > now_us + FUTURE_TOLERANCE_US, "t_us", "more than 5 minutes in the future")
    reject(t_us < oldest_us, "t_us", "older than the retention window")
    for name, arr in values.items():
        if name in spec.booleans:
            continue
        if name in nan_tokens:
            reject(nan_tokens[name], name, "NaN value")
        missing = np.isnan(arr)
        if name in spec.required:
            reject(missing, name, "missing value")
        reject(np.isinf(arr), name, "infinite value")
        lo, hi = spec.ranges.get(name, (-np.inf, np.inf))
        with np.errstate(invalid="ignore"):
            reject(~missing & ((arr < lo) | (arr > hi)), name,
                   "negative" if lo == 0.0 and name == "accuracy_m" else f"outside [{lo}, {hi}]")
    keep = np.flatnonzero(~bad)
    order = keep[np.lexsort((seq[keep], t_us[keep]))]
    t_sorted, seq_sorted = t_us[order], seq[order]
    first = np.ones(len(order), dtype=np.bool_)
    if len(order) > 1:
        first[1:] = (t_sorted[1:] != t_sorted[:-1]) | (seq_sorted[1:] != seq_sorted[:-1])
    order = order[first]
    rejected.sort(key=lambda r: r.index)
    return CleanStream(
        t_us=t_us[order], seq=seq[order],
        values={k: v[order] for k, v in values.items()},
        received=n, rejected=rejected, duplicates_in_batch=int((~first).sum()),
    )


def require_str(doc: dict[str, Any], name: str, *, max_len: int = 128) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise WireError("bad_type" if name in doc else "missing_field", name,
                        f"must be a non-empty string of at most {max_len} characters")
    return value
