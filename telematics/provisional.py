"""Provisional premiums kept current without pricing inside every upload.

A scored trip (or an OBD trip, or a label change) marks its policy as due in the same
transaction that stores the trip. The service's background task claims due policies a few
hundred at a time and reprices them together, so a driver sees a trip's effect about a
second after the upload; anyone who reads a premium first reprices it if it is still due,
so a read never shows a premium older than the trips already scored.

Claiming deletes the marks in the repricing's own transaction: if the pricing or the
database fails, the marks come back with the rollback and the next round retries them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

log = logging.getLogger("ubi.provisional")

# Policies claimed per round: one read, one pricing and one write for all of them.
CLAIM_LIMIT = 500


def mark_due(conn: psycopg.Connection[Any], policy_id: str) -> None:
    """Mark the policy's provisional premium as due (in the caller's transaction)."""
    conn.execute("INSERT INTO provisional_due (policy_id) VALUES (%s)"
                 " ON CONFLICT (policy_id) DO NOTHING", (policy_id,))


def _reprice(conn: psycopg.Connection[Any], policy_ids: Sequence[str],
             now: datetime | None) -> None:
    """Reprice the policies together; if that fails for a reason other than the database,
    price them one by one so that one bad policy does not hold back the others."""
    from telematics.rating import provisional_premiums

    try:
        with conn.transaction():
            provisional_premiums(conn, policy_ids, now)
        return
    except psycopg.OperationalError:
        raise
    except Exception:
        if len(policy_ids) == 1:
            log.exception("provisional premium of %s failed; it waits for the next trip or "
                          "the period's repricing", policy_ids[0])
            return
    for policy_id in policy_ids:
        _reprice(conn, [policy_id], now)


def reprice_due(conn: psycopg.Connection[Any], limit: int = CLAIM_LIMIT,
                now: datetime | None = None) -> int:
    """Claim up to ``limit`` due policies that no other worker holds, reprice them, commit;
    returns how many were claimed (0 when nothing is due)."""
    with conn.transaction():
        claimed = [row[0] for row in conn.execute(
            "DELETE FROM provisional_due WHERE policy_id IN (SELECT policy_id FROM"
            " provisional_due ORDER BY due_since LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING policy_id", (limit,)).fetchall()]
        if claimed:
            _reprice(conn, sorted(claimed), now)
    return len(claimed)


def reprice_all_due(conn: psycopg.Connection[Any], now: datetime | None = None) -> int:
    """Reprice until nothing is due; returns how many policies were repriced."""
    total = 0
    while claimed := reprice_due(conn, now=now):
        total += claimed
    return total


def reprice_round(conn: psycopg.Connection[Any], now: datetime | None = None) -> int:
    """One round of the background task: reprice what is due now, claiming again only
    while claims come back full (a backlog). Policies marked while the round runs wait for
    the next one: repricing them one or two at a time as uploads arrive would cost a
    round's fixed work (the plan, the reads, the write) for each. Returns how many."""
    total = 0
    while (claimed := reprice_due(conn, now=now)) > 0:
        total += claimed
        if claimed < CLAIM_LIMIT:
            break
    return total


def flush(conn: psycopg.Connection[Any], policy_id: str, now: datetime | None = None) -> bool:
    """Reprice the policy now if it is due (waiting for a worker that is repricing it), so
    that what is read next includes every scored trip; returns whether it was due."""
    with conn.transaction():
        due = conn.execute("DELETE FROM provisional_due WHERE policy_id = %s RETURNING 1",
                           (policy_id,)).fetchone() is not None
        if due:
            _reprice(conn, [policy_id], now)
    return due
