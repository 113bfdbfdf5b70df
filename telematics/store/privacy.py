"""SQL for consent, privacy zones, human review, retention, export and erasure."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from telematics.privacy import ZoneOffset
from telematics.store.pgcopy import Float8Array

CATEGORIES = ("location", "motion", "phone_use", "obd")
PURPOSES = ("pricing", "coaching", "claims")
RAW_TABLES = ("gps_samples", "imu_samples", "obd_samples")


def record_consent(conn: psycopg.Connection[Any], policy_id: str, category: str, purpose: str,
                   granted: bool, text_version: str) -> datetime:
    row = conn.execute(
        "INSERT INTO consents (policy_id, category, purpose, granted, text_version)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING at",
        (policy_id, category, purpose, granted, text_version)).fetchone()
    assert row is not None
    return row[0]


def current_consents(conn: psycopg.Connection[Any], policy_id: str) -> dict[tuple[str, str],
                                                                           dict[str, Any]]:
    """The latest decision per (category, purpose); absent means never granted."""
    rows = conn.execute(CURRENT_CONSENTS, {"p": policy_id}).fetchall()
    return consents_of(rows)


# The latest decision per (category, purpose) of the policy `%(p)s`.
CURRENT_CONSENTS = (
    "SELECT DISTINCT ON (category, purpose) category, purpose, granted, text_version, at"
    " FROM consents WHERE policy_id = %(p)s"
    " ORDER BY category, purpose, at DESC, consent_id DESC")


def consents_of(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[str, str], dict[str, Any]]:
    """`current_consents` from the rows of `CURRENT_CONSENTS`."""
    return {(r[0], r[1]): {"granted": r[2], "text_version": r[3], "at": r[4]} for r in rows}


def granted_of(consents: dict[tuple[str, str], dict[str, Any]],
               purpose: str | None = None) -> set[str]:
    """`granted_categories` from `current_consents`."""
    return {cat for (cat, pur), c in consents.items()
            if c["granted"] and (purpose is None or pur == purpose)}


def granted_categories(conn: psycopg.Connection[Any], policy_id: str,
                       purpose: str | None = None) -> set[str]:
    """Categories with consent for `purpose` (or for any purpose when None)."""
    return granted_of(current_consents(conn, policy_id), purpose)


# Trip features feed the price, so the categories they are computed from need consent for
# pricing; location may also be processed for coaching alone (rating then ignores the trip's
# behaviour and applies the plan's missing-data rule, see telematics.rating).
PRICED_CATEGORIES = ("motion", "phone_use")


def scoring_categories(conn: psycopg.Connection[Any], policy_id: str) -> set[str]:
    """The categories a trip of the policy may be scored from now: location consented for
    any purpose, motion and phone use only for pricing."""
    consents = current_consents(conn, policy_id)
    return _scoring_of((cat, pur) for (cat, pur), c in consents.items() if c["granted"])


def _scoring_of(granted: Iterable[tuple[str, str]]) -> set[str]:
    """`scoring_categories` from the granted (category, purpose) decisions."""
    return {cat for cat, pur in granted if cat not in PRICED_CATEGORIES or pur == "pricing"}


@dataclass(frozen=True)
class ScoringContext:
    """What scoring a trip reads besides its samples: the policy's time zone, the
    categories it may be scored from (`scoring_categories`), its privacy-zone offset and
    the trip's zone radii (None where not drawn yet)."""

    time_zone: str
    categories: set[str]
    offset: ZoneOffset | None
    radii_m: tuple[float, float] | None


def scoring_context(conn: psycopg.Connection[Any], policy_id: str, device_id: str,
                    trip_id: str) -> ScoringContext:
    """The `ScoringContext` of a trip, in one round trip (the consents as in
    `current_consents`; a policy without a row scores in UTC, as `policy_time_zone`)."""
    row = conn.execute(
        "SELECT (SELECT time_zone FROM policies WHERE policy_id = %(p)s),"
        f" ARRAY(SELECT ARRAY[category, purpose] FROM ({CURRENT_CONSENTS}) c WHERE granted),"
        " (SELECT ARRAY[offset_east_m, offset_north_m] FROM privacy_keys"
        "   WHERE policy_id = %(p)s),"
        " (SELECT ARRAY[zone_start_m, zone_end_m] FROM trip_paths"
        "   WHERE device_id = %(d)s AND trip_id = %(t)s)",
        {"p": policy_id, "d": device_id, "t": trip_id}).fetchone()
    assert row is not None
    time_zone, granted, offset, radii = row
    return ScoringContext(
        "UTC" if time_zone is None else str(time_zone),
        _scoring_of((str(c), str(p)) for c, p in granted),
        None if offset is None else ZoneOffset(float(offset[0]), float(offset[1])),
        None if radii is None else (float(radii[0]), float(radii[1])))


# --- separation: what the pricing side never reads ------------------------------------------

# Raw samples (positions, motion, engine data), credentials, idempotency records and the
# privacy-zone keys: the pricing side's role has no read access to any of them.
PRICING_FORBIDDEN_TABLES = (*RAW_TABLES, "privacy_keys", "api_tokens", "idempotency_keys")
PRICING_FORBIDDEN_COLUMNS = (("devices", "api_key_hash"),)


class PricingRoleError(RuntimeError):
    """The pricing side's connection can read what pricing must not; names what and who."""


def check_pricing_role(conn: psycopg.Connection[Any]) -> None:
    """Refuse a new pricing-side connection whose role can read a raw sample table, a
    credential or a privacy-zone key (the main role or a superuser given by mistake).

    A refused connection is closed; an accepted one is left idle (the transaction the
    check opens is ended), as a pool's `configure` callback must leave it."""
    tables = list(PRICING_FORBIDDEN_TABLES)
    columns = [f"{table}.{column}" for table, column in PRICING_FORBIDDEN_COLUMNS]
    row = conn.execute(
        "SELECT current_user, array(SELECT t FROM unnest(%s::text[]) t"
        "   WHERE has_any_column_privilege(t, 'SELECT')"
        " UNION ALL SELECT c FROM unnest(%s::text[]) c"
        "   WHERE has_column_privilege(split_part(c, '.', 1), split_part(c, '.', 2), 'SELECT'))",
        (tables, columns)).fetchone()
    if not conn.autocommit:
        conn.rollback()
    assert row is not None
    user, readable = row
    if readable:
        conn.close()
        raise PricingRoleError(
            f"the pricing side connects as '{user}', which can read {', '.join(readable)}; "
            "it must connect as the role ubi_pricing (see UBI_PRICING_DATABASE_URL)")


def connect_pricing(url: str) -> psycopg.Connection[Any]:
    """A connection for the pricing side, refused by `check_pricing_role` if its role can
    read raw samples or secrets."""
    conn = psycopg.connect(url)
    try:
        check_pricing_role(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def zone_offset(conn: psycopg.Connection[Any], policy_id: str) -> ZoneOffset:
    """The policy's privacy-zone offset, drawn once and kept."""
    row = conn.execute("SELECT offset_east_m, offset_north_m FROM privacy_keys"
                       " WHERE policy_id = %s", (policy_id,)).fetchone()
    if row is not None:
        return ZoneOffset(float(row[0]), float(row[1]))
    drawn = ZoneOffset.draw()
    conn.execute("INSERT INTO privacy_keys (policy_id, offset_east_m, offset_north_m)"
                 " VALUES (%s, %s, %s) ON CONFLICT (policy_id) DO NOTHING",
                 (policy_id, drawn.east_m, drawn.north_m))
    return zone_offset(conn, policy_id)


def trip_zone_radii(conn: psycopg.Connection[Any], device_id: str,
                    trip_id: str) -> tuple[float, float] | None:
    row = conn.execute("SELECT zone_start_m, zone_end_m FROM trip_paths"
                       " WHERE device_id = %s AND trip_id = %s", (device_id, trip_id)).fetchone()
    return (float(row[0]), float(row[1])) if row else None


def replace_trip_path(conn: psycopg.Connection[Any], *, device_id: str, trip_id: str,
                      policy_id: str, t_s: np.ndarray, lat_deg: np.ndarray,
                      lon_deg: np.ndarray, speed_mps: np.ndarray,
                      radii_m: tuple[float, float]) -> None:
    # The arrays go in binary, encoded by numpy (`Float8Array`): a float list's dump
    # costs Python work per element, more than the rest of the write.
    conn.execute(
        "INSERT INTO trip_paths (device_id, trip_id, policy_id, t_s, lat_deg, lon_deg,"
        " speed_mps, zone_start_m, zone_end_m) VALUES (%s, %s, %s, %b, %b, %b, %b, %s, %s)"
        " ON CONFLICT (device_id, trip_id) DO UPDATE SET t_s = EXCLUDED.t_s,"
        " lat_deg = EXCLUDED.lat_deg, lon_deg = EXCLUDED.lon_deg,"
        " speed_mps = EXCLUDED.speed_mps",
        (device_id, trip_id, policy_id, Float8Array(t_s), Float8Array(lat_deg),
         Float8Array(lon_deg), Float8Array(np.where(np.isfinite(speed_mps), speed_mps, 0.0)),
         radii_m[0], radii_m[1]))


def drop_expired_raw_chunks(conn: psycopg.Connection[Any], older_than: datetime) -> dict[str, int]:
    """Drop whole raw-sample chunks that end before `older_than`."""
    dropped = {}
    for table in RAW_TABLES:
        rows = conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                            (table, older_than)).fetchall()
        dropped[table] = len(rows)
    return dropped


def delete_expired_paths(conn: psycopg.Connection[Any], older_than: datetime) -> int:
    """Delete the privacy-trimmed paths of trips that ended before `older_than`: shown
    positions are kept as long as the raw samples they came from, no longer (a trip's
    features and events stay)."""
    cur = conn.execute(
        "DELETE FROM trip_paths p USING trips t WHERE t.device_id = p.device_id"
        " AND t.trip_id = p.trip_id AND coalesce(t.ended_at, t.started_at) < %s", (older_than,))
    return cur.rowcount


def delete_expired_idempotency(conn: psycopg.Connection[Any], now: datetime) -> int:
    cur = conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= %s", (now,))
    return cur.rowcount


# --- export --------------------------------------------------------------------------------

# Every table that holds a policyholder's data, and how the export selects it. The export
# completeness test compares this with the schema: a new table must be added here.
EXPORT_QUERIES: dict[str, str] = {
    "policies": "SELECT * FROM policies WHERE policy_id = %(p)s",
    "devices": "SELECT device_id, policy_id, kind, created_at, revoked_at FROM devices"
               " WHERE policy_id = %(p)s",
    "consents": "SELECT * FROM consents WHERE policy_id = %(p)s ORDER BY at",
    "trips": "SELECT * FROM trips WHERE policy_id = %(p)s ORDER BY started_at",
    "trip_features": "SELECT * FROM trip_features WHERE policy_id = %(p)s ORDER BY started_at",
    "events": "SELECT e.* FROM events e JOIN trips t USING (device_id, trip_id)"
              " WHERE t.policy_id = %(p)s ORDER BY e.device_id, e.trip_id, e.event_no",
    "trip_paths": "SELECT * FROM trip_paths WHERE policy_id = %(p)s",
    "claims": "SELECT * FROM claims WHERE policy_id = %(p)s ORDER BY occurred_at",
    "premiums": "SELECT * FROM premiums WHERE policy_id = %(p)s ORDER BY period_start",
    "review_requests": "SELECT * FROM review_requests WHERE policy_id = %(p)s",
    "audit_log": "SELECT * FROM audit_log WHERE policy_id = %(p)s ORDER BY audit_id",
    "gps_samples": "SELECT s.* FROM gps_samples s JOIN devices d USING (device_id)"
                   " WHERE d.policy_id = %(p)s ORDER BY s.device_id, s.trip_id, s.time",
    "imu_samples": "SELECT s.* FROM imu_samples s JOIN devices d USING (device_id)"
                   " WHERE d.policy_id = %(p)s ORDER BY s.device_id, s.trip_id, s.time",
    "obd_samples": "SELECT s.* FROM obd_samples s JOIN devices d USING (device_id)"
                   " WHERE d.policy_id = %(p)s ORDER BY s.device_id, s.trip_id, s.time",
    "idempotency_keys": "SELECT k.device_id, k.idempotency_key, k.response_status,"
                        " k.created_at, k.expires_at FROM idempotency_keys k"
                        " JOIN devices d USING (device_id) WHERE d.policy_id = %(p)s",
}
# Tables that hold no policyholder's data, or only a secret that the export must not show.
NOT_EXPORTED = {"schema_migrations": "no personal data", "rating_plans": "no personal data",
                "api_tokens": "staff credentials",
                "pricing_runs": "portfolio totals and medians of a repricing run, no policy's data",
                "provisional_due": "a mark that the provisional premium is due, removed within"
                                   " seconds; the premium itself is exported",
                "privacy_keys": "the secret that protects the policyholder's privacy zones"}


def iter_export_rows(conn: psycopg.Connection[Any], table: str, policy_id: str,
                     batch: int = 2_000) -> Iterator[dict[str, Any]]:
    """Rows of one export section, streamed with a server-side cursor."""
    with conn.cursor(name=f"export_{table}_{uuid.uuid4().hex[:8]}") as cur:
        cur.itersize = batch
        cur.execute(EXPORT_QUERIES[table], {"p": policy_id})
        assert cur.description is not None
        names = [d.name for d in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))


# --- erasure -------------------------------------------------------------------------------

def erase_policy(conn: psycopg.Connection[Any], policy_id: str, actor: str) -> dict[str, Any]:
    """Delete everything that identifies the policyholder; keep premium records under a
    pseudonym that nothing links back to the person. Returns counts and the pseudonym."""
    pseudonym = f"erased-{uuid.uuid4()}"
    devices = [r[0] for r in conn.execute("SELECT device_id FROM devices WHERE policy_id = %s",
                                          (policy_id,))]
    trip_ids = [r[0] for r in conn.execute("SELECT trip_id FROM trips WHERE policy_id = %s",
                                           (policy_id,))]
    counts: dict[str, int] = {}
    for table in (*RAW_TABLES, "idempotency_keys"):
        counts[table] = conn.execute(
            sql.SQL("DELETE FROM {} WHERE device_id = ANY(%s)").format(sql.Identifier(table)),
            (devices,)).rowcount
    for table in ("events", "trip_paths", "trip_features"):
        counts[table] = conn.execute(
            sql.SQL("DELETE FROM {} WHERE device_id = ANY(%s)").format(sql.Identifier(table)),
            (devices,)).rowcount
    for table in ("trips", "review_requests", "consents", "claims", "privacy_keys"):
        counts[table] = conn.execute(
            sql.SQL("DELETE FROM {} WHERE policy_id = %s").format(sql.Identifier(table)),
            (policy_id,)).rowcount
    counts["devices"] = conn.execute("DELETE FROM devices WHERE policy_id = %s",
                                     (policy_id,)).rowcount
    # Premium records are kept by law: identifiers inside their inputs are replaced too.
    counts["premiums_pseudonymised"] = conn.execute(
        "UPDATE premiums SET policy_id = %s, pseudonymised = true,"
        " inputs = inputs - 'policy_id' - 'device_ids' - 'trip_ids'"
        " || jsonb_build_object('policy_id', %s::text)"
        " WHERE policy_id = %s", (pseudonym, pseudonym, policy_id)).rowcount
    device_actors = [f"device:{d}" for d in devices]
    counts["audit_log"] = conn.execute(
        "UPDATE audit_log SET policy_id = %s, subject = NULL, detail = '{}'::jsonb,"
        " actor = CASE WHEN actor = ANY(%s) THEN 'device:erased' ELSE actor END"
        " WHERE policy_id = %s OR subject = ANY(%s) OR subject = ANY(%s) OR actor = ANY(%s)",
        (pseudonym, device_actors, policy_id, devices, trip_ids, device_actors)).rowcount
    counts["policies"] = conn.execute("DELETE FROM policies WHERE policy_id = %s",
                                      (policy_id,)).rowcount
    conn.execute("INSERT INTO audit_log (actor, action, policy_id, detail)"
                 " VALUES (%s, 'policy.erase', %s, %s)",
                 (actor, pseudonym, Jsonb({"counts": counts})))
    return {"pseudonym": pseudonym, "deleted": counts}


# --- human review --------------------------------------------------------------------------

def open_review(conn: psycopg.Connection[Any], *, policy_id: str, kind: str, reason: str,
                premium_id: int | None = None, device_id: str | None = None,
                trip_id: str | None = None) -> int:
    row = conn.execute(
        "INSERT INTO review_requests (policy_id, kind, reason, premium_id, device_id, trip_id)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING review_id",
        (policy_id, kind, reason, premium_id, device_id, trip_id)).fetchone()
    assert row is not None
    return int(row[0])


REVIEW_COLUMNS = ("review_id", "policy_id", "premium_id", "device_id", "trip_id", "kind",
                  "reason", "status", "decision_note", "decided_by", "created_at", "decided_at")


def _review_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(REVIEW_COLUMNS, row, strict=True))
    for key in ("created_at", "decided_at"):
        out[key] = out[key].isoformat() if out[key] else None
    return out


def list_reviews(conn: psycopg.Connection[Any], *, policy_id: str | None = None,
                 status: str | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {', '.join(REVIEW_COLUMNS)} FROM review_requests"
        " WHERE (%(p)s::text IS NULL OR policy_id = %(p)s)"
        " AND (%(s)s::text IS NULL OR status = %(s)s) ORDER BY created_at",
        {"p": policy_id, "s": status}).fetchall()
    return [_review_dict(r) for r in rows]


def decide_review(conn: psycopg.Connection[Any], review_id: int, decision: str, note: str,
                  decided_by: str) -> dict[str, Any] | None:
    row = conn.execute(
        "UPDATE review_requests SET status = %s, decision_note = %s, decided_by = %s,"
        " decided_at = now() WHERE review_id = %s AND status = 'open'"
        f" RETURNING {', '.join(REVIEW_COLUMNS)}",
        (decision, note, decided_by, review_id)).fetchone()
    return _review_dict(row) if row else None
