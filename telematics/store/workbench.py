"""SQL for the underwriter workbench and the driver view: premiums, plans, paths, queues."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import class_row

from telematics.store.trips import COUNTS_AGAINST_DRIVER, SUMMARY_COLUMNS, TripSummary

# Labels that take a trip out of pricing; a trip with one of them waits for a review.
EXCLUDING_LABELS = ("passenger", "transit", "not_me")
LABEL_REVIEW_ACTIONS = ("trip.label.review", "trip.label.accept", "trip.label.reject")


@dataclass(frozen=True)
class PremiumRow:
    premium_id: int
    policy_id: str
    period_start: date
    period_end: date
    kind: str
    plan_version: str
    amount: Decimal
    currency: str
    breakdown: dict[str, Any]
    inputs: dict[str, Any]
    code_version: str
    sha256: str
    created_at: datetime
    updated_at: datetime  # a re-priced period or a provisional premium is rewritten in place


PREMIUM_COLUMNS = ("premium_id, policy_id, period_start, period_end, kind, plan_version, amount,"
                   " currency, breakdown, inputs, code_version, sha256, created_at, updated_at")


@dataclass(frozen=True)
class PlanRow:
    version: str
    document: dict[str, Any]
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class PolicyRow:
    policy_id: str
    time_zone: str
    start_date: date
    end_date: date | None
    rating_factors: dict[str, Any]


@dataclass(frozen=True)
class TripPath:
    """A trip's privacy-trimmed positions: the only positions the workbench may show."""

    t_s: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    speed_mps: np.ndarray
    zone_start_m: float
    zone_end_m: float


def premiums_in_force(conn: psycopg.Connection[Any]) -> list[tuple[PremiumRow, Decimal]]:
    """Each policy's latest period premium (its provisional one while it has none) and the
    claims that occurred in its period."""
    with conn.cursor(row_factory=class_row(PremiumRow)) as cur:
        rows = cur.execute(
            f"SELECT DISTINCT ON (policy_id) {PREMIUM_COLUMNS} FROM premiums"
            " WHERE NOT pseudonymised"
            " ORDER BY policy_id, (kind = 'period') DESC, period_start DESC, updated_at DESC,"
            " premium_id DESC").fetchall()
    claims = dict(conn.execute(
        "SELECT p.premium_id, coalesce(sum(c.amount), 0) FROM premiums p"
        " JOIN claims c ON c.policy_id = p.policy_id AND c.occurred_at >= p.period_start"
        " AND c.occurred_at < p.period_end WHERE p.premium_id = ANY(%s) GROUP BY p.premium_id",
        ([r.premium_id for r in rows],)).fetchall())
    return [(r, Decimal(claims.get(r.premium_id, 0))) for r in rows]


def policy_premiums(conn: psycopg.Connection[Any], policy_id: str) -> list[PremiumRow]:
    """Every premium of the policy, oldest period first."""
    with conn.cursor(row_factory=class_row(PremiumRow)) as cur:
        return cur.execute(
            f"SELECT {PREMIUM_COLUMNS} FROM premiums WHERE policy_id = %s"
            " ORDER BY period_start, updated_at, premium_id", (policy_id,)).fetchall()


def get_premium(conn: psycopg.Connection[Any], premium_id: int) -> PremiumRow | None:
    with conn.cursor(row_factory=class_row(PremiumRow)) as cur:
        return cur.execute(f"SELECT {PREMIUM_COLUMNS} FROM premiums WHERE premium_id = %s",
                           (premium_id,)).fetchone()


def rating_plans(conn: psycopg.Connection[Any]) -> list[PlanRow]:
    """Published plans, the most recent (the one in force for new pricing) first."""
    with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        return cur.execute("SELECT version, document, sha256, created_at FROM rating_plans"
                           " ORDER BY created_at DESC, version DESC").fetchall()


def get_plan(conn: psycopg.Connection[Any], version: str) -> PlanRow | None:
    with conn.cursor(row_factory=class_row(PlanRow)) as cur:
        return cur.execute("SELECT version, document, sha256, created_at FROM rating_plans"
                           " WHERE version = %s", (version,)).fetchone()


def get_policy(conn: psycopg.Connection[Any], policy_id: str) -> PolicyRow | None:
    with conn.cursor(row_factory=class_row(PolicyRow)) as cur:
        return cur.execute("SELECT policy_id, time_zone, start_date, end_date, rating_factors"
                           " FROM policies WHERE policy_id = %s", (policy_id,)).fetchone()


def policy_claims(conn: psycopg.Connection[Any], policy_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT claim_id, occurred_at, amount FROM claims WHERE policy_id = %s"
                        " ORDER BY occurred_at", (policy_id,)).fetchall()
    return [{"claim_id": r[0], "occurred_at": r[1], "amount": r[2]} for r in rows]


# A trip's events counted (e.n, e.n_disputed) and counted by kind (e.kinds), for `trips t`.
_EVENT_COUNTS = (
    " LEFT JOIN LATERAL (SELECT sum(n)::int AS n, sum(n_disputed)::int AS n_disputed,"
    "   jsonb_object_agg(kind, n) AS kinds FROM (SELECT kind, count(*) AS n,"
    "   count(*) FILTER (WHERE disputed) AS n_disputed FROM events ev"
    "   WHERE ev.device_id = t.device_id AND ev.trip_id = t.trip_id GROUP BY kind) k) e ON true")


def trip_overview(conn: psycopg.Connection[Any], policy_id: str,
                  limit: int = 500) -> list[dict[str, Any]]:
    """The policy's trips, newest first, with distance, event counts and disputes."""
    rows = conn.execute(
        "SELECT t.device_id, t.trip_id, t.status, t.source, t.started_at, t.ended_at,"
        " t.label, t.label_set_at, t.transport_mode, f.distance_m, f.duration_s, f.scored,"
        " coalesce(e.n, 0), coalesce(e.n_disputed, 0), coalesce(e.kinds, '{}'::jsonb)"
        " FROM trips t LEFT JOIN trip_features f USING (device_id, trip_id)" + _EVENT_COUNTS +
        " WHERE t.policy_id = %s AND t.source <> 'obd_feed'"
        " ORDER BY t.started_at DESC NULLS LAST LIMIT %s", (policy_id, limit)).fetchall()
    names = ("device_id", "trip_id", "status", "source", "started_at", "ended_at", "label",
             "label_set_at", "transport_mode", "distance_m", "duration_s", "scored",
             "n_events", "n_disputed", "event_kinds")
    return [dict(zip(names, r, strict=True)) for r in rows]


def policy_trip(conn: psycopg.Connection[Any], policy_id: str, trip_id: str,
                device_id: str | None = None) -> TripSummary | None:
    """The policy's trip of that id, of `device_id` if it has one there (two devices of a
    policy, a phone and a dongle, may use the same trip id)."""
    with conn.cursor(row_factory=class_row(TripSummary)) as cur:
        return cur.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM trips WHERE policy_id = %s AND trip_id = %s"
            " ORDER BY device_id = %s DESC NULLS LAST, started_at LIMIT 1",
            (policy_id, trip_id, device_id)).fetchone()


def period_trips(conn: psycopg.Connection[Any], policy_id: str, period_start: date,
                 period_end: date) -> list[dict[str, Any]]:
    """The policy's trips started in [period_start, period_end) (days in the policy's time
    zone, as pricing cuts them), oldest first, with distance, event counts and whether the
    trip counts in the price (`counted`: scored and driven by the policyholder)."""
    rows = conn.execute(
        "SELECT t.device_id, t.trip_id, t.status, t.source, t.started_at, t.label,"
        " t.transport_mode, f.distance_m, f.duration_s, coalesce(f.scored, false),"
        f" coalesce(f.scored AND {COUNTS_AGAINST_DRIVER}, false),"
        " coalesce(e.n, 0), coalesce(e.n_disputed, 0), coalesce(e.kinds, '{}'::jsonb)"
        " FROM trips t JOIN policies p USING (policy_id)"
        " LEFT JOIN trip_features f USING (device_id, trip_id)" + _EVENT_COUNTS +
        " WHERE t.policy_id = %s AND t.source <> 'obd_feed'"
        " AND t.started_at >= (%s::date::timestamp AT TIME ZONE p.time_zone)"
        " AND t.started_at < (%s::date::timestamp AT TIME ZONE p.time_zone)"
        " ORDER BY t.started_at, t.device_id, t.trip_id",
        (policy_id, period_start, period_end)).fetchall()
    names = ("device_id", "trip_id", "status", "source", "started_at", "label",
             "transport_mode", "distance_m", "duration_s", "scored", "counted", "n_events",
             "n_disputed", "event_kinds")
    return [dict(zip(names, r, strict=True)) for r in rows]


def get_trip_path(conn: psycopg.Connection[Any], device_id: str, trip_id: str) -> TripPath | None:
    row = conn.execute("SELECT t_s, lat_deg, lon_deg, speed_mps, zone_start_m, zone_end_m"
                       " FROM trip_paths WHERE device_id = %s AND trip_id = %s",
                       (device_id, trip_id)).fetchone()
    if row is None:
        return None
    t_s, lat, lon, speed = (np.asarray(v, dtype=np.float64) for v in row[:4])
    return TripPath(t_s, lat, lon, speed, zone_start_m=float(row[4]), zone_end_m=float(row[5]))


def relabels_to_review(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Trips the driver took out of pricing since the last staff decision on them."""
    rows = conn.execute(
        "SELECT t.device_id, t.trip_id, t.policy_id, t.label, t.label_set_at, t.started_at,"
        " f.distance_m, a.detail->>'reason'"
        " FROM trips t LEFT JOIN trip_features f USING (device_id, trip_id)"
        " LEFT JOIN LATERAL (SELECT detail FROM audit_log l WHERE l.policy_id = t.policy_id"
        "   AND l.subject = t.trip_id AND l.action = 'trip.label'"
        "   ORDER BY l.audit_id DESC LIMIT 1) a ON true"
        " WHERE t.label = ANY(%s) AND NOT EXISTS (SELECT 1 FROM audit_log l"
        "   WHERE l.policy_id = t.policy_id AND l.subject = t.trip_id AND l.action = ANY(%s)"
        "   AND l.at >= t.label_set_at)"
        " ORDER BY t.label_set_at", (list(EXCLUDING_LABELS), list(LABEL_REVIEW_ACTIONS))).fetchall()
    names = ("device_id", "trip_id", "policy_id", "label", "label_set_at", "started_at",
             "distance_m", "reason")
    return [dict(zip(names, r, strict=True)) for r in rows]


def policy_audit(conn: psycopg.Connection[Any], policy_id: str,
                 limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT audit_id, at, actor, action, subject, detail FROM audit_log"
                        " WHERE policy_id = %s ORDER BY audit_id DESC LIMIT %s",
                        (policy_id, limit)).fetchall()
    names = ("audit_id", "at", "actor", "action", "subject", "detail")
    return [dict(zip(names, r, strict=True)) for r in rows]
