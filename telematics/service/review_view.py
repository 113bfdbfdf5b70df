"""The review queue's entries: each request with the premium it is about, in money, and
the evidence behind it, for the underwriter API and the workbench page alike.

The premium is the one the driver named, else the policy's latest (the one the driver
sees); its breakdown is read as the policy page reads it (`premium_view`), with its change
from the previous period. The evidence is the named trip (its features and events), else
the trips of the premium's period with their events counted: what the change came from.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from telematics import provisional
from telematics.service.premium_view import (
    BreakdownError,
    PremiumView,
    changes_between,
    load_plan,
    premium_view,
)
from telematics.store import trips as trip_sql
from telematics.store import workbench as wb_sql

PERIOD_TRIPS_SHOWN = 200


def _money(view: PremiumView, cents: int, signed: bool = False) -> str:
    sign = "-" if cents < 0 else ("+" if signed and cents > 0 else "")
    return f"{sign}{view.money(abs(cents))}"


def _label(name: str, view: PremiumView) -> str:
    line = next((line for line in view.lines if line.line == name), None)
    return line.label if line is not None else name.replace("_", " ")


class _PolicyPremiums:
    """A policy's premiums read once for all its requests in the queue."""

    def __init__(self, conn: Any, policy_id: str) -> None:
        self.views: list[PremiumView] = []
        self.problems: dict[int, str] = {}
        plans: dict[str, Any] = {}
        rows = wb_sql.policy_premiums(conn, policy_id)
        # The latest written, as the driver and the policy page see it.
        self.latest_id = max(((r.updated_at, r.premium_id) for r in rows), default=(None, None))[1]
        for row in rows:
            if row.plan_version not in plans:
                plans[row.plan_version] = load_plan(wb_sql.get_plan(conn, row.plan_version))
            try:
                self.views.append(premium_view(row, plans[row.plan_version]))
            except BreakdownError as error:
                self.problems[row.premium_id] = str(error)

    def find(self, premium_id: int | None) -> tuple[PremiumView | None, str | None]:
        """The premium (the latest if None) and, when it cannot be shown, why not."""
        wanted = self.latest_id if premium_id is None else premium_id
        if wanted is None:
            return None, "no premium has been written for this policy yet"
        view = next((v for v in self.views if v.row.premium_id == wanted), None)
        if view is not None:
            return view, None
        if wanted in self.problems:
            return None, f"premium {wanted} breaks the data contract: {self.problems[wanted]}"
        return None, f"premium {wanted} is no longer stored"

    def previous(self, view: PremiumView) -> PremiumView | None:
        """The latest period premium of an earlier period: what the change is measured from."""
        earlier = [v for v in self.views if v.row.kind == "period"
                   and v.row.period_start < view.row.period_start]
        return max(earlier, key=lambda v: (v.row.period_start, v.row.updated_at,
                                           v.row.premium_id), default=None)


def premium_breakdown(view: PremiumView, previous: PremiumView | None,
                      *, named: bool) -> dict[str, Any]:
    """The premium line by line in money (base first; the lines add up to the premium) and
    its change, line by line, from the previous period's premium."""
    changes = changes_between(view, previous)
    running = 0
    lines = []
    for line in view.lines:
        running += line.amount_cents
        lines.append({"line": line.line, "label": line.label, "kind": line.kind,
                      "amount": _money(view, line.amount_cents, signed=line.kind != "base"),
                      "amount_cents": line.amount_cents,
                      "running_total": _money(view, running), "factor": line.factor,
                      "relativity": line.relativity, "credibility_z": line.credibility_z,
                      "value": line.value, "unit": line.unit,
                      "change_cents": changes.get(line.line)})
    return {
        "premium_id": view.row.premium_id, "named": named, "kind": view.row.kind,
        "period_start": view.row.period_start.isoformat(),
        "period_end": view.row.period_end.isoformat(), "plan_version": view.row.plan_version,
        "currency": view.currency, "minor_units": view.minor_units,
        "amount": _money(view, view.premium_cents), "premium_cents": view.premium_cents,
        "lines": lines, "lines_total": _money(view, view.lines_total_cents),
        "telematics_factor": view.telematics_factor, "credibility_z": view.credibility_z,
        "problems": list(view.problems),
        "previous": None if previous is None else {
            "premium_id": previous.row.premium_id,
            "period_start": previous.row.period_start.isoformat(),
            "period_end": previous.row.period_end.isoformat(),
            "amount": _money(previous, previous.premium_cents),
            "premium_cents": previous.premium_cents},
        "change": None if previous is None else _money(
            view, view.premium_cents - previous.premium_cents, signed=True),
        "change_cents": None if previous is None else view.premium_cents - previous.premium_cents,
        "change_lines": [{"line": name, "label": _label(name, view),
                          "amount": _money(view, cents, signed=True), "amount_cents": cents}
                         for name, cents in sorted(changes.items(), key=lambda kv: -abs(kv[1]))
                         if cents],
        "change_text": view.change_text,
    }


def trip_evidence(conn: Any, policy_id: str, device_id: str | None,
                  trip_id: str) -> dict[str, Any]:
    """The named trip: its summary, every feature and every event (each event with its
    position outside the privacy zones and its speed: the evidence a dispute needs)."""
    trip = wb_sql.policy_trip(conn, policy_id, trip_id, device_id)
    if trip is None:
        return {"scope": "trip", "trip_id": trip_id, "trip": None, "events": []}
    features = trip_sql.get_features(conn, trip.device_id, trip_id)
    return {"scope": "trip", "trip_id": trip_id, "trip": {
        "device_id": trip.device_id, "trip_id": trip.trip_id, "status": trip.status,
        "source": trip.source, "label": trip.label or "driver",
        "transport_mode": trip.transport_mode,
        "started_at": trip.started_at.isoformat() if trip.started_at else None,
        "ended_at": trip.ended_at.isoformat() if trip.ended_at else None,
        "scored": features["scored"] if features else False,
        "distance_km": round(features["distance_m"] / 1000, 3) if features else None,
        "duration_min": round(features["duration_s"] / 60, 2) if features else None,
        "features": features["features"] if features else {}},
        "events": trip_sql.get_events(conn, trip.device_id, trip_id)}


def period_evidence(conn: Any, policy_id: str, view: PremiumView) -> dict[str, Any]:
    """The trips of the premium's period with their events counted, and the totals of
    those that count in the price."""
    trips = wb_sql.period_trips(conn, policy_id, view.row.period_start, view.row.period_end)
    counted = [t for t in trips if t["counted"]]
    events: Counter[str] = Counter()
    for t in counted:
        events.update(t["event_kinds"])
    shown = [{"device_id": t["device_id"], "trip_id": t["trip_id"], "status": t["status"],
              "source": t["source"],
              "started_at": t["started_at"].isoformat() if t["started_at"] else None,
              "label": t["label"] or "driver", "transport_mode": t["transport_mode"],
              "scored": t["scored"], "counted": t["counted"],
              "distance_km": None if t["distance_m"] is None else round(t["distance_m"] / 1000, 3),
              "n_events": t["n_events"], "n_disputed": t["n_disputed"],
              "events": dict(sorted(t["event_kinds"].items()))}
             for t in trips[:PERIOD_TRIPS_SHOWN]]
    return {"scope": "period", "since": view.row.period_start.isoformat(),
            "until": view.row.period_end.isoformat(), "trips": shown,
            "trips_total": len(trips),
            "totals": {"trips": len(counted),
                       "km": round(sum(t["distance_m"] or 0.0 for t in counted) / 1000, 3),
                       "events": dict(sorted(events.items())),
                       "disputed": sum(t["n_disputed"] for t in counted)}}


def review_entries(conn: Any, reviews: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each review request with the policy's `time_zone`, `premium` (its breakdown in
    money, or None with `premium_problem` saying why) and `evidence`."""
    premiums: dict[str, _PolicyPremiums] = {}
    time_zones: dict[str, str] = {}
    entries = []
    for review in reviews:
        policy_id = review["policy_id"]
        if policy_id not in premiums:
            provisional.flush(conn, policy_id)  # the latest premium includes every scored trip
            premiums[policy_id] = _PolicyPremiums(conn, policy_id)
            time_zones[policy_id] = trip_sql.policy_time_zone(conn, policy_id)
        mine = premiums[policy_id]
        view, problem = mine.find(review["premium_id"])
        named = review["premium_id"] is not None
        entry: dict[str, Any] = {
            **review, "time_zone": time_zones[policy_id], "premium_problem": problem,
            "premium": None if view is None else premium_breakdown(
                view, mine.previous(view), named=named)}
        if review["trip_id"] is not None:
            entry["evidence"] = trip_evidence(conn, policy_id, review["device_id"],
                                              review["trip_id"])
        elif view is not None:
            entry["evidence"] = period_evidence(conn, policy_id, view)
        else:
            entry["evidence"] = None
        entries.append(entry)
    return entries
