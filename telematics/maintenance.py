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

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        """The raw-sample window the service enforces on upload (``UBI_RETENTION_DAYS``)."""
        from telematics.service.settings import retention_days_from_env

        return cls(raw_days=retention_days_from_env())


# Two maintenance runs at once (two service workers, or a cron job beside them) would
# erase the same policy twice: the second waits for nothing and skips its turn instead.
_LOCK_KEY = 0x75_62_69_6D  # "ubim"


def run_maintenance(url: str, *, now: datetime | None = None,
                    retention: RetentionPolicy | None = None) -> dict[str, Any]:
    """Drop raw-sample chunks past the retention window, expire idempotency records and
    erase policies whose legal retention period after their end has passed. While another
    run is under way this one does nothing and says so (``"skipped"``)."""
    now = now or datetime.now(UTC)
    retention = retention or RetentionPolicy.from_env()
    raw_cutoff = now - timedelta(days=retention.raw_days)
    report: dict[str, Any] = {"now": now.isoformat(), "raw_cutoff": raw_cutoff.isoformat()}
    with psycopg.connect(url, autocommit=True) as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not (locked and locked[0]):
            report["skipped"] = "another maintenance run is under way"
            return report
        try:
            _maintain(conn, now, retention, raw_cutoff, report)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return report


def _maintain(conn: psycopg.Connection[Any], now: datetime, retention: RetentionPolicy,
              raw_cutoff: datetime, report: dict[str, Any]) -> None:
    """The work of :func:`run_maintenance`, each step in its own transaction."""
    with conn.transaction():
        report["raw_chunks_dropped"] = privacy_sql.drop_expired_raw_chunks(conn, raw_cutoff)
    with conn.transaction():
        report["trip_paths_deleted"] = privacy_sql.delete_expired_paths(conn, raw_cutoff)
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
