"""The underwriter workbench: portfolio, policy, trip and review pages behind a staff login.

Logins and sessions are checked on the main pool (staff token hashes); every page and
form reads and writes through the pricing side's pool, as the role ubi_pricing, which
cannot read raw samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from pricing.validate import gini, ordered_lorenz
from telematics import provisional
from telematics.service import charts, pages, review_view, trip_view
from telematics.service.auth import Principal, principal, session_or_login
from telematics.service.deps import pricing_store_of, store_of
from telematics.service.premium_view import (
    BreakdownError,
    PremiumView,
    changes_between,
    load_plan,
    premium_view,
    replay_premium,
    reprice_provisional,
)
from telematics.service.problems import Problem
from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store import workbench as wb_sql
from telematics.store.access import find_device_by_key, find_staff_by_token, hash_secret

router = APIRouter(include_in_schema=False)
STAFF_COOKIE = "ubi_staff"
COOKIE_PATH = "/workbench"
STAFF_SCOPES = ("underwriter", "admin")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PolicyId = Annotated[str, Path(pattern=ID_PATTERN)]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN)]
TripId = Annotated[str, Path(pattern=ID_PATTERN)]
RowId = Annotated[int, Path(ge=1, le=2**62)]
N_DECILES = 10
BOOK_ROWS_SHOWN = 1_000  # the charts and deciles use every policy; the table lists this many
DAYS_PER_YEAR = 365.0


# --- who may open the workbench -------------------------------------------------------------

def _staff(request: Request) -> Principal | None:
    """The underwriter behind a bearer header or the session cookie; None without either.

    A device key is refused outright (403): the workbench shows every policyholder."""
    if request.headers.get("authorization"):
        who = principal(request)
        if who.kind != "staff":
            raise Problem(403, "forbidden", "the workbench is for underwriters; a device key "
                          "cannot open it")
        if not set(STAFF_SCOPES) & set(who.scopes):
            raise Problem(403, "forbidden", "requires the 'underwriter' scope")
        return who
    token = request.cookies.get(STAFF_COOKIE)
    if not token:
        return None
    with store_of(request).connection() as conn:
        staff = find_staff_by_token(conn, hash_secret(token))
        conn.rollback()
    if staff is None or not set(STAFF_SCOPES) & set(staff.scopes):
        return None
    return Principal("staff", staff.name, staff.scopes)


def staff_page(request: Request) -> Principal:
    """For pages: without a session, go to the login page and come back."""
    target = quote(request.url.path, safe="/")
    return session_or_login(_staff(request), "log in to the workbench first",
                            login_url=f"/workbench/login?next={target}")


def staff_action(request: Request) -> Principal:
    """For form posts: without a session, 401."""
    return session_or_login(_staff(request), "log in to the workbench first", login_url=None)


StaffPage = Annotated[Principal, Depends(staff_page)]
StaffAction = Annotated[Principal, Depends(staff_action)]


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/workbench/") and "//" not in target and "\\" not in target:
        return target
    return "/workbench/"


@router.get("/workbench/login")
def login_page(next: str | None = None) -> Response:
    return pages.render("login.html", title="Underwriter login", next=_safe_next(next),
                        error=None, action="/workbench/login", secret_label="Staff token",
                        area="workbench")


@router.post("/workbench/login")
async def login(request: Request) -> Response:
    form = await pages.read_form(request)
    token = form.get("token", "").strip()
    target = _safe_next(form.get("next"))

    def check() -> tuple[int, str | None, Principal | None]:
        digest = hash_secret(token)
        with store_of(request).connection() as conn:
            if find_device_by_key(conn, digest) is not None:
                return 403, "This is a device key: the workbench is for underwriters.", None
            staff = find_staff_by_token(conn, digest)
            if staff is None:
                return 401, "Unknown or revoked token.", None
            if not set(STAFF_SCOPES) & set(staff.scopes):
                return 403, "This token has no underwriter scope.", None
            trip_sql.audit(conn, actor=f"staff:{staff.name}", action="workbench.login",
                           policy_id=None, subject=None, detail={})
            conn.commit()
            return 200, None, Principal("staff", staff.name, staff.scopes)

    status, error, who = await run_in_threadpool(check) if token else (401, "Enter a token.",
                                                                       None)
    if who is None:
        return pages.render("login.html", status_code=status, title="Underwriter login",
                            next=target, error=error, action="/workbench/login",
                            secret_label="Staff token", area="workbench")
    response = pages.redirect(target)
    pages.set_session_cookie(response, request, STAFF_COOKIE, token, COOKIE_PATH)
    return response


@router.post("/workbench/logout")
def logout() -> Response:
    response = pages.redirect("/workbench/login")
    response.delete_cookie(STAFF_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


# --- portfolio ------------------------------------------------------------------------------

@dataclass(frozen=True)
class InForce:
    view: PremiumView
    claims: Decimal
    exposure_years: float

    @property
    def premium(self) -> float:
        return float(self.view.money(self.view.premium_cents))


def rate_deciles(premium: npt.NDArray[np.float64], exposure: npt.NDArray[np.float64],
                 n_buckets: int = N_DECILES) -> npt.NDArray[np.int64]:
    """Bucket 1..n of each policy: equal-exposure buckets by premium rate, lowest first
    (ties kept in input order), the bucketing of pricing.validate.lift_table."""
    order = np.lexsort((np.arange(premium.size), premium / exposure))
    cumulative = np.cumsum(exposure[order]) / exposure.sum()
    bucket = np.empty(premium.size, dtype=np.int64)
    bucket[order] = np.minimum((cumulative * n_buckets - 1e-12).astype(np.int64), n_buckets - 1)
    return bucket + 1


def loss_ratio_by_decile(premium: npt.NDArray[np.float64], claims: npt.NDArray[np.float64],
                         exposure: npt.NDArray[np.float64]) -> list[dict[str, Any]]:
    bucket = rate_deciles(premium, exposure)
    table = []
    for b in range(1, N_DECILES + 1):
        mine = bucket == b
        if not mine.any():
            continue
        written = float(premium[mine].sum())
        table.append({"decile": b, "policies": int(mine.sum()), "premium": written,
                      "claims": float(claims[mine].sum()),
                      "exposure_years": float(exposure[mine].sum()),
                      "loss_ratio": float(claims[mine].sum()) / written if written else None})
    return table


def plan_in_force(plan_rows: list[wb_sql.PlanRow], today: date) -> dict[str, Any] | None:
    """The most recently published plan: the one new premiums are priced with (as in
    telematics.rating). `in_force` is False while its effective date is still to come."""
    for row in plan_rows:  # most recent first
        plan = load_plan(row)
        if plan is None:
            continue
        return {"version": row.version, "plan_id": plan.plan_id, "plan_version": plan.version,
                "effective_from": plan.effective_from, "sha256": row.sha256,
                "published": row.created_at, "description": plan.description,
                "currency": plan.currency.code, "in_force": plan.effective_from <= today}
    return None


def _views(conn: Any, rows: list[wb_sql.PremiumRow]) -> tuple[list[PremiumView],
                                                                list[tuple[int, str]]]:
    plans: dict[str, wb_sql.PlanRow | None] = {}
    views, bad = [], []
    for row in rows:
        if row.plan_version not in plans:
            plans[row.plan_version] = wb_sql.get_plan(conn, row.plan_version)
        try:
            views.append(premium_view(row, load_plan(plans[row.plan_version])))
        except BreakdownError as error:
            bad.append((row.premium_id, str(error)))
    return views, bad


def portfolio_context(conn: Any) -> dict[str, Any]:
    in_force_rows = wb_sql.premiums_in_force(conn)
    views, bad = _views(conn, [r for r, _ in in_force_rows])
    claims_of = {r.premium_id: c for r, c in in_force_rows}
    book = [InForce(v, claims_of[v.row.premium_id],
                    (v.row.period_end - v.row.period_start).days / DAYS_PER_YEAR) for v in views]
    plan_rows = wb_sql.rating_plans(conn)
    context: dict[str, Any] = {
        "book": sorted(book, key=lambda b: b.view.row.policy_id)[:BOOK_ROWS_SHOWN],
        "book_size": len(book), "bad": bad,
        "plan_in_force": plan_in_force(plan_rows, datetime.now(UTC).date()),
        "plans": [(row, load_plan(row)) for row in plan_rows],
        "plan_use": {}, "charts": {}, "gini": None, "deciles": [], "totals": None,
    }
    for b in book:
        context["plan_use"][b.view.row.plan_version] = (
            context["plan_use"].get(b.view.row.plan_version, 0) + 1)
    if not book:
        return context
    premium = np.array([b.premium for b in book])
    claims = np.array([float(b.claims) for b in book])
    exposure = np.array([b.exposure_years for b in book])
    currency = book[0].view.currency
    factors = np.array([b.view.telematics_factor for b in book
                        if b.view.telematics_factor is not None], dtype=np.float64)
    context["charts"]["premiums"] = charts.histogram(
        premium, title="Premium distribution", xlabel=f"premium in force ({currency})")
    context["charts"]["factors"] = charts.histogram(
        factors, title="Telematics factor distribution", xlabel="telematics factor")
    context["deciles"] = loss_ratio_by_decile(premium, claims, exposure)
    total_lr = claims.sum() / premium.sum() if premium.sum() else None
    context["totals"] = {"policies": len(book), "premium": float(premium.sum()),
                         "claims": float(claims.sum()), "loss_ratio": total_lr,
                         "currency": currency}
    context["charts"]["deciles"] = charts.bars(
        [str(d["decile"]) for d in context["deciles"]],
        np.array([d["loss_ratio"] if d["loss_ratio"] is not None else np.nan
                  for d in context["deciles"]]),
        title="Loss ratio by premium-rate decile", ylabel="claims / premium",
        reference=total_lr)
    if claims.sum() > 0:
        curve = ordered_lorenz(claims, premium, exposure)
        context["gini"] = gini(claims, premium, exposure)
        context["charts"]["lorenz"] = charts.lorenz(
            curve["exposure_share"].to_numpy(), curve["loss_share"].to_numpy(), context["gini"])
    return context


@router.get("/workbench/")
def portfolio(request: Request, who: StaffPage) -> Response:
    with pricing_store_of(request).connection() as conn:
        context = portfolio_context(conn)
    return pages.render("portfolio.html", title="Portfolio", who=who, nav="portfolio",
                        **context)


@router.get("/workbench")
def portfolio_slash() -> Response:
    return pages.redirect("/workbench/")


# --- policy ---------------------------------------------------------------------------------

def _history(views: list[PremiumView]) -> list[dict[str, Any]]:
    """Each premium with its change from the previous period premium and why."""
    history = []
    previous: PremiumView | None = None
    for view in views:
        change = None if previous is None else view.premium_cents - previous.premium_cents
        lines = changes_between(view, previous)
        top = sorted(lines.items(), key=lambda kv: -abs(kv[1]))[:3]
        history.append({"view": view, "change_cents": change, "top_changes": top,
                        "previous": previous})
        if view.row.kind == "period":
            previous = view
    return history


def current_premium(views: list[PremiumView]) -> PremiumView | None:
    """The premium written last: a provisional one after a trip or a relabel, else the
    period's."""
    if not views:
        return None
    return max(views, key=lambda v: (v.row.updated_at, v.row.premium_id))


@router.get("/workbench/policies/{policy_id}")
def policy_page(request: Request, policy_id: PolicyId, who: StaffPage) -> Response:
    with pricing_store_of(request).connection() as conn:
        policy = wb_sql.get_policy(conn, policy_id)
        if policy is None:
            raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
        provisional.flush(conn, policy_id)  # include every trip scored so far
        views, bad = _views(conn, wb_sql.policy_premiums(conn, policy_id))
        trips = wb_sql.trip_overview(conn, policy_id)
        reviews = privacy_sql.list_reviews(conn, policy_id=policy_id)
        claims = wb_sql.policy_claims(conn, policy_id)
        audit = wb_sql.policy_audit(conn, policy_id)
    current = current_premium(views)
    waterfall = None
    if current is not None:
        waterfall = charts.waterfall([line.line for line in current.lines],
                                     [line.amount_cents for line in current.lines],
                                     current.minor_units, current.currency)
    return pages.render("policy.html", title=f"Policy {policy_id}", who=who, nav="",
                        policy=policy, current=current, waterfall=waterfall, bad=bad,
                        history=list(reversed(_history(views))), trips=trips, reviews=reviews,
                        claims=claims, audit=audit)


# --- trip -----------------------------------------------------------------------------------

def _event_rows(events: list[dict[str, Any]], started_at: datetime | None) -> list[dict[str, Any]]:
    origin = started_at.timestamp() if started_at else None
    rows = []
    for e in events:
        start = datetime.fromisoformat(e["start"])
        end = datetime.fromisoformat(e["end"])
        rows.append({**e, "start_at": start, "duration_s": (end - start).total_seconds(),
                     "start_s": start.timestamp(), "end_s": end.timestamp(),
                     "start_min": (start.timestamp() - origin) / 60 if origin else None,
                     "end_min": (end.timestamp() - origin) / 60 if origin else None,
                     "speed_kmh": e["speed_mps"] * 3.6 if e["speed_mps"] is not None else None,
                     "shown": e["lat_deg"] is not None and e["lon_deg"] is not None,
                     "evidence": None, "evidence_svg": None})
    return rows


PEAK_UNITS = {"braking": "m/s²", "acceleration": "m/s²", "cornering": "m/s²",
              "speeding": "km/h over", "phone_handling": "s", "fatigue": "min"}


def trip_context(conn: Any, device_id: str, trip_id: str) -> dict[str, Any]:
    """The trip page: the route without speeds or times, speed by minute, and each event
    with its evidence (its position and, for the kinds that turn on speed, its speed
    second by second over a few seconds); see telematics.service.trip_view."""
    trip = trip_sql.get_trip_summary(conn, device_id, trip_id)
    if trip is None:
        raise Problem(404, "not_found", f"no trip '{trip_id}' of device '{device_id}'",
                      "trip_id")
    features = trip_sql.get_features(conn, device_id, trip_id)
    events = _event_rows(trip_sql.get_events(conn, device_id, trip_id), trip.started_at)
    path = wb_sql.get_trip_path(conn, device_id, trip_id)
    route_svg = speed_svg = None
    profile = None
    if path is not None:
        marks = [charts.PointMark(e["lat_deg"], e["lon_deg"], e["kind"],
                                  f"event {e['event_no']}: {e['kind']} ({e['severity']})")
                 for e in events if e["shown"]]
        route_svg = charts.route(path.lat_deg, path.lon_deg, marks)
        origin = trip.started_at.timestamp() if trip.started_at else (
            float(path.t_s[0]) if path.t_s.size else 0.0)
        spans = [charts.SpanMark(e["start_min"], e["end_min"], e["kind"]) for e in events
                 if e["start_min"] is not None]
        profile = trip_view.speed_profile(path.t_s, path.speed_mps, origin)
        speed_svg = charts.speed_chart(profile.minute, profile.speed_kmh, spans)
        for e in events:
            if e["kind"] not in trip_view.TRACED_KINDS:
                continue
            evidence = trip_view.event_evidence(path.t_s, path.speed_mps, e["start_s"],
                                                e["end_s"])
            e["evidence"] = evidence
            e["evidence_svg"] = charts.evidence_trace(evidence.t_s, evidence.speed_kmh,
                                                      e["duration_s"], e["kind"])
    return {"trip": trip, "features": features, "events": events, "path": path,
            "time_zone": trip_sql.policy_time_zone(conn, trip.policy_id),
            "route_svg": route_svg, "speed_svg": speed_svg, "profile": profile,
            "profile_rows": [] if profile is None else list(zip(
                profile.minute.tolist(), profile.speed_kmh.tolist(), strict=True)),
            "peak_units": PEAK_UNITS, "route_step_m": charts.ROUTE_STEP_M,
            "speed_step_kmh": trip_view.SPEED_STEP_KMH,
            "evidence_pad_s": trip_view.EVIDENCE_PAD_S,
            "evidence_max_s": trip_view.EVIDENCE_MAX_S,
            "traced_kinds": sorted(trip_view.TRACED_KINDS)}


@router.get("/workbench/trips/{device_id}/{trip_id}")
def trip_page(request: Request, device_id: DeviceId, trip_id: TripId, who: StaffPage) -> Response:
    with pricing_store_of(request).connection() as conn:
        context = trip_context(conn, device_id, trip_id)
    return pages.render("trip.html", title=f"Trip {trip_id}", who=who, nav="", **context)


@router.post("/workbench/trips/{device_id}/{trip_id}/label")
async def trip_label(request: Request, device_id: DeviceId, trip_id: TripId,
                     who: StaffAction) -> Response:
    form = await pages.read_form(request)
    label = pages.field(form, "label", choices=("driver", "passenger", "transit", "not_me"))
    reason = pages.field(form, "reason", required=False, max_length=500) or None

    def run() -> None:
        with pricing_store_of(request).connection() as conn, conn.transaction():
            trip = trip_sql.get_trip_summary(conn, device_id, trip_id, for_update=True)
            if trip is None:
                raise Problem(404, "not_found", f"no trip '{trip_id}' of device '{device_id}'")
            new = None if label == "driver" else label
            trip_sql.set_label(conn, device_id, trip_id, new)
            trip_sql.audit(conn, actor=f"staff:{who.name}", action="trip.label.review",
                           policy_id=trip.policy_id, subject=trip_id,
                           detail={"from": trip.label, "to": new, "reason": reason})
            reprice_provisional(conn, trip.policy_id)
    await run_in_threadpool(run)
    return pages.redirect(f"/workbench/trips/{quote(device_id)}/{quote(trip_id)}")


# --- reviews and replay ---------------------------------------------------------------------

@router.get("/workbench/reviews")
def review_queue(request: Request, who: StaffPage) -> Response:
    with pricing_store_of(request).connection() as conn:
        reviews = review_view.review_entries(conn, privacy_sql.list_reviews(conn, status="open"))
        relabels = wb_sql.relabels_to_review(conn)
    return pages.render("reviews.html", title="Review queue", who=who, nav="reviews",
                        reviews=reviews, relabels=relabels)


@router.post("/workbench/reviews/{review_id}/decision")
async def decide_review(request: Request, review_id: RowId, who: StaffAction) -> Response:
    form = await pages.read_form(request)
    decision = pages.field(form, "decision", choices=("accepted", "rejected"))
    note = pages.field(form, "note")

    def run() -> None:
        with pricing_store_of(request).connection() as conn, conn.transaction():
            decided = privacy_sql.decide_review(conn, review_id, decision, note,
                                                f"staff:{who.name}")
            if decided is None:
                raise Problem(404, "not_found", f"no open review {review_id}", "review_id")
            trip_sql.audit(conn, actor=f"staff:{who.name}", action="review.decide",
                           policy_id=decided["policy_id"], subject=str(review_id),
                           detail={"decision": decision, "note": note, "via": "workbench"})
    await run_in_threadpool(run)
    return pages.redirect("/workbench/reviews")


@router.post("/workbench/relabels/{device_id}/{trip_id}/decision")
async def decide_relabel(request: Request, device_id: DeviceId, trip_id: TripId,
                         who: StaffAction) -> Response:
    """Accept the driver's label (the trip stays out of pricing) or reject it (the trip
    counts again as driven); either way the decision lands in the audit trail."""
    form = await pages.read_form(request)
    decision = pages.field(form, "decision", choices=("accepted", "rejected"))
    note = pages.field(form, "note")

    def run() -> None:
        with pricing_store_of(request).connection() as conn, conn.transaction():
            trip = trip_sql.get_trip_summary(conn, device_id, trip_id, for_update=True)
            if trip is None or trip.label not in wb_sql.EXCLUDING_LABELS:
                raise Problem(404, "not_found", f"no relabelled trip '{trip_id}' of device "
                              f"'{device_id}'", "trip_id")
            if decision == "rejected":
                trip_sql.set_label(conn, device_id, trip_id, None)
            trip_sql.audit(conn, actor=f"staff:{who.name}",
                           action="trip.label.accept" if decision == "accepted"
                           else "trip.label.reject",
                           policy_id=trip.policy_id, subject=trip_id,
                           detail={"label": trip.label, "decision": decision, "note": note})
            if decision == "rejected":
                reprice_provisional(conn, trip.policy_id)
    await run_in_threadpool(run)
    return pages.redirect("/workbench/reviews")


@router.post("/workbench/premiums/{premium_id}/replay")
def replay(request: Request, premium_id: RowId, who: StaffAction) -> Response:
    with pricing_store_of(request).connection() as conn, conn.transaction():
        row = wb_sql.get_premium(conn, premium_id)
        if row is None:
            raise Problem(404, "not_found", f"no premium {premium_id}", "premium_id")
        plan_row = wb_sql.get_plan(conn, row.plan_version)
        try:
            view = premium_view(row, load_plan(plan_row))
        except BreakdownError as error:
            raise Problem(422, "invalid_breakdown", str(error), "breakdown") from None
        outcome = replay_premium(view, plan_row)
        trip_sql.audit(conn, actor=f"staff:{who.name}", action="premium.replay",
                       policy_id=row.policy_id, subject=str(premium_id),
                       detail=outcome.to_dict())
    return pages.render("replay.html", title=f"Replay of premium {premium_id}", who=who,
                        nav="", view=view, outcome=outcome)
