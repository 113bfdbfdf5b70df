"""Customer control: consent, transparency, export, erasure and human review."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from telematics import maintenance
from telematics.service import review_view, uploads
from telematics.service.auth import AnyPrincipal, DeviceDep, Principal, UnderwriterDep
from telematics.service.deps import idempotent, pricing_store_of, store_of
from telematics.service.problems import Problem, Text
from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store import workbench as wb_sql
from telematics.store.repository import GPS, read_samples

router = APIRouter()
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PolicyId = Annotated[str, Path(pattern=ID_PATTERN)]
TripId = Annotated[str, Path(pattern=ID_PATTERN)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]

TRANSPARENCY = {
    "location": {
        "collected": "GPS positions, speed and heading once a second while a trip is recorded",
        "kept": "raw positions for the retention window (90 days by default), then deleted; "
                "trip summaries for the life of the policy plus the legal period",
        "price_effect": "kilometres driven, night and rush-hour driving, speeding and road "
                        "type shares are rating factors; underwriters never see the first and "
                        "last few hundred metres of a trip",
    },
    "motion": {
        "collected": "accelerometer and gyroscope of the phone while a trip is recorded",
        "kept": "raw samples for the retention window, then deleted",
        "price_effect": "harsh braking, acceleration and cornering rates per 100 km, only "
                        "with consent for pricing (otherwise those come from GPS alone)",
    },
    "phone_use": {
        "collected": "whether the phone was handled while the car moved (not what was done)",
        "kept": "as events of the trip, for the life of the policy plus the legal period",
        "price_effect": "minutes of phone handling while driving per 100 km, only with "
                        "consent for pricing (otherwise not detected at all)",
    },
    "obd": {
        "collected": "vehicle speed, engine speed, odometer and ignition from the OBD dongle",
        "kept": "raw samples for the retention window, then deleted",
        "price_effect": "kilometres driven (odometer), reconciled with GPS distance",
    },
}


def _own_policy(who: Principal, policy_id: str, *, staff_scope: str | None = None) -> None:
    """Devices see only their own policy; staff need the scope. Others get 404."""
    if who.kind == "device":
        if who.policy_id != policy_id:
            raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
        return
    if staff_scope is None:
        raise Problem(403, "forbidden", "this endpoint is for the policyholder's device")
    if staff_scope not in who.scopes and "admin" not in who.scopes:
        raise Problem(403, "forbidden", f"requires the '{staff_scope}' scope")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default,
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Literal["location", "motion", "phone_use", "obd"]
    purpose: Literal["pricing", "coaching", "claims"]
    granted: bool
    text_version: Text = Field(min_length=1, max_length=64,
                              description="version of the consent text the driver saw")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["premium", "trip_label", "event"] = "premium"
    reason: Text = Field(min_length=1, max_length=2000)
    premium_id: int | None = Field(default=None, ge=1, le=2**62,
                                   description="the premium contested; the latest if none")
    trip_id: str | None = Field(default=None, pattern=ID_PATTERN,
                                description="the trip the request is about, if any")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["accepted", "rejected"]
    note: Text = Field(min_length=1, max_length=2000)


@router.get("/v1/transparency", tags=["privacy"],
            summary="What is collected, how long it is kept and how it affects the price")
def transparency(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {"categories": TRANSPARENCY, "raw_retention_days": settings.retention_days,
            "label_window_days": settings.label_window_days,
            "without_consent": "a category without consent is not collected; the price uses "
                               "the rating plan's rule for missing data"}


@router.post("/v1/policies/{policy_id}/consents", tags=["privacy"],
             summary="Grant or withdraw consent for a data category and purpose")
async def set_consent(request: Request, policy_id: PolicyId, consent: ConsentIn,
                      who: DeviceDep, idempotency_key: IdempotencyKey = None) -> Response:
    _own_policy(who, policy_id)

    def factory() -> uploads.Work:
        def work(conn: Any) -> tuple[int, dict[str, Any]]:
            at = privacy_sql.record_consent(conn, policy_id, consent.category, consent.purpose,
                                            consent.granted, consent.text_version)
            trip_sql.audit(conn, actor=f"device:{who.device_id}", action="consent.set",
                           policy_id=policy_id, subject=consent.category,
                           detail=consent.model_dump())
            return 200, {**consent.model_dump(), "at": at.isoformat()}
        return work
    return await idempotent(request, who, idempotency_key, consent.model_dump_json().encode(),
                            factory)


@router.get("/v1/policies/{policy_id}/consents", tags=["privacy"],
            summary="The current consent per category and purpose")
def get_consents(request: Request, policy_id: PolicyId, who: AnyPrincipal) -> dict[str, Any]:
    _own_policy(who, policy_id, staff_scope="underwriter")
    with pricing_store_of(request).connection() as conn:
        current = privacy_sql.current_consents(conn, policy_id)
    return {"policy_id": policy_id, "consents": [
        {"category": cat, "purpose": pur, "granted": c["granted"],
         "text_version": c["text_version"], "at": c["at"].isoformat()}
        for (cat, pur), c in sorted(current.items())]}


@router.get("/v1/policies/{policy_id}/export", tags=["privacy"],
            summary="Everything held about the policyholder, streamed as JSON")
def export(request: Request, policy_id: PolicyId, who: DeviceDep) -> StreamingResponse:
    _own_policy(who, policy_id)
    store = store_of(request)

    # Logged before the first byte leaves: a download cut half way has still let data out.
    with store.connection() as conn:
        trip_sql.audit(conn, actor=f"device:{who.device_id}", action="policy.export",
                       policy_id=policy_id, subject=None,
                       detail={"sections": list(privacy_sql.EXPORT_QUERIES)})
        conn.commit()

    def stream() -> Iterator[bytes]:
        with store.connection() as conn:
            yield b'{"policy_id":' + _dumps(policy_id) + b',"sections":{'
            for i, table in enumerate(privacy_sql.EXPORT_QUERIES):
                yield (b"," if i else b"") + _dumps(table) + b":["
                for j, row in enumerate(privacy_sql.iter_export_rows(conn, table, policy_id)):
                    yield (b"," if j else b"") + _dumps(row)
                yield b"]"
            yield b"}}"
            conn.rollback()

    return StreamingResponse(stream(), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="ubi-export-{policy_id}.json"'})


@router.get("/v1/policies/{policy_id}/trips/{trip_id}/gpx", tags=["privacy"],
            summary="One of the policyholder's trips as GPX, every stored position")
def export_gpx(request: Request, policy_id: PolicyId, trip_id: TripId,
               who: DeviceDep) -> Response:
    _own_policy(who, policy_id)
    with store_of(request).connection() as conn:
        trip = trip_sql.find_policy_trip(conn, policy_id, trip_id)
        if trip is None:
            raise Problem(404, "not_found", f"no trip '{trip_id}'", "trip_id")
        gps = read_samples(conn, GPS, trip.device_id, trip_id)
        trip_sql.audit(conn, actor=f"device:{who.device_id}", action="trip.export_gpx",
                       policy_id=policy_id, subject=trip_id, detail={})
        conn.commit()
    keep = np.isfinite(gps["lat_deg"]) & np.isfinite(gps["lon_deg"])
    body = uploads.write_gpx(trip_id, gps["t_us"][keep], gps["lat_deg"][keep],
                             gps["lon_deg"][keep])
    return Response(body, media_type="application/gpx+xml")


@router.post("/v1/policies/{policy_id}/erase", tags=["privacy"],
             summary="Erase the policyholder's data; premium records stay pseudonymised")
def erase(request: Request, policy_id: PolicyId, who: AnyPrincipal,
          idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    _own_policy(who, policy_id, staff_scope="admin")
    if who.kind == "device":
        # The device's credentials are erased with the policy, so no idempotency record
        # can outlive it; erasing twice is harmless (the second call finds nothing).
        uploads.check_idempotency_key(idempotency_key)
    with store_of(request).connection() as conn, conn.transaction():
        exists = conn.execute("SELECT 1 FROM policies WHERE policy_id = %s FOR UPDATE",
                              (policy_id,)).fetchone()
        if exists is None:
            raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
        actor = "policyholder" if who.kind == "device" else f"staff:{who.name}"
        result = maintenance.erase_policyholder(conn, policy_id, actor)
    return {"erased": True, "deleted": result["deleted"]}


@router.post("/v1/policies/{policy_id}/reviews", tags=["privacy"], status_code=200,
             summary="Ask for a human review of an automated decision")
async def request_review(request: Request, policy_id: PolicyId, review: ReviewIn,
                         who: DeviceDep, idempotency_key: IdempotencyKey = None) -> Response:
    _own_policy(who, policy_id)

    def factory() -> uploads.Work:
        def work(conn: Any) -> tuple[int, dict[str, Any]]:
            if review.premium_id is not None:
                premium = wb_sql.get_premium(conn, review.premium_id)
                if premium is None or premium.policy_id != policy_id:
                    raise Problem(422, "invalid_reference", f"premium {review.premium_id} is"
                                  f" not a premium of policy '{policy_id}'", "premium_id")
            device_id = who.device_id
            if review.trip_id is not None:
                trip = trip_sql.find_policy_trip(conn, policy_id, review.trip_id)
                if trip is None:
                    raise Problem(422, "invalid_reference", f"trip '{review.trip_id}' is not"
                                  f" a trip of policy '{policy_id}'", "trip_id")
                device_id = trip.device_id  # the trip's, which the queue links to
            review_id = privacy_sql.open_review(
                conn, policy_id=policy_id, kind=review.kind, reason=review.reason,
                premium_id=review.premium_id, device_id=device_id, trip_id=review.trip_id)
            trip_sql.audit(conn, actor=f"device:{who.device_id}", action="review.request",
                           policy_id=policy_id, subject=str(review_id),
                           detail=review.model_dump())
            return 200, {"review_id": review_id, "status": "open"}
        return work
    return await idempotent(request, who, idempotency_key, review.model_dump_json().encode(),
                            factory)


@router.get("/v1/policies/{policy_id}/reviews", tags=["privacy"],
            summary="The policyholder's review requests and their decisions")
def list_policy_reviews(request: Request, policy_id: PolicyId,
                        who: AnyPrincipal) -> dict[str, Any]:
    _own_policy(who, policy_id, staff_scope="underwriter")
    with pricing_store_of(request).connection() as conn:
        return {"policy_id": policy_id,
                "reviews": privacy_sql.list_reviews(conn, policy_id=policy_id)}


@router.get("/v1/review/queue", tags=["underwriter"],
            summary="Open review requests, oldest first, each with the premium's breakdown"
                    " in money and the evidence")
def review_queue(request: Request, who: UnderwriterDep) -> dict[str, Any]:
    with pricing_store_of(request).connection() as conn:
        return {"reviews": review_view.review_entries(
            conn, privacy_sql.list_reviews(conn, status="open"))}


@router.post("/v1/review/requests/{review_id}/decision", tags=["underwriter"],
             summary="Accept or reject a review request; recorded in the audit trail")
async def decide(request: Request, review_id: Annotated[int, Path(ge=1, le=2**62)],
                 decision: DecisionIn, who: UnderwriterDep) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with pricing_store_of(request).connection() as conn, conn.transaction():
            decided = privacy_sql.decide_review(conn, review_id, decision.decision,
                                                decision.note, f"staff:{who.name}")
            if decided is None:
                raise Problem(404, "not_found", f"no open review {review_id}", "review_id")
            trip_sql.audit(conn, actor=f"staff:{who.name}", action="review.decide",
                           policy_id=decided["policy_id"], subject=str(review_id),
                           detail=decision.model_dump())
            return decided
    return await run_in_threadpool(run)
