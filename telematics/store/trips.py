"""SQL for trips, their features and events, labels and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from telematics.store import privacy as privacy_sql

SCORED_STATUSES = ("scored", "unscored")

# The condition (on `trips t`) for a trip that counts against the driver: not labelled
# passenger, transit or "not me"; not a bus or train ride; and not a dongle's record of a
# drive the phone also recorded (a car with both would otherwise count its km twice: the
# phone's trip, with positions and the IMU, is the one that counts).
COUNTS_AGAINST_DRIVER = (
    "(t.label IS NULL OR t.label = 'driver')"
    " AND (t.transport_mode IS NULL OR t.transport_mode = 'car')"
    " AND NOT (t.source = 'obd' AND EXISTS (SELECT 1 FROM trips o"
    "  WHERE o.policy_id = t.policy_id AND o.source IN ('phone', 'gpx')"
    "  AND o.started_at < t.ended_at AND o.ended_at > t.started_at))")


@dataclass(frozen=True)
class TripSummary:
    """A trip as the pricing side sees it (the columns the role ubi_pricing may read)."""

    device_id: str
    trip_id: str
    policy_id: str
    status: str
    source: str
    started_at: datetime | None
    ended_at: datetime | None
    transport_mode: str | None
    mode_confidence: float | None
    label: str | None
    label_set_at: datetime | None


@dataclass(frozen=True)
class Trip(TripSummary):
    """A trip with its upload bookkeeping, which only the device side reads."""

    last_upload_at: datetime
    n_gps: int
    n_imu: int


SUMMARY_COLUMNS = ("device_id, trip_id, policy_id, status, source, started_at, ended_at,"
                   " transport_mode, mode_confidence, label, label_set_at")
TRIP_COLUMNS = f"{SUMMARY_COLUMNS}, last_upload_at, n_gps, n_imu"


def record_upload(conn: psycopg.Connection[Any], *, device_id: str, trip_id: str,
                  policy_id: str, source: str, first_us: int | None, last_us: int | None,
                  n_gps: int, n_imu: int) -> Trip:
    """Create the trip or widen it to the new samples. A late batch for a trip already scored
    sends it back to `closed`, so that it is scored again with every sample."""
    with conn.cursor(row_factory=class_row(Trip)) as cur:
        row = cur.execute(
            "INSERT INTO trips AS t (device_id, trip_id, policy_id, source, started_at, ended_at,"
            " n_gps, n_imu) VALUES (%(d)s, %(t)s, %(p)s, %(s)s,"
            " to_timestamp(%(a)s / 1e6), to_timestamp(%(b)s / 1e6), %(g)s, %(i)s)"
            " ON CONFLICT (device_id, trip_id) DO UPDATE SET"
            " started_at = LEAST(t.started_at, EXCLUDED.started_at),"
            " ended_at = GREATEST(t.ended_at, EXCLUDED.ended_at),"
            " n_gps = t.n_gps + EXCLUDED.n_gps, n_imu = t.n_imu + EXCLUDED.n_imu,"
            " last_upload_at = now(),"
            " status = CASE WHEN t.status IN ('scored', 'unscored', 'failed')"
            "   AND EXCLUDED.n_gps + EXCLUDED.n_imu > 0 THEN 'closed' ELSE t.status END"
            f" RETURNING {TRIP_COLUMNS}",
            {"d": device_id, "t": trip_id, "p": policy_id, "s": source, "a": first_us,
             "b": last_us, "g": n_gps, "i": n_imu},
        ).fetchone()
    assert row is not None
    return row


def policy_time_zone(conn: psycopg.Connection[Any], policy_id: str) -> str:
    row = conn.execute("SELECT time_zone FROM policies WHERE policy_id = %s",
                       (policy_id,)).fetchone()
    return str(row[0]) if row else "UTC"


def get_trip(conn: psycopg.Connection[Any], device_id: str, trip_id: str,
             *, for_update: bool = False) -> Trip | None:
    with conn.cursor(row_factory=class_row(Trip)) as cur:
        return cur.execute(
            f"SELECT {TRIP_COLUMNS} FROM trips WHERE device_id = %s AND trip_id = %s"
            + (" FOR UPDATE" if for_update else ""), (device_id, trip_id)).fetchone()


def lock_trip_with_consents(conn: psycopg.Connection[Any], device_id: str, trip_id: str,
                            policy_id: str) -> tuple[Trip | None, set[str]]:
    """The trip's row locked (``get_trip(for_update=True)``) and the categories the policy
    has consent for, for any purpose (``granted_categories``), in one round trip."""
    with conn.pipeline():
        trip = conn.cursor(row_factory=class_row(Trip)).execute(
            f"SELECT {TRIP_COLUMNS} FROM trips WHERE device_id = %s AND trip_id = %s"
            " FOR UPDATE", (device_id, trip_id))
        consents = conn.execute(privacy_sql.CURRENT_CONSENTS, {"p": policy_id})
    return trip.fetchone(), privacy_sql.granted_of(privacy_sql.consents_of(consents.fetchall()))


def get_trip_summary(conn: psycopg.Connection[Any], device_id: str, trip_id: str,
                     *, for_update: bool = False) -> TripSummary | None:
    with conn.cursor(row_factory=class_row(TripSummary)) as cur:
        return cur.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM trips WHERE device_id = %s AND trip_id = %s"
            + (" FOR UPDATE" if for_update else ""), (device_id, trip_id)).fetchone()


def find_policy_trip(conn: psycopg.Connection[Any], policy_id: str, trip_id: str) -> Trip | None:
    with conn.cursor(row_factory=class_row(Trip)) as cur:
        return cur.execute(
            f"SELECT {TRIP_COLUMNS} FROM trips WHERE policy_id = %s AND trip_id = %s"
            " ORDER BY started_at LIMIT 1", (policy_id, trip_id)).fetchone()


def list_policy_trips(conn: psycopg.Connection[Any], policy_id: str,
                      limit: int = 500) -> list[TripSummary]:
    with conn.cursor(row_factory=class_row(TripSummary)) as cur:
        return cur.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM trips WHERE policy_id = %s AND source <> 'obd_feed'"
            " ORDER BY started_at DESC NULLS LAST LIMIT %s", (policy_id, limit)).fetchall()


def set_status(conn: psycopg.Connection[Any], device_id: str, trip_id: str, status: str,
               transport_mode: str | None = None, mode_confidence: float | None = None) -> None:
    conn.execute(
        "UPDATE trips SET status = %s, transport_mode = COALESCE(%s, transport_mode),"
        " mode_confidence = COALESCE(%s, mode_confidence)"
        " WHERE device_id = %s AND trip_id = %s",
        (status, transport_mode, mode_confidence, device_id, trip_id))


def inactive_open_trips(conn: psycopg.Connection[Any], idle_s: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT device_id, trip_id FROM trips WHERE status = 'open' AND source <> 'obd_feed'"
        " AND last_upload_at < now() - make_interval(secs => %s)", (idle_s,)).fetchall()
    return [(r[0], r[1]) for r in rows]


def set_label(conn: psycopg.Connection[Any], device_id: str, trip_id: str,
              label: str | None) -> None:
    conn.execute("UPDATE trips SET label = %s, label_set_at = now()"
                 " WHERE device_id = %s AND trip_id = %s", (label, device_id, trip_id))


def replace_features(conn: psycopg.Connection[Any], *, device_id: str, trip_id: str,
                     policy_id: str, started_us: int, ended_us: int, scored: bool,
                     distance_m: float, duration_s: float, features: dict[str, Any],
                     events: list[dict[str, Any]], code_version: str) -> None:
    """Replace a trip's features and events: re-scoring never duplicates."""
    conn.execute("DELETE FROM events WHERE device_id = %s AND trip_id = %s", (device_id, trip_id))
    conn.execute(
        "INSERT INTO trip_features (device_id, trip_id, policy_id, started_at, ended_at, scored,"
        " distance_m, duration_s, features, code_version) VALUES (%s, %s, %s,"
        " to_timestamp(%s / 1e6), to_timestamp(%s / 1e6), %s, %s, %s, %s, %s)"
        " ON CONFLICT (device_id, trip_id) DO UPDATE SET started_at = EXCLUDED.started_at,"
        " ended_at = EXCLUDED.ended_at, scored = EXCLUDED.scored,"
        " distance_m = EXCLUDED.distance_m, duration_s = EXCLUDED.duration_s,"
        " features = EXCLUDED.features, computed_at = now(),"
        " code_version = EXCLUDED.code_version",
        (device_id, trip_id, policy_id, started_us, ended_us, scored, distance_m, duration_s,
         Jsonb(features), code_version))
    if events:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (device_id, trip_id, event_no, kind, severity, start_at,"
                " end_at, peak_value, speed_mps, lat_deg, lon_deg) VALUES (%s, %s, %s, %s, %s,"
                " to_timestamp(%s / 1e6), to_timestamp(%s / 1e6), %s, %s, %s, %s)",
                [(device_id, trip_id, i, e["kind"], e["severity"], e["start_us"], e["end_us"],
                  e["peak_value"], e.get("speed_mps"), e.get("lat_deg"), e.get("lon_deg"))
                 for i, e in enumerate(events)])


def get_features(conn: psycopg.Connection[Any], device_id: str,
                 trip_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT scored, distance_m, duration_s, features, computed_at, code_version"
        " FROM trip_features WHERE device_id = %s AND trip_id = %s",
        (device_id, trip_id)).fetchone()
    if row is None:
        return None
    return {"scored": row[0], "distance_m": row[1], "duration_s": row[2], "features": row[3],
            "computed_at": row[4].isoformat(), "code_version": row[5]}


def get_events(conn: psycopg.Connection[Any], device_id: str, trip_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT event_no, kind, severity, start_at, end_at, peak_value, speed_mps, lat_deg,"
        " lon_deg, disputed FROM events WHERE device_id = %s AND trip_id = %s ORDER BY event_no",
        (device_id, trip_id)).fetchall()
    return [{"event_no": r[0], "kind": r[1], "severity": r[2], "start": r[3].isoformat(),
             "end": r[4].isoformat(), "peak_value": r[5], "speed_mps": r[6], "lat_deg": r[7],
             "lon_deg": r[8], "disputed": r[9]} for r in rows]


def policy_trip_features(conn: psycopg.Connection[Any], policy_id: str, since: datetime,
                         until: datetime) -> list[tuple[str, str, float, float, dict[str, Any]]]:
    """Features of the policy's scored trips in [since, until) that count against the driver
    (`COUNTS_AGAINST_DRIVER`)."""
    rows = conn.execute(
        "SELECT f.device_id, f.trip_id, f.distance_m, f.duration_s, f.features"
        " FROM trip_features f JOIN trips t USING (device_id, trip_id)"
        " WHERE f.policy_id = %s AND f.scored AND f.started_at >= %s AND f.started_at < %s"
        f" AND {COUNTS_AGAINST_DRIVER} ORDER BY f.started_at",
        (policy_id, since, until)).fetchall()
    return [(r[0], r[1], float(r[2]), float(r[3]), r[4]) for r in rows]


def audit(conn: psycopg.Connection[Any], *, actor: str, action: str, policy_id: str | None,
          subject: str | None, detail: dict[str, Any]) -> None:
    conn.execute("INSERT INTO audit_log (actor, action, policy_id, subject, detail)"
                 " VALUES (%s, %s, %s, %s, %s)", (actor, action, policy_id, subject, Jsonb(detail)))
