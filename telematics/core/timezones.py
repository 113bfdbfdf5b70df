"""UTC offsets per sample from a policy's IANA time zone, daylight-saving changes included."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from telematics.core.checks import FloatArray, IntArray

# Offsets are probed every 6 hours and each change is bisected to the second. Real zones
# change offset at most a few times a year, months apart, never twice within 6 hours.
_PROBE_S = 6 * 3600
_YEAR_MIN = 1970
_YEAR_MAX = 2200
# A trip with one offset at both ends that lasts less than this cannot hold a change and
# its reversal; longer ones are looked up sample by sample.
_SAME_OFFSET_SPAN_S = 86400.0


# The longest IANA names are about 30 characters; anything far longer is not a zone and
# would reach the file system as an over-long path (OSError) on the way to saying so.
_ZONE_NAME_MAX = 64


@functools.lru_cache(maxsize=1024)
def iana_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called ``name``; ValueError naming the field when there is none."""
    if not isinstance(name, str) or not 0 < len(name) <= _ZONE_NAME_MAX:
        raise ValueError(f"time_zone: {str(name)[:_ZONE_NAME_MAX]!r}... is not an IANA time zone")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        raise ValueError(f"time_zone: {name!r} is not an IANA time zone") from exc


def _offset_at(zone: zoneinfo.ZoneInfo, t_s: int) -> float:
    offset = datetime.fromtimestamp(t_s, tz=UTC).astimezone(zone).utcoffset()
    return 0.0 if offset is None else offset.total_seconds()


@functools.lru_cache(maxsize=4096)
def _year_table(name: str, year: int) -> tuple[FloatArray, FloatArray]:
    """(change times, offsets from then on) for one UTC calendar year; the first entry is
    the start of the year with the offset in force then."""
    zone = iana_zone(name)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    times = [float(start)]
    offsets = [_offset_at(zone, start)]
    for probe in range(start + _PROBE_S, end + _PROBE_S, _PROBE_S):
        probe = min(probe, end)
        after = _offset_at(zone, probe)
        if after != offsets[-1]:
            lo, hi = probe - _PROBE_S, probe  # offset changes in (lo, hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_at(zone, mid) == offsets[-1]:
                    lo = mid
                else:
                    hi = mid
            times.append(float(hi))
            offsets.append(after)
    return np.array(times), np.array(offsets)


def _lookup(name: str, t_s: FloatArray) -> FloatArray:
    """Offsets of ``name`` at each time (clipped to the years the tables cover)."""
    years = t_s.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    years = np.clip(years, _YEAR_MIN, _YEAR_MAX)
    out = np.empty(t_s.shape[0])
    for year in np.unique(years):
        sel = years == year
        times, offsets = _year_table(name, int(year))
        pos = np.searchsorted(times, t_s[sel], side="right") - 1
        out[sel] = offsets[np.maximum(pos, 0)]
    return out


def utc_offsets_s(
    t_s: FloatArray, offsets: IntArray, time_zone: str | Sequence[str], t_max_s: float
) -> FloatArray:
    """Seconds to add to UTC ``t_s`` to get local wall time, per sample.

    ``time_zone`` is one IANA name for all trips or one per trip; trips keeping one
    offset from start to end (the usual case) are looked up at their ends only. Times
    after ``t_max_s`` (fixes cleaning will drop as far-future) are looked up at it.
    """
    n_trips = offsets.shape[0] - 1
    zones = [time_zone] * n_trips if isinstance(time_zone, str) else list(time_zone)
    if len(zones) != n_trips:
        raise ValueError(f"time_zone: {len(zones)} zones for {n_trips} trips")
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    if t_s.shape[0] == 0:
        for name in set(zones):
            iana_zone(name)
        return np.empty(0)
    # Only the looked-up times are clipped: clipping the whole column costs more than
    # the rest of this function for a batch of short trips.
    start = np.clip(t_s[np.minimum(offsets[:-1], t_s.shape[0] - 1)], 0.0, t_max_s)
    end = np.clip(t_s[np.maximum(offsets[1:] - 1, 0)], 0.0, t_max_s)
    trip_offset = np.zeros(n_trips)
    varying = np.zeros(n_trips, dtype=bool)
    names = {time_zone: None} if isinstance(time_zone, str) else dict.fromkeys(zones)
    zone_of_trip = None if isinstance(time_zone, str) else np.array(zones, dtype=object)
    for name in names:
        iana_zone(name)
        trips = nonempty if zone_of_trip is None else nonempty & (zone_of_trip == name)
        first = _lookup(name, start[trips])
        last = _lookup(name, end[trips])
        trip_offset[trips] = first
        varying[trips] = (first != last) | (end[trips] - start[trips] > _SAME_OFFSET_SPAN_S)
    out = np.repeat(trip_offset, lengths)
    for k in np.flatnonzero(varying):
        s, e = offsets[k], offsets[k + 1]
        out[s:e] = _lookup(zones[k], np.clip(t_s[s:e], 0.0, t_max_s))
    return out
