"""Transport mode of a trip (car, bus, train, walking/cycling) from its speed profile,
with a confidence; only car trips are scored.

A transparent scorer: per trip a numba kernel measures speed percentiles, acceleration
percentile, interior stops (count per km, spacing, regularity of dwell times); each mode
has a few rules, each a linear ramp from 0 to 1 between two documented thresholds; a
mode's score is the mean of its rules and the confidence is the winner's share of the
scores. Buses stop often and regularly and accelerate gently; trains accelerate very
gently, run fast and stop far apart but do stop; walking and cycling are slow; cars are fast enough,
accelerate more firmly and stop irregularly (traffic) or rarely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import pandas as pd

from telematics.core.jit import serial

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MODE_CAR = 0
MODE_BUS = 1
MODE_TRAIN = 2
MODE_WALK_CYCLE = 3
MODE_NAMES = ("car", "bus", "train", "walking_cycling")

# Feature columns of the kernel's output.
FEATURE_NAMES = (
    "distance_m",
    "duration_s",
    "speed_p95_mps",
    "speed_p99_mps",
    "accel_p95_mps2",
    "accel_p99_mps2",
    "n_stops",
    "stops_per_km",
    "stop_spacing_km",
    "dwell_mean_s",
    "dwell_cv",
)
(
    _F_DIST,
    _F_DUR,
    _F_P95,
    _F_P99,
    _F_ACC95,
    _F_ACC99,
    _F_NSTOP,
    _F_STOPS_KM,
    _F_SPACING,
    _F_DWELL,
    _F_CV,
) = range(len(FEATURE_NAMES))

_SPEED_BIN_MPS = 0.25
_SPEED_BINS = 400  # up to 100 m/s
_ACCEL_BIN_MPS2 = 0.05
_ACCEL_BINS = 200  # up to 10 m/s^2


@dataclass(frozen=True)
class ModeParams:
    """Thresholds of the mode rules: each ``(lo, hi)`` is a ramp, 0 at lo and 1 at hi
    for "above" rules (reversed for "below"). Project choices from typical figures:
    walking 1-2 m/s and cycling 4-7 m/s; city buses stop every 300-600 m for 10-40 s
    and accelerate at about 1 m/s^2; trains at 0.3-0.6 m/s^2 with stations km apart;
    cars brake and accelerate at 1.5-3 m/s^2 with irregular traffic stops."""

    gap_s: float = 5.0  # no distance or acceleration across a longer gap
    accel_span_s: float = 3.0  # acceleration is the speed change over this time
    stop_speed_mps: float = 0.5  # below this the vehicle stands
    stop_min_s: float = 5.0  # an interior standstill this long is a stop
    walk_p95_below: tuple[float, float] = (7.0, 10.0)
    walk_p99_below: tuple[float, float] = (12.0, 16.0)
    walk_accel_p99_below: tuple[float, float] = (0.9, 1.2)
    bus_stops_per_km_above: tuple[float, float] = (1.6, 2.6)
    bus_dwell_cv_below: tuple[float, float] = (0.5, 0.9)
    bus_accel_p95_below: tuple[float, float] = (1.3, 1.8)
    bus_p99_below: tuple[float, float] = (20.0, 26.0)
    train_accel_p99_below: tuple[float, float] = (0.8, 1.1)
    train_spacing_km_above: tuple[float, float] = (1.0, 2.5)
    train_p95_above: tuple[float, float] = (12.0, 18.0)
    train_stops_per_100km_above: tuple[float, float] = (0.2, 1.0)
    car_p95_above: tuple[float, float] = (7.0, 10.0)
    car_accel_p99_above: tuple[float, float] = (0.9, 1.4)
    car_dwell_cv_above: tuple[float, float] = (0.5, 0.9)
    car_stops_per_km_below: tuple[float, float] = (1.6, 2.6)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if len(value) != 2 or not (0.0 <= value[0] < value[1] < math.inf):
                    raise ValueError(f"{f.name}: must be a ramp (lo, hi) with 0 <= lo < hi")
            elif not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{f.name}: must be a finite positive number, got {value!r}")


DEFAULT_MODE_PARAMS = ModeParams()


@dataclass(frozen=True)
class TripModes:
    """Per trip: mode code (``MODE_NAMES``), confidence (winner's share of the scores,
    0.25-1), whether the trip is scored (car), each mode's score and the features."""

    mode: IntArray
    confidence: FloatArray
    scored: npt.NDArray[np.bool_]
    scores: pd.DataFrame
    features: pd.DataFrame

    @property
    def mode_name(self) -> npt.NDArray[np.object_]:
        return np.asarray(MODE_NAMES, dtype=object)[self.mode]


@serial
def _percentile(hist, total, q, bin_width):
    """Upper edge of the histogram bin holding quantile q (NaN when empty)."""
    if total == 0:
        return math.nan
    target = q * total
    acc = 0.0
    for k in range(hist.shape[0]):
        acc += hist[k]
        if acc >= target:
            return (k + 1) * bin_width
    return hist.shape[0] * bin_width


@serial
def _mode_features(t_s, speed_mps, offsets, gap_s, accel_span_s, stop_speed, stop_min_s, out):
    """Features of every trip (columns of FEATURE_NAMES) into out[n_trips, n_features]."""
    speed_hist = np.empty(_SPEED_BINS)
    accel_hist = np.empty(_ACCEL_BINS)
    for trip in range(offsets.shape[0] - 1):
        a = offsets[trip]
        b = offsets[trip + 1]
        speed_hist[:] = 0.0
        accel_hist[:] = 0.0
        n_speed = 0
        n_accel = 0
        dist = 0.0
        moved = False  # moving seen since the trip start
        stop_start = -1.0  # start time of the current standstill, -1 when moving
        n_stops = 0
        lag = a
        dwell_sum = 0.0
        dwell_sq = 0.0
        for i in range(a, b):
            v = speed_mps[i]
            if not math.isnan(v):
                k = min(int(v / _SPEED_BIN_MPS), _SPEED_BINS - 1)
                speed_hist[k] += 1.0
                n_speed += 1
            if i > a:
                dt = t_s[i] - t_s[i - 1]
                v0 = speed_mps[i - 1]
                if 0.0 < dt <= gap_s and not math.isnan(v + v0):
                    dist += 0.5 * (v + v0) * dt
            # Acceleration over accel_span_s, not 1 s: speed noise would dominate.
            while lag + 1 < i and t_s[lag + 1] <= t_s[i] - accel_span_s:
                lag += 1
            span = t_s[i] - t_s[lag]
            if accel_span_s <= span <= accel_span_s + gap_s and not math.isnan(v + speed_mps[lag]):
                k = min(int(abs(v - speed_mps[lag]) / span / _ACCEL_BIN_MPS2), _ACCEL_BINS - 1)
                accel_hist[k] += 1.0
                n_accel += 1
            if math.isnan(v):
                continue
            if v < stop_speed:
                if stop_start < 0.0:
                    stop_start = t_s[i]
            else:
                # A standstill between two moving stretches is a stop when long enough.
                if moved and stop_start >= 0.0 and t_s[i] - stop_start >= stop_min_s:
                    dwell = t_s[i] - stop_start
                    n_stops += 1
                    dwell_sum += dwell
                    dwell_sq += dwell * dwell
                moved = True
                stop_start = -1.0
        out[trip, _F_DIST] = dist
        out[trip, _F_DUR] = t_s[b - 1] - t_s[a] if b > a else 0.0
        out[trip, _F_P95] = _percentile(speed_hist, n_speed, 0.95, _SPEED_BIN_MPS)
        out[trip, _F_P99] = _percentile(speed_hist, n_speed, 0.99, _SPEED_BIN_MPS)
        out[trip, _F_ACC95] = _percentile(accel_hist, n_accel, 0.95, _ACCEL_BIN_MPS2)
        out[trip, _F_ACC99] = _percentile(accel_hist, n_accel, 0.99, _ACCEL_BIN_MPS2)
        out[trip, _F_NSTOP] = n_stops
        km = dist / 1000.0
        out[trip, _F_STOPS_KM] = n_stops / km if km > 0.0 else math.nan
        out[trip, _F_SPACING] = km / (n_stops + 1)
        if n_stops > 0:
            mean = dwell_sum / n_stops
            out[trip, _F_DWELL] = mean
            var = max(dwell_sq / n_stops - mean * mean, 0.0)
            out[trip, _F_CV] = math.sqrt(var) / mean if n_stops > 1 else math.nan
        else:
            out[trip, _F_DWELL] = math.nan
            out[trip, _F_CV] = math.nan


def _ramp(
    x: FloatArray, lo_hi: tuple[float, float], above: bool, missing: float = 0.5
) -> FloatArray:
    """0 at lo, 1 at hi ("above"), reversed for "below"; ``missing`` where x is NaN
    (0.5: no evidence either way)."""
    lo, hi = lo_hi
    r = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    r = r if above else 1.0 - r
    return np.where(np.isnan(x), missing, r)


def _scores(f: FloatArray, p: ModeParams) -> FloatArray:
    """Each trip's score per mode, columns in ``MODE_NAMES`` order, from the kernel's
    feature rows ``f[n_trips, FEATURE_NAMES]``."""
    p95 = f[:, _F_P95]
    p99 = f[:, _F_P99]
    acc = f[:, _F_ACC95]
    acc99 = f[:, _F_ACC99]
    stops_km = f[:, _F_STOPS_KM]
    cv = f[:, _F_CV]
    spacing = f[:, _F_SPACING]
    walk = (
        _ramp(p95, p.walk_p95_below, False)
        + _ramp(p99, p.walk_p99_below, False)
        # A car on 30 km/h streets is as slow as a bicycle but pulls away harder.
        + _ramp(acc99, p.walk_accel_p99_below, False)
    ) / 3
    bus = (
        _ramp(stops_km, p.bus_stops_per_km_above, True)
        # Regular dwell needs at least two stops to show.
        + _ramp(cv, p.bus_dwell_cv_below, False, missing=0.0)
        + _ramp(acc, p.bus_accel_p95_below, False)
        + _ramp(p99, p.bus_p99_below, False)
        + _ramp(p95, p.car_p95_above, True)
    ) / 5
    train = (
        _ramp(acc99, p.train_accel_p99_below, False)
        + _ramp(spacing, p.train_spacing_km_above, True)
        + _ramp(p95, p.train_p95_above, True)
        # Trains stop at stations: hours of fast, smooth travel without a stop is a road.
        + _ramp(stops_km * 100.0, p.train_stops_per_100km_above, True)
    ) / 4
    irregular_or_sparse = np.maximum(
        _ramp(cv, p.car_dwell_cv_above, True), _ramp(stops_km, p.car_stops_per_km_below, False)
    )
    car = (
        _ramp(p95, p.car_p95_above, True)
        + _ramp(acc99, p.car_accel_p99_above, True)
        + irregular_or_sparse
    ) / 3
    return np.column_stack((car, bus, train, walk))


def classify_trips(
    t_s: npt.ArrayLike,
    speed_mps: npt.ArrayLike,
    offsets: npt.ArrayLike | None = None,
    *,
    params: ModeParams = DEFAULT_MODE_PARAMS,
) -> TripModes:
    """Transport mode of each trip from its fixes' times and speeds (kinematics' speed,
    NaN unknown); trips at ``offsets[n_trips + 1]`` (default: one trip), times sorted
    within each trip."""
    t = np.ascontiguousarray(t_s, dtype=np.float64)
    if t.ndim != 1 or not np.isfinite(t).all():
        raise ValueError("t_s: must be a one-dimensional array of finite times")
    n = t.shape[0]
    v = np.ascontiguousarray(speed_mps, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"speed_mps: must have one value per fix ({n})")
    if (v < 0.0).any() or np.isinf(v).any():
        raise ValueError("speed_mps: must be non-negative and finite or NaN")
    if offsets is None:
        off = np.array([0, n], dtype=np.int64)
    else:
        raw = np.asarray(offsets)
        if raw.ndim != 1 or raw.shape[0] < 1 or not np.issubdtype(raw.dtype, np.integer):
            raise ValueError("offsets: must be a one-dimensional integer array of n_trips + 1")
        off = np.ascontiguousarray(raw, dtype=np.int64)
        if off[0] != 0 or off[-1] != n or (np.diff(off) < 0).any():
            raise ValueError(f"offsets: must start at 0, be non-decreasing and end at {n}")
    inside = np.ones(max(n - 1, 0), dtype=np.bool_)
    starts = off[1:-1]
    inside[starts[(starts > 0) & (starts < n)] - 1] = False
    if (np.diff(t)[inside] < 0.0).any():
        raise ValueError("t_s: must be non-decreasing within each trip")
    out, values, mode, confidence = _classify(t, v, off, params)
    return TripModes(
        mode=mode,
        confidence=confidence,
        scored=mode == MODE_CAR,
        scores=pd.DataFrame(values, columns=list(MODE_NAMES)),
        features=pd.DataFrame(out, columns=list(FEATURE_NAMES)),
    )


def _classify(
    t: FloatArray, v: FloatArray, off: IntArray, params: ModeParams
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """Kernel features, scores, mode and confidence of checked trips (the arrays behind
    :class:`TripModes`)."""
    out = np.empty((off.shape[0] - 1, len(FEATURE_NAMES)))
    _mode_features(
        t, v, off, params.gap_s, params.accel_span_s, params.stop_speed_mps, params.stop_min_s, out
    )
    values = _scores(out, params)
    mode = np.argmax(values, axis=1).astype(np.int64)
    total = values.sum(axis=1)
    confidence = np.divide(
        values.max(axis=1, initial=0.0), total, out=np.full(total.shape, np.nan), where=total > 0
    )
    return out, values, mode, confidence


def classify_one_trip(
    t_s: FloatArray, speed_mps: FloatArray, *, params: ModeParams = DEFAULT_MODE_PARAMS
) -> tuple[int, float]:
    """Mode code and confidence of one trip, as :func:`classify_trips` finds them, for
    arrays it has already checked: the sorted times and kinematics' speeds of
    :func:`telematics.core.clean.clean_gps`'s and :func:`compute_kinematics`'s output
    (real-time scoring calls it per trip, where building the frames would cost more
    than the kernel)."""
    _, _, mode, confidence = _classify(
        t_s, speed_mps, np.array([0, t_s.shape[0]], dtype=np.int64), params
    )
    return int(mode[0]), float(confidence[0])
