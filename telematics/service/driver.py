"""The driver's view: score, premium and why, coaching, trips and data use (own policy only).

The view shows aggregates only, so it is read through the pricing side's pool (the role
ubi_pricing); the device's key is checked, and its relabels written, on the main pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from telematics.provisional import mark_due
from telematics.service import pages
from telematics.service.auth import DeviceDep, Principal, principal, session_or_login
from telematics.service.deps import pricing_store_of, store_of
from telematics.service.premium_view import (
    BEHAVIOUR_TEXT,
    BreakdownError,
    PremiumView,
    changes_between,
    load_plan,
    premium_view,
)
from telematics.service.privacy_routes import TRANSPARENCY
from telematics.service.problems import Problem
from telematics.service.workbench import current_premium
from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store import workbench as wb_sql
from telematics.store.access import find_device_by_key, find_staff_by_token, hash_secret

router = APIRouter()
DEVICE_COOKIE = "ubi_device"
COOKIE_PATH = "/driver"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PolicyId = Annotated[str, Path(pattern=ID_PATTERN)]
TripId = Annotated[str, Path(pattern=ID_PATTERN)]
TRIPS_SHOWN = 50
LABELS = ("driver", "passenger", "transit", "not_me")


def _premium_views(conn: Any, policy_id: str) -> list[PremiumView]:
    views = []
    plans: dict[str, Any] = {}
    for row in wb_sql.policy_premiums(conn, policy_id):
        if row.plan_version not in plans:
            plans[row.plan_version] = load_plan(wb_sql.get_plan(conn, row.plan_version))
        try:
            views.append(premium_view(row, plans[row.plan_version]))
        except BreakdownError:
            continue  # an unreadable record is the underwriter's to fix, not the driver's
    return views


def _money_text(view: PremiumView, cents: int, signed: bool = True) -> str:
    amount = view.money(abs(cents))
    sign = "-" if cents < 0 else ("+" if signed and cents > 0 else "")
    return f"{sign}{amount}"


def driver_summary(conn: Any, policy_id: str, settings: Any) -> dict[str, Any]:
    """Everything the driver's app shows, as JSON-ready values."""
    from telematics.scoring import policy_score

    score = policy_score(conn, policy_id)
    views = _premium_views(conn, policy_id)
    current = current_premium(views)
    summary: dict[str, Any] = {"policy_id": policy_id, "score": score, "premium": None,
                               "time_zone": trip_sql.policy_time_zone(conn, policy_id),
                               "changes": None, "behaviour_costs": [], "coaching": None}
    if current is not None:
        summary["premium"] = {
            "premium_id": current.row.premium_id, "amount": str(current.money(
                current.premium_cents)), "premium_cents": current.premium_cents,
            "currency": current.currency, "kind": current.row.kind,
            "period_start": current.row.period_start.isoformat(),
            "period_end": current.row.period_end.isoformat(),
            "plan_version": current.row.plan_version,
            "telematics_factor": current.telematics_factor,
            "credibility_z": current.credibility_z}
        earlier = [v for v in views if v.row.kind == "period"
                   and v.row.period_start < current.row.period_start]
        previous = max(earlier, key=lambda v: (v.row.period_start, v.row.updated_at),
                       default=None)
        lines = changes_between(current, previous)
        if previous is not None or current.changes:
            summary["changes"] = {
                "since_period_start": previous.row.period_start.isoformat() if previous else None,
                "premium_change": _money_text(current, current.premium_cents
                                              - previous.premium_cents) if previous else None,
                "lines": {name: _money_text(current, cents) for name, cents in
                          sorted(lines.items(), key=lambda kv: -abs(kv[1])) if cents},
                "text": current.change_text}
        summary["behaviour_costs"] = [
            {"behaviour": line.line, "label": line.label, "amount": _money_text(
                current, line.amount_cents), "amount_cents": line.amount_cents,
             "value": line.value, "unit": line.unit, "relativity": line.relativity}
            for line in current.behaviour_lines]
        coaching = current.coaching or {}
        action = coaching.get("next_best_action")
        saving = coaching.get("next_best_saving_cents")
        if isinstance(action, str) and isinstance(saving, int) and not isinstance(saving, bool):
            summary["coaching"] = {
                "next_best_action": action, "label": BEHAVIOUR_TEXT.get(action, action),
                "saving": _money_text(current, saving, signed=False), "saving_cents": saving,
                "savings": {k: _money_text(current, v, signed=False)
                            for k, v in (coaching.get("savings_cents") or {}).items()
                            if isinstance(v, int)}}
    trips = []
    for trip in wb_sql.trip_overview(conn, policy_id, limit=TRIPS_SHOWN):
        trips.append({
            "device_id": trip["device_id"], "trip_id": trip["trip_id"],
            "started_at": trip["started_at"].isoformat() if trip["started_at"] else None,
            "distance_km": round(trip["distance_m"] / 1000, 3) if trip["distance_m"] else None,
            "label": trip["label"] or "driver", "status": trip["status"],
            "events": trip_sql.get_events(conn, trip["device_id"], trip["trip_id"])})
    summary["trips"] = trips
    summary["transparency"] = {"categories": TRANSPARENCY,
                               "raw_retention_days": settings.retention_days,
                               "label_window_days": settings.label_window_days}
    summary["consents"] = [
        {"category": cat, "purpose": pur, "granted": c["granted"]}
        for (cat, pur), c in sorted(privacy_sql.current_consents(conn, policy_id).items())]
    # The driver's requests for a human review and what was decided (who decided stays
    # with the insurer's audit trail).
    summary["reviews"] = [
        {k: r[k] for k in ("review_id", "kind", "reason", "status", "decision_note",
                           "created_at", "decided_at", "premium_id", "trip_id")}
        for r in privacy_sql.list_reviews(conn, policy_id=policy_id)]
    return summary


@router.get("/v1/driver/policies/{policy_id}", tags=["driver"],
            summary="The driver's score, premium and why, coaching, trips and data use")
def driver_json(request: Request, policy_id: PolicyId, who: DeviceDep) -> dict[str, Any]:
    if who.policy_id != policy_id:
        raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
    with pricing_store_of(request).connection() as conn:
        return driver_summary(conn, policy_id, request.app.state.settings)


# --- the HTML page --------------------------------------------------------------------------

def _device(request: Request) -> Principal | None:
    if request.headers.get("authorization"):
        who = principal(request)
        if who.kind != "device":
            raise Problem(403, "forbidden", "the driver view is for the policyholder's device")
        return who
    key = request.cookies.get(DEVICE_COOKIE)
    if not key:
        return None
    with store_of(request).connection() as conn:
        device = find_device_by_key(conn, hash_secret(key))
        conn.rollback()
    if device is None:
        return None
    return Principal("device", device.device_id, ("device",), device.device_id, device.policy_id)


def device_page(request: Request) -> Principal:
    return session_or_login(_device(request), "log in with the app's key first",
                            login_url="/driver/login")


def device_action(request: Request) -> Principal:
    return session_or_login(_device(request), "log in with the app's key first", login_url=None)


DevicePage = Annotated[Principal, Depends(device_page)]
DeviceAction = Annotated[Principal, Depends(device_action)]


@router.get("/driver/login", include_in_schema=False)
def login_page() -> Response:
    return pages.render("login.html", title="Your driving", next="/driver/", error=None,
                        action="/driver/login", secret_label="App key", area="driver")


@router.post("/driver/login", include_in_schema=False)
async def login(request: Request) -> Response:
    form = await pages.read_form(request)
    key = form.get("token", "").strip()

    def check() -> str | None:
        digest = hash_secret(key)
        with store_of(request).connection() as conn:
            if find_device_by_key(conn, digest) is not None:
                return None
            if find_staff_by_token(conn, digest) is not None:
                return "This is a staff token: the driver view takes the app's key."
            return "Unknown or revoked key."

    error = await run_in_threadpool(check) if key else "Enter the app's key."
    if error is not None:
        return pages.render("login.html", status_code=401, title="Your driving",
                            next="/driver/", error=error, action="/driver/login",
                            secret_label="App key", area="driver")
    response = pages.redirect("/driver/")
    pages.set_session_cookie(response, request, DEVICE_COOKIE, key, COOKIE_PATH)
    return response


@router.post("/driver/logout", include_in_schema=False)
def logout() -> Response:
    response = pages.redirect("/driver/login")
    response.delete_cookie(DEVICE_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


@router.get("/driver/", include_in_schema=False)
def driver_page(request: Request, who: DevicePage) -> Response:
    assert who.policy_id is not None
    with pricing_store_of(request).connection() as conn:
        summary = driver_summary(conn, who.policy_id, request.app.state.settings)
    return pages.render("driver.html", title="Your driving", summary=summary, who=who,
                        labels=LABELS)


@router.post("/driver/trips/{trip_id}/label", include_in_schema=False)
async def relabel(request: Request, trip_id: TripId, who: DeviceAction) -> Response:
    """The app's relabel (passenger, transit, not me) from the page, same rules and audit."""
    form = await pages.read_form(request)
    label = pages.field(form, "label", choices=LABELS)
    reason = pages.field(form, "reason", required=False, max_length=500) or None
    settings = request.app.state.settings

    def run() -> None:
        with store_of(request).connection() as conn, conn.transaction():
            trip = trip_sql.get_trip(conn, who.device_id or "", trip_id, for_update=True)
            if trip is None:
                raise Problem(404, "not_found", f"no trip '{trip_id}' for this device",
                              "trip_id")
            started = trip.started_at or datetime.now(UTC)
            if datetime.now(UTC) - started > timedelta(days=settings.label_window_days):
                raise Problem(422, "label_window_closed", f"trips can be relabelled within "
                              f"{settings.label_window_days} days", "trip_id")
            new = None if label == "driver" else label
            trip_sql.set_label(conn, trip.device_id, trip_id, new)
            trip_sql.audit(conn, actor=f"device:{who.device_id}", action="trip.label",
                           policy_id=trip.policy_id, subject=trip_id,
                           detail={"from": trip.label, "to": new, "reason": reason})
            mark_due(conn, trip.policy_id)  # repriced on the pricing side
    await run_in_threadpool(run)
    return pages.redirect(f"/driver/#trip-{quote(trip_id)}")
