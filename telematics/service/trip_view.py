"""What of a trip's speed the workbench shows: a coarse profile, and full resolution only
inside each event's evidence window.

Speed together with a place can show an offence (80 km/h in a 50 km/h street); pricing
needs neither beyond the events it prices, and the dispute of an event needs that event's
few seconds. So the trip page's speed chart holds one value per minute (a median, rounded,
that cannot be placed on the route: the route is drawn without times, see
`charts.route_resample`), and second-by-second speed appears only around an event, next
to the event's own position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
SPEED_BIN_S = 60.0
SPEED_STEP_KMH = 5.0
# A minute with less visible driving has no value: the few samples of a minute cut by a
# privacy zone would be a spot speed at a known place (the zone's edge).
MIN_BIN_COVER_S = 30.0
EVIDENCE_PAD_S = 10.0
EVIDENCE_MAX_S = 60.0  # of a long event (sustained speeding) only its first minute is traced
# Kinds whose dispute turns on the speed around them; a fatigue event is hours of driving
# without a break, disputed by its times alone.
TRACED_KINDS = frozenset({"braking", "acceleration", "cornering", "speeding", "phone_handling"})
KMH_PER_MPS = 3.6


@dataclass(frozen=True)
class SpeedProfile:
    minute: npt.NDArray[np.int64]  # minutes since the trip started, one per value
    speed_kmh: FloatArray  # the minute's median speed, rounded to SPEED_STEP_KMH


def _sorted_finite(t_s: FloatArray, speed_mps: FloatArray) -> tuple[FloatArray, FloatArray]:
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(speed_mps, dtype=np.float64)
    if t.shape != v.shape:
        raise ValueError(f"t_s has {t.size} values, speed_mps {v.size}")
    keep = np.isfinite(t) & np.isfinite(v)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def speed_profile(t_s: FloatArray, speed_mps: FloatArray, origin_s: float) -> SpeedProfile:
    """One value per minute since `origin_s` (the trip's start) in which at least
    MIN_BIN_COVER_S of the visible path was driven: the median speed, rounded to
    SPEED_STEP_KMH. A median, unlike a mean, does not integrate to the distance driven,
    so the minutes cannot be laid along the route."""
    t, v = _sorted_finite(t_s, speed_mps)
    if t.size == 0:
        return SpeedProfile(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
    minute = np.floor((t - origin_s) / SPEED_BIN_S).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(minute) != 0])
    ends = np.r_[starts[1:], t.size]
    kept = [(a, b) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
            if t[b - 1] - t[a] >= MIN_BIN_COVER_S]
    kmh = np.array([np.median(v[a:b]) * KMH_PER_MPS for a, b in kept], dtype=np.float64)
    return SpeedProfile(np.array([minute[a] for a, _ in kept], dtype=np.int64),
                        np.round(kmh / SPEED_STEP_KMH) * SPEED_STEP_KMH)


@dataclass(frozen=True)
class Evidence:
    """An event's speed second by second; times in seconds since the event's start."""

    from_s: float
    to_s: float
    t_s: FloatArray
    speed_kmh: FloatArray


def evidence_window(start_s: float, end_s: float) -> tuple[float, float]:
    """The stretch around an event traced at full resolution, in the path's clock."""
    return start_s - EVIDENCE_PAD_S, min(end_s, start_s + EVIDENCE_MAX_S) + EVIDENCE_PAD_S


def event_evidence(t_s: FloatArray, speed_mps: FloatArray, start_s: float,
                   end_s: float) -> Evidence:
    """The visible path's speeds inside the event's evidence window (none when the event
    lies in a privacy zone)."""
    t, v = _sorted_finite(t_s, speed_mps)
    lo, hi = evidence_window(start_s, end_s)
    inside = (t >= lo) & (t <= hi)
    return Evidence(lo - start_s, hi - start_s, t[inside] - start_s, v[inside] * KMH_PER_MPS)
