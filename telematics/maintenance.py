"""`ubi maintenance`: retention, erasure and housekeeping, safe to run at any time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from telematics.rating import reseal_pseudonymised
from telematics.store import privacy as privacy_sql


def erase_policyholder(conn: psycopg.Connection[Any], policy_id: str,
                       actor: str) -> dict[str, Any]:
    """Erase a policyholder (see :func:`telematics.store.privacy.erase_policy`) and reseal
    the premiums kept under the pseudonym, so their hashes no longer lead back to the
    policy id. Runs in the caller's transaction."""
    result = privacy_sql.erase_policy(conn, policy_id, actor)
    result["premiums_resealed"] = reseal_pseudonymised(conn, result["pseudonym"])
    return result


@dataclass(frozen=True)
class RetentionPolicy:
    raw_days: int = 90
    legal_years_after_end: int = 7


def run_maintenance(url: str, *, now: datetime | None = None,
                    retention: RetentionPolicy | None = None) -> dict[str, Any]:
    """Drop raw-sample chunks past the retention window, expire idempotency records and
    erase policies whose legal retention period after their end has passed."""
    now = now or datetime.now(UTC)
    retention = retention or RetentionPolicy()
    raw_cutoff = now - timedelta(days=retention.raw_days)
    report: dict[str, Any] = {"now": now.isoformat(), "raw_cutoff": raw_cutoff.isoformat()}
    with psycopg.connect(url) as conn:
        with conn.transaction():
            report["raw_chunks_dropped"] = privacy_sql.drop_expired_raw_chunks(conn, raw_cutoff)
        with conn.transaction():
            report["idempotency_records_deleted"] = privacy_sql.delete_expired_idempotency(
                conn, now)
        legal_cutoff = (now - timedelta(days=365 * retention.legal_years_after_end)).date()
        expired = [r[0] for r in conn.execute(
            "SELECT policy_id FROM policies WHERE end_date IS NOT NULL AND end_date < %s",
            (legal_cutoff,))]
        erased = []
        for policy_id in expired:
            with conn.transaction():
                erased.append(erase_policyholder(conn, policy_id, "maintenance")["pseudonym"])
        report["policies_erased_after_legal_period"] = len(erased)
        # Premiums erased before their hashes were resealed on erasure.
        with conn.transaction():
            report["pseudonymised_premiums_resealed"] = reseal_pseudonymised(conn)
    return report
