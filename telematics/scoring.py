"""Real-time scoring: a closed trip's samples through the numba core into stored features."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from telematics.pipeline import TripResult, run_pipeline, run_trip_pipeline
from telematics.privacy import TripZones, draw_zone_radii_m
from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store.repository import GPS, IMU, read_samples, warm_up_encoder

CODE_VERSION = "core-2"
SCORE_WINDOW_DAYS = 30
# The stored GPS columns the core reads (besides the time).
CORE_GPS_COLUMNS = ("lat_deg", "lon_deg", "speed_mps", "accuracy_m", "speed_limit_mps")
EVENT_KINDS = ("braking", "acceleration", "cornering", "speeding", "fatigue", "phone_handling")


def warm_up() -> None:
    """Compile the kernels before the first request (numba compiles on first call)."""
    warm_up_encoder()
    n = 400
    t = 1_790_000_000.0 + np.arange(n, dtype=np.float64)
    gps = {"t_s": t, "lat_deg": 52.0 + np.arange(n) * 1e-4, "lon_deg": np.full(n, 4.0),
           "speed_mps": np.full(n, 11.0), "accuracy_m": np.full(n, 5.0),
           "speed_limit_mps": np.full(n, np.nan)}
    ti = t[0] + np.arange(n * 10) / 10.0
    imu = {"t_s": ti, "acc_x_mps2": np.zeros(ti.size), "acc_y_mps2": np.zeros(ti.size),
           "acc_z_mps2": np.full(ti.size, 9.81)}
    run_pipeline(gps, np.array([0, n]), imu=imu, imu_offsets=np.array([0, ti.size]),
                 now_s=float(t[-1]))


def _json_ready(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def trip_for_samples(gps: dict[str, np.ndarray], time_zone: str,
                     imu: dict[str, np.ndarray] | None = None, *,
                     phone_handling: bool = True, now_s: float | None = None) -> TripResult:
    """The core's features and events for one trip's stored samples (GPS, and the phone's
    IMU when there is one), as the trip's feature row and event columns: real-time
    scoring's path, the values of `run_pipeline` without its tables."""
    columns = {"t_s": gps["t_us"] / 1e6, "lat_deg": gps["lat_deg"], "lon_deg": gps["lon_deg"],
               "speed_mps": gps["speed_mps"], "accuracy_m": gps["accuracy_m"],
               "speed_limit_mps": gps["speed_limit_mps"]}
    imu_columns = None
    if imu is not None and imu["t_us"].size:
        imu_columns = {"t_s": imu["t_us"] / 1e6, **{
            k: imu[k] for k in ("acc_x_mps2", "acc_y_mps2", "acc_z_mps2", "gyr_x_radps",
                                "gyr_y_radps", "gyr_z_radps")}}
        for k in ("gyr_x_radps", "gyr_y_radps", "gyr_z_radps"):
            if not np.isfinite(imu_columns[k]).all():
                del imu_columns[k]  # the kernel takes a gyroscope whole or not at all
    now = time.time() if now_s is None else now_s
    return run_trip_pipeline(columns, imu=imu_columns, time_zone=time_zone, now_s=now,
                             phone_handling=phone_handling)


@dataclass(frozen=True)
class TripOutcome:
    """What is stored of one scored trip: its features, its events (positions inside the
    privacy zones blanked), whether it counts, and its transport mode."""

    features: dict[str, Any]
    events: list[dict[str, Any]]
    scored: bool
    mode: str
    mode_confidence: float
    distance_m: float
    duration_s: float

    @property
    def status(self) -> str:
        return "scored" if self.scored else "unscored"


def trip_outcome(row: Mapping[str, Any] | pd.Series,
                 events: pd.DataFrame | Mapping[str, np.ndarray],
                 zones: TripZones | None) -> TripOutcome:
    """One trip's row of the pipeline's features and its events (a table or its columns),
    ready to store. Real-time scoring and batch recomputation both store exactly this."""
    features = {str(k): _json_ready(v) for k, v in row.items() if k != "trip"}
    ev_lat = np.asarray(events["lat_deg"], dtype=np.float64)
    ev_lon = np.asarray(events["lon_deg"], dtype=np.float64)
    shown = (zones.visible(ev_lat, ev_lon) if zones is not None
             else np.zeros(ev_lat.size, dtype=np.bool_))
    ev_lat, ev_lon = np.where(shown, ev_lat, np.nan), np.where(shown, ev_lon, np.nan)
    start_us = np.round(np.asarray(events["start_t_s"], dtype=np.float64) * 1e6).astype(np.int64)
    end_us = np.round(np.asarray(events["end_t_s"], dtype=np.float64) * 1e6).astype(np.int64)
    stored = [
        {"kind": str(kind), "severity": str(sev), "start_us": int(a), "end_us": int(b),
         "peak_value": _json_ready(peak) or 0.0, "speed_mps": _json_ready(speed),
         "lat_deg": _json_ready(lat), "lon_deg": _json_ready(lon)}
        for kind, sev, a, b, peak, speed, lat, lon in zip(
            events["kind"], events["severity"], start_us, end_us, events["peak_value"],
            events["speed_mps"], ev_lat, ev_lon, strict=True)
    ]
    scored = bool(row["scored"]) and bool(row["mode_scored"])
    features["scored"] = scored
    return TripOutcome(features, stored, scored, str(row["mode"]),
                       float(row["mode_confidence"]), float(row["distance_m"]),
                       float(row["duration_s"]))


def score_trip(conn: psycopg.Connection[Any], device_id: str, trip_id: str, *,
               trip: trip_sql.Trip | None = None) -> dict[str, Any]:
    """Compute and store a trip's features and events (replacing earlier ones); return a
    summary. Runs inside the caller's transaction; ``trip`` is the trip's row when the
    caller has already locked it (an upload that recorded it), else it is locked here.

    Only what the policyholder consented to is processed: no location consent, no scoring;
    the IMU only with consent to use motion data for pricing, phone handling only with
    consent to use phone-use data for pricing (see ``privacy_sql.scoring_categories``).
    Trips the transport-mode classifier does not take for a car are stored unscored.
    """
    if trip is None:
        trip = trip_sql.get_trip(conn, device_id, trip_id, for_update=True)
        if trip is None:
            raise LookupError(f"no trip {trip_id!r} of device {device_id!r}")
    context = privacy_sql.scoring_context(conn, trip.policy_id, device_id, trip_id)
    granted = context.categories
    if "location" not in granted:
        trip_sql.set_status(conn, device_id, trip_id, "unscored")
        return {"status": "unscored", "reason": "location consent withdrawn"}
    gps = read_samples(conn, GPS, device_id, trip_id, columns=CORE_GPS_COLUMNS)
    if gps["t_us"].size == 0:
        trip_sql.set_status(conn, device_id, trip_id, "unscored")
        return {"status": "unscored", "reason": "no GPS samples"}
    # n_imu counts every IMU sample an upload stored: without any, there is none to read.
    imu = (read_samples(conn, IMU, device_id, trip_id)
           if "motion" in granted and trip.n_imu > 0 else None)
    result = trip_for_samples(gps, context.time_zone, imu,
                              phone_handling="phone_use" in granted)
    offset = (privacy_sql.zone_offset(conn, trip.policy_id) if context.offset is None
              else context.offset)
    radii = draw_zone_radii_m(offset) if context.radii_m is None else context.radii_m
    zones = TripZones.of_trip(gps["lat_deg"], gps["lon_deg"], offset, radii)
    visible = (zones.visible(gps["lat_deg"], gps["lon_deg"]) if zones is not None
               else np.zeros(gps["t_us"].size, dtype=np.bool_))
    out = trip_outcome(result.features, result.events, zones)
    with conn.pipeline():  # the writes in one round trip to the database
        privacy_sql.replace_trip_path(
            conn, device_id=device_id, trip_id=trip_id, policy_id=trip.policy_id,
            t_s=gps["t_us"][visible] / 1e6, lat_deg=gps["lat_deg"][visible],
            lon_deg=gps["lon_deg"][visible], speed_mps=gps["speed_mps"][visible], radii_m=radii)
        trip_sql.replace_features(
            conn, device_id=device_id, trip_id=trip_id, policy_id=trip.policy_id,
            started_us=int(gps["t_us"][0]), ended_us=int(gps["t_us"][-1]), scored=out.scored,
            distance_m=out.distance_m, duration_s=out.duration_s, features=out.features,
            events=out.events, code_version=CODE_VERSION)
        trip_sql.set_status(conn, device_id, trip_id, out.status, out.mode, out.mode_confidence)
    summary = {"status": out.status, "transport_mode": out.mode,
               "mode_confidence": round(out.mode_confidence, 3),
               "distance_m": out.distance_m, "duration_s": out.duration_s,
               "events": len(out.events),
               "imu": bool(result.features["imu_oriented_share"] > 0)}
    if out.mode != "car":
        summary["reason"] = f"classified as {out.mode.replace('_', '/')}: not scored"
    return summary


def policy_summary(conn: psycopg.Connection[Any], policy_id: str,
                   now: datetime | None = None) -> dict[str, Any]:
    """The policy's driving over the trailing window: km, time and event rates of the trips
    that count against the driver."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=SCORE_WINDOW_DAYS)
    rows = trip_sql.policy_trip_features(conn, policy_id, since, now)
    frame = pd.DataFrame([r[4] for r in rows])
    distance_km = sum(r[2] for r in rows) / 1000.0
    summary: dict[str, Any] = {"policy_id": policy_id, "window_days": SCORE_WINDOW_DAYS,
                               "since": since.isoformat(), "until": now.isoformat(),
                               "trips": len(rows), "distance_km": round(distance_km, 3),
                               "driving_h": round(sum(r[3] for r in rows) / 3600.0, 3)}
    if frame.empty:
        summary["rates"] = {}
        return summary
    per_100km = 100.0 / distance_km if distance_km > 0 else float("nan")
    counts = {kind: float(frame[f"n_{kind}"].sum()) for kind in EVENT_KINDS
              if f"n_{kind}" in frame}
    rates = {f"{k}_per_100km": _json_ready(v * per_100km) for k, v in counts.items()}
    for share, dist in (("night_share", "night_distance_m"),):
        if dist in frame:
            rates[share] = _json_ready(frame[dist].sum() / 1000.0 / distance_km
                                       if distance_km > 0 else float("nan"))
    if "speeding_s" in frame and "moving_s" in frame:
        moving = frame["moving_s"].sum()
        rates["speeding_share"] = _json_ready(frame["speeding_s"].sum() / moving
                                              if moving > 0 else float("nan"))
    summary["rates"] = rates
    return summary


def policy_score(conn: psycopg.Connection[Any], policy_id: str) -> dict[str, Any]:
    """The summary the driver and the underwriter see. Without consent to use location data
    for pricing, no driving data is used and the plan's missing-data rule applies."""
    from telematics.provisional import flush

    flush(conn, policy_id)  # the premium shown includes every trip scored so far
    granted = privacy_sql.granted_categories(conn, policy_id, "pricing")
    summary = policy_summary(conn, policy_id)
    summary["consent_for_pricing"] = {c: c in granted for c in privacy_sql.CATEGORIES}
    if "location" in granted:
        summary["basis"] = "driving"
    else:
        summary.update(basis="missing_data_rule", trips=0, distance_km=0.0, driving_h=0.0,
                       rates={})
    summary["provisional_premium"] = latest_provisional_premium(conn, policy_id)
    return summary


def latest_provisional_premium(conn: psycopg.Connection[Any],
                               policy_id: str) -> dict[str, Any] | None:
    """The month-so-far premium recomputed after the policy's latest scored trip or label
    change (None before the first), with what changed and the coaching advice."""
    row = conn.execute(
        "SELECT period_start, period_end, plan_version, amount, currency,"
        " breakdown -> 'change_text', breakdown -> 'coaching', updated_at FROM premiums"
        " WHERE policy_id = %s AND kind = 'provisional'"
        " ORDER BY period_start DESC, updated_at DESC LIMIT 1", (policy_id,)).fetchone()
    if row is None:
        return None
    return {"period_start": row[0].isoformat(), "period_end": row[1].isoformat(),
            "plan_version": row[2], "amount": str(row[3]), "currency": row[4],
            "change": row[5], "coaching": row[6], "computed_at": row[7].isoformat()}
