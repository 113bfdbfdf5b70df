"""Trips in a dongle's continuous OBD feed, found and scored as the feed arrives.

A dongle uploads one feed (its own id) that may hold many trips. After every upload the
feed's stored samples go through the core's OBD trip finder (ignition where the dongle
reports it, motion otherwise); each finished trip becomes a trip of its own
(``<feed>#<start µs>``, ``source = 'obd'``) with features and events from speed alone:
distance (odometer, else integrated speed), time, night and rush-hour km, harsh braking and
acceleration from the speed derivative, speeding against the absolute fallback limit (an
OBD feed carries no posted limits). A trip still running at the end of the feed is scored
once samples after it arrive. Re-scoring replaces, so late or repeated feed uploads never
double-count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import psycopg

from telematics.core.events import detect_threshold_events
from telematics.core.obd import DEFAULT_OBD_PARAMS, find_obd_trips
from telematics.core.params import DEFAULT_PARAMS, GpsParams
from telematics.core.timezones import utc_offsets_s
from telematics.store import trips as trip_sql
from telematics.store.pgcopy import PG_EPOCH_US

CODE_VERSION = "obd-1"


def obd_trip_id(feed_id: str, start_us: int) -> str:
    return f"{feed_id}#{start_us}"


def read_feed(conn: psycopg.Connection[Any], device_id: str,
              feed_id: str) -> dict[str, np.ndarray]:
    """The feed's samples in time order; unknown values (and unknown ignition) as NaN."""
    # Each column aggregated into one bytea of big-endian values: numpy decodes a feed of
    # days of samples at once, where Python would convert every value of every row.
    row = conn.execute(
        "SELECT string_agg(timestamptz_send(time), ''::bytea),"
        " string_agg(int8send(seq), ''::bytea),"
        " string_agg(float8send(coalesce(speed_mps, 'NaN')), ''::bytea),"
        " string_agg(float8send(coalesce(odometer_m, 'NaN')), ''::bytea),"
        " string_agg(float8send(CASE WHEN ignition IS NULL THEN 'NaN'"
        "   WHEN ignition THEN 1.0 ELSE 0.0 END), ''::bytea)"
        " FROM obd_samples WHERE device_id = %s AND trip_id = %s",
        (device_id, feed_id), binary=True).fetchone()
    if row is None or row[0] is None:
        return {"t_us": np.zeros(0, dtype=np.int64), "speed_mps": np.zeros(0),
                "odometer_m": np.zeros(0), "ignition": np.zeros(0)}
    time_pg_us, seq = (np.frombuffer(b, dtype=">i8").astype(np.int64) for b in row[:2])
    order = np.lexsort((seq, time_pg_us))  # as ORDER BY time, seq ((time, seq) is unique)
    speed, odometer, ignition = (np.frombuffer(b, dtype=">f8").astype(np.float64)[order]
                                 for b in row[2:])
    return {"t_us": time_pg_us[order] + PG_EPOCH_US, "speed_mps": speed,
            "odometer_m": odometer, "ignition": ignition}


def _in_bands(hour: np.ndarray, bands: tuple[tuple[float, float], ...]) -> np.ndarray:
    inside = np.zeros(hour.shape, dtype=np.bool_)
    for start, end in bands:
        inside |= ((hour >= start) & (hour < end)) if start < end else ((hour >= start)
                                                                         | (hour < end))
    return inside


def obd_trip_features(t_s: np.ndarray, speed_mps: np.ndarray, time_zone: str,
                      dist_m: float, params: GpsParams = DEFAULT_PARAMS
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Features and events of one OBD trip from its speed series (1 Hz or so)."""
    n = t_s.size
    dt = np.diff(t_s)
    v = np.where(np.isfinite(speed_mps), speed_mps, np.nan)
    step_ok = (dt > 0) & (dt <= params.gap_s) & np.isfinite(v[:-1]) & np.isfinite(v[1:])
    step_v = np.where(step_ok, 0.5 * (v[:-1] + v[1:]), 0.0)
    step_d = np.where(step_ok, step_v * dt, 0.0)
    moving = step_ok & (step_v >= params.moving_speed_mps)
    mid = 0.5 * (t_s[:-1] + t_s[1:]) if n > 1 else np.zeros(0)
    offsets = np.array([0, mid.size], dtype=np.int64)
    local_h = ((mid + utc_offsets_s(mid, offsets, time_zone, math.inf)) % 86_400.0) / 3600.0
    weekday = ((np.floor((mid + utc_offsets_s(mid, offsets, time_zone, math.inf)) / 86_400.0)
                .astype(np.int64) + 3) % 7) < 5  # 1970-01-01 was a Thursday (3)
    night = _in_bands(local_h, ((params.night_start_h, params.night_end_h),))
    rush = _in_bands(local_h, ((params.rush_morning_start_h, params.rush_morning_end_h),
                                (params.rush_evening_start_h, params.rush_evening_end_h))) & weekday
    speed_sum = float(step_d.sum())
    scale = dist_m / speed_sum if speed_sum > 0 and math.isfinite(dist_m) else 1.0

    events: list[dict[str, Any]] = []
    if n > 2:
        accel = np.full(n, np.nan)
        accel[:-1] = np.where(step_ok, (v[1:] - v[:-1]) / np.where(dt > 0, dt, 1.0), np.nan)
        t_strict = t_s.astype(np.float64)
        for kind, threshold, direction in (
                ("braking", -params.brake_harsh_mps2, "below"),
                ("acceleration", params.accel_harsh_mps2, "above")):
            found = detect_threshold_events(
                t_strict, accel, threshold=threshold, direction=direction,  # type: ignore[arg-type]
                min_duration_s=params.harsh_min_duration_s, merge_gap_s=params.harsh_merge_s,
                max_gap_s=params.gap_s)
            for a, b, p, peak in zip(found.start_t_s, found.end_t_s, found.peak_idx,
                                     found.peak_value, strict=True):
                events.append({"kind": kind, "severity": "medium", "start_us": round(a * 1e6),
                               "end_us": round(b * 1e6), "peak_value": float(peak),
                               "speed_mps": float(v[p]), "lat_deg": None, "lon_deg": None})
        limit = params.speeding_fallback_limit_mps + params.speeding_tolerance_mps
        fast = detect_threshold_events(
            t_strict, v, threshold=limit, direction="above",
            min_duration_s=params.speeding_min_duration_s,
            merge_gap_s=params.speeding_merge_s, max_gap_s=params.gap_s)
        for a, b, peak in zip(fast.start_t_s, fast.end_t_s, fast.peak_value, strict=True):
            events.append({"kind": "speeding", "severity": "medium", "start_us": round(a * 1e6),
                           "end_us": round(b * 1e6), "peak_value": float(peak),
                           "speed_mps": float(peak), "lat_deg": None, "lon_deg": None})
    events.sort(key=lambda e: (e["start_us"], e["kind"]))
    duration = float(t_s[-1] - t_s[0]) if n else 0.0
    moving_s = float(dt[moving].sum()) if n > 1 else 0.0
    distance = float(dist_m) if math.isfinite(dist_m) else speed_sum
    counts = {k: sum(1 for e in events if e["kind"] == k)
              for k in ("braking", "acceleration", "speeding")}
    speeding_s = sum((e["end_us"] - e["start_us"]) / 1e6 for e in events
                     if e["kind"] == "speeding")
    per_100km = 100_000.0 / distance if distance > 0 else math.nan
    finite_v = v[np.isfinite(v)]
    features: dict[str, Any] = {
        "source": "obd", "distance_m": distance, "speed_distance_m": speed_sum,
        "duration_s": duration, "moving_s": moving_s, "idle_s": max(duration - moving_s, 0.0),
        "night_distance_m": float(step_d[night].sum()) * scale,
        "night_s": float(dt[night & step_ok].sum()) if n > 1 else 0.0,
        "rush_distance_m": float(step_d[rush].sum()) * scale,
        "speed_max_mps": float(finite_v.max()) if finite_v.size else None,
        "speed_mean_mps": speed_sum / moving_s if moving_s > 0 else None,
        "speeding_s": speeding_s,
        "speeding_share": speeding_s / moving_s if moving_s > 0 else None,
        "coverage_share": float(dt[step_ok].sum()) / duration if duration > 0 else 0.0,
    }
    for kind, count in counts.items():
        features[f"n_{kind}"] = count
        features[f"{kind}_per_100km"] = count * per_100km if distance > 0 else None
    features["scored"] = bool(distance >= params.min_trip_distance_m
                              and duration >= params.min_trip_duration_s)
    return features, events


def score_obd_feed(conn: psycopg.Connection[Any], device_id: str, feed_id: str,
                   policy_id: str, time_zone: str) -> list[dict[str, Any]]:
    """Find the feed's trips and (re)store each finished one; return their summaries.

    Runs in the caller's transaction. Labels set on earlier versions of a trip stay.
    """
    feed = read_feed(conn, device_id, feed_id)
    n = feed["t_us"].size
    if n < 2:
        return []
    t_s = feed["t_us"] / 1e6
    found = find_obd_trips(t_s, feed["speed_mps"] * 3.6, ignition=feed["ignition"],
                           odometer_km=feed["odometer_m"] / 1000.0)
    summaries: list[dict[str, Any]] = []
    found_ids = [obd_trip_id(feed_id, int(feed["t_us"][a])) for a in found.start_index]
    _drop_superseded(conn, device_id, feed_id, found_ids)
    # Each trip's writes go together; only record_upload's answer waits for the server.
    with conn.pipeline():
        for k in range(found.start_index.size):
            a, b = int(found.start_index[k]), int(found.end_index[k])
            # Finished: the ignition went off after it, or the feed runs on long enough
            # after it that the trip finder would have seen it continue.
            finished = bool((feed["ignition"][b:] == 0.0).any()
                            or t_s[n - 1] - t_s[b - 1] >= DEFAULT_OBD_PARAMS.stop_min_s)
            start_us, end_us = int(feed["t_us"][a]), int(feed["t_us"][b - 1])
            trip_id = obd_trip_id(feed_id, start_us)
            trip_sql.record_upload(conn, device_id=device_id, trip_id=trip_id, policy_id=policy_id,
                                   source="obd", first_us=start_us, last_us=end_us, n_gps=0,
                                   n_imu=0)
            conn.execute("UPDATE trips SET feed_id = %s WHERE device_id = %s AND trip_id = %s",
                         (feed_id, device_id, trip_id))
            if not finished:
                summaries.append({"trip_id": trip_id, "status": "open"})
                continue
            features, events = obd_trip_features(t_s[a:b], feed["speed_mps"][a:b], time_zone,
                                                 float(found.dist_m[k]))
            features["odometer_distance_m"] = _finite_or_none(found.odometer_dist_m[k])
            features["by_ignition"] = bool(found.by_ignition[k])
            scored = bool(features["scored"])
            trip_sql.replace_features(
                conn, device_id=device_id, trip_id=trip_id, policy_id=policy_id,
                started_us=start_us, ended_us=end_us, scored=scored,
                distance_m=float(features["distance_m"]), duration_s=float(features["duration_s"]),
                features=features, events=events, code_version=CODE_VERSION)
            status = "scored" if scored else "unscored"
            trip_sql.set_status(conn, device_id, trip_id, status, "car", None)
            summaries.append({"trip_id": trip_id, "status": status,
                              "distance_m": round(float(features["distance_m"]), 1),
                              "events": len(events)})
    return summaries


def _drop_superseded(conn: psycopg.Connection[Any], device_id: str, feed_id: str,
                     keep: list[str]) -> None:
    """Forget trips of this feed that a later upload merged or moved (their start changed)."""
    stale = [r[0] for r in conn.execute(
        "SELECT trip_id FROM trips WHERE device_id = %s AND feed_id = %s"
        " AND NOT (trip_id = ANY(%s))", (device_id, feed_id, keep)).fetchall()]
    for table in ("events", "trip_features", "trips"):
        conn.execute(f"DELETE FROM {table} WHERE device_id = %s AND trip_id = ANY(%s)",
                     (device_id, stale))


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
