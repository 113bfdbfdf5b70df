"""The FastAPI application: device uploads, trip and policy reads, staff administration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from telematics.core.timezones import iana_zone
from telematics.ingest import MAX_BODY_BYTES, WireError, decode_body
from telematics.provisional import mark_due
from telematics.service import problems, uploads
from telematics.service.auth import (
    AdminDep,
    AnyPrincipal,
    DeviceDep,
    UnderwriterDep,
)
from telematics.service.deps import idempotent, pricing_store_of, store_of
from telematics.service.premium_view import reprice_provisional
from telematics.service.problems import Problem, Text
from telematics.service.ratelimit import RateLimiter
from telematics.service.settings import Settings
from telematics.store import access
from telematics.store import trips as trip_sql
from telematics.store.privacy import check_pricing_role
from telematics.store.repository import Store

log = logging.getLogger("ubi.service")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
TripId = Annotated[str, Path(pattern=ID_PATTERN, description="the trip's id, chosen by the app")]
PolicyId = Annotated[str, Path(pattern=ID_PATTERN)]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description="a UUID, unique per write")]
ContentEncoding = Annotated[str | None, Header(alias="Content-Encoding")]

GPS_COLUMNS = {"type": "object", "required": ["seq", "t_us", "lat_deg", "lon_deg"],
               "additionalProperties": False,
               "properties": {n: {"type": "array", "items": {"type": ["number", "null"]}}
                              for n in ("seq", "t_us", "lat_deg", "lon_deg", "speed_mps",
                                        "heading_deg", "accuracy_m", "altitude_m",
                                        "speed_limit_mps")}}
IMU_COLUMNS = {"type": "object", "required": ["seq", "t_us", "acc_x_mps2", "acc_y_mps2",
                                              "acc_z_mps2"],
               "additionalProperties": False,
               "properties": {n: {"type": "array", "items": {"type": ["number", "null"]}}
                              for n in ("seq", "t_us", "acc_x_mps2", "acc_y_mps2", "acc_z_mps2",
                                        "gyr_x_radps", "gyr_y_radps", "gyr_z_radps")}}
TRIP_BATCH_SCHEMA = {
    "type": "object", "required": ["device_id"], "additionalProperties": False,
    "properties": {"device_id": {"type": "string", "minLength": 1, "maxLength": 128},
                   "trip_id": {"type": "string"},
                   "batch_no": {"type": "integer", "minimum": 0}, "final": {"type": "boolean"},
                   "gps": GPS_COLUMNS, "imu": IMU_COLUMNS},
}
OBD_FEED_SCHEMA = {
    "type": "object", "required": ["device_id", "feed_id", "obd"], "additionalProperties": False,
    "properties": {"device_id": {"type": "string", "minLength": 1, "maxLength": 128},
                   "feed_id": {"type": "string", "minLength": 1, "maxLength": 128},
                   "obd": {"type": "object", "required": ["seq", "t_us"]}},
}


PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "code", "detail"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "code": {"type": "string"},
                   "detail": {"type": "string"}, "field": {"type": "string"}},
}
PROBLEM_STATUSES = {400: "malformed request or Idempotency-Key",
                    401: "missing or unknown credentials", 403: "wrong role or scope",
                    404: "no such resource for this caller",
                    409: "conflict (a request with this key is still running)",
                    413: "body or batch too large", 415: "unsupported Content-Encoding",
                    422: "invalid content", 429: "rate limited (see Retry-After)",
                    503: "database unavailable (see Retry-After)"}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"description": text,
           "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}}
    for code, text in PROBLEM_STATUSES.items()}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy_id: str = Field(pattern=ID_PATTERN)
    time_zone: Text = Field(description="IANA time zone, e.g. Europe/Amsterdam")
    rating_factors: dict[Text, Text | int | float] = Field(default_factory=dict)
    start_date: date | None = Field(default=None,
                                    description="first day of cover (default: today)")


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=ID_PATTERN)
    policy_id: str = Field(pattern=ID_PATTERN)
    kind: Literal["phone", "obd"] = "phone"


class DeviceOut(BaseModel):
    device_id: str
    policy_id: str
    kind: str
    api_key: str = Field(description="shown once; store it on the device")


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Literal["driver", "passenger", "transit", "not_me"]
    reason: Text | None = Field(default=None, max_length=500)


async def read_body(request: Request, encoding: str | None) -> bytes:
    """The body, refusing more than the limit before buffering it all."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise WireError("body_too_large", "body", f"exceeds {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding is None:  # nothing to inflate: not worth a trip to the thread pool
        return decode_body(body, encoding)
    return await run_in_threadpool(decode_body, body, encoding)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from telematics.scoring import warm_up

        store = Store(settings.database_url, max_size=settings.pool_max_size,
                      timeout_s=settings.pool_timeout_s)
        # The pricing side connects as the role ubi_pricing, which cannot read raw samples
        # or credentials; a connection whose role could is refused before it is used.
        pricing = Store(settings.pricing_database_url, max_size=settings.pricing_pool_max_size,
                        timeout_s=settings.pool_timeout_s, configure=check_pricing_role)
        store.open(wait=False)
        pricing.open(wait=False)
        app.state.store = store
        app.state.pricing_store = pricing
        await run_in_threadpool(warm_up)
        tasks = [asyncio.create_task(_sweep_inactive(app, settings)),
                 asyncio.create_task(_reprice_due(app, settings))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            pricing.close()
            store.close()

    app = FastAPI(title="ubi telematics", version="1", lifespan=lifespan, responses=PROBLEMS,
                  description="Uploads from phones and OBD dongles, trip features and scores, "
                              "and the underwriter's review endpoints.")
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
    problems.install(app)
    from telematics.service.privacy_routes import router as privacy_router

    app.include_router(privacy_router)
    from telematics.service import driver, pages, workbench

    app.include_router(workbench.router)
    app.include_router(driver.router)
    app.include_router(pages.static_router)

    @app.get("/v1/health", tags=["service"])
    def health(request: Request) -> dict[str, str]:
        for store in (store_of(request), pricing_store_of(request)):
            with store.connection() as conn:
                conn.execute("SELECT 1")
        return {"status": "ok"}

    @app.post("/v1/trips/{trip_id}/batches", tags=["uploads"],
              openapi_extra=_json_body(TRIP_BATCH_SCHEMA),
              summary="Upload a batch of a trip's GPS and IMU samples")
    async def upload_batch(request: Request, trip_id: TripId, who: DeviceDep,
                           idempotency_key: IdempotencyKey = None,
                           content_encoding: ContentEncoding = None) -> Response:
        uploads.check_idempotency_key(idempotency_key)
        body = await read_body(request, content_encoding)

        def factory() -> uploads.Work:
            batch_no, final, gps, imu = uploads.parse_trip_batch(body, trip_id, who, settings)
            return uploads.trip_batch_work(store_of(request), settings, who, trip_id, batch_no,
                                           final, gps, imu)
        return await idempotent(request, who, idempotency_key, body, factory)

    @app.post("/v1/trips/{trip_id}/close", tags=["uploads"],
              summary="Close a trip: compute its features and events now")
    async def close_trip(request: Request, trip_id: TripId, who: DeviceDep,
                         idempotency_key: IdempotencyKey = None) -> Response:
        return await idempotent(request, who, idempotency_key, b"",
                                lambda: uploads.close_work(who, trip_id))

    @app.post("/v1/trips/{trip_id}/gpx", tags=["uploads"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/gpx+xml": {"schema": {"type": "string"}}}}},
              summary="Import a GPX track as a closed trip")
    async def import_gpx(request: Request, trip_id: TripId, who: DeviceDep,
                         idempotency_key: IdempotencyKey = None,
                         content_encoding: ContentEncoding = None) -> Response:
        uploads.check_idempotency_key(idempotency_key)
        body = await read_body(request, content_encoding)

        def factory() -> uploads.Work:
            gps = uploads.parse_gpx(body, settings)
            return uploads.trip_batch_work(store_of(request), settings, who, trip_id, 0, True,
                                           gps, None, source="gpx")
        return await idempotent(request, who, idempotency_key, body, factory)

    @app.post("/v1/obd/feeds", tags=["uploads"], openapi_extra=_json_body(OBD_FEED_SCHEMA),
              summary="Upload a piece of an OBD dongle's continuous feed")
    async def upload_obd(request: Request, who: DeviceDep,
                         idempotency_key: IdempotencyKey = None,
                         content_encoding: ContentEncoding = None) -> Response:
        uploads.check_idempotency_key(idempotency_key)
        body = await read_body(request, content_encoding)

        def factory() -> uploads.Work:
            feed_id, obd = uploads.parse_obd_feed(body, who, settings)
            return uploads.obd_feed_work(store_of(request), who, feed_id, obd)
        return await idempotent(request, who, idempotency_key, body, factory)

    @app.post("/v1/trips/{trip_id}/label", tags=["uploads"],
              summary="Label a trip as driven, passenger, transit or not me (30-day window)")
    async def label_trip(request: Request, trip_id: TripId, label: LabelIn, who: DeviceDep,
                         idempotency_key: IdempotencyKey = None) -> Response:
        body = label.model_dump_json().encode()

        def factory() -> uploads.Work:
            def work(conn: Any) -> tuple[int, dict[str, Any]]:
                trip = trip_sql.get_trip(conn, who.device_id or "", trip_id, for_update=True)
                if trip is None:
                    raise Problem(404, "not_found", f"no trip '{trip_id}' for this device",
                                  "trip_id")
                window = timedelta(days=settings.label_window_days)
                started = trip.started_at or datetime.now(UTC)
                if datetime.now(UTC) - started > window:
                    raise Problem(422, "label_window_closed", f"trips can be relabelled within "
                                  f"{settings.label_window_days} days", "trip_id")
                new = None if label.label == "driver" else label.label
                trip_sql.set_label(conn, trip.device_id, trip_id, new)
                trip_sql.audit(conn, actor=f"device:{who.device_id}", action="trip.label",
                               policy_id=trip.policy_id, subject=trip_id,
                               detail={"from": trip.label, "to": new, "reason": label.reason})
                mark_due(conn, trip.policy_id)  # repriced on the pricing side
                return 200, {"trip_id": trip_id, "label": label.label}
            return work
        return await idempotent(request, who, idempotency_key, body, factory)

    @app.get("/v1/trips/{trip_id}", tags=["reads"],
             summary="A trip's status, features and events")
    def read_trip(request: Request, trip_id: TripId, who: DeviceDep) -> dict[str, Any]:
        with store_of(request).connection() as conn:
            trip = trip_sql.get_trip(conn, who.device_id or "", trip_id)
            if trip is None:
                raise Problem(404, "not_found", f"no trip '{trip_id}' for this device", "trip_id")
            return _trip_view(conn, trip)

    @app.get("/v1/policies/{policy_id}/score", tags=["reads"],
             summary="The policy's current driving score and its data")
    def read_score(request: Request, policy_id: PolicyId, who: AnyPrincipal) -> dict[str, Any]:
        from telematics.scoring import policy_score

        if not who.can_read_policy(policy_id):
            raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
        with pricing_store_of(request).connection() as conn:
            if conn.execute("SELECT 1 FROM policies WHERE policy_id = %s",
                            (policy_id,)).fetchone() is None:
                raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
            return policy_score(conn, policy_id)

    @app.get("/v1/policies/{policy_id}/trips", tags=["reads"],
             summary="The policy's trips, newest first")
    def read_policy_trips(request: Request, policy_id: PolicyId,
                          who: AnyPrincipal) -> dict[str, Any]:
        if not who.can_read_policy(policy_id):
            raise Problem(404, "not_found", f"no policy '{policy_id}'", "policy_id")
        with pricing_store_of(request).connection() as conn:
            trips = trip_sql.list_policy_trips(conn, policy_id)
            return {"policy_id": policy_id, "trips": [_trip_summary(t) for t in trips]}

    @app.post("/v1/review/trips/{device_id}/{trip_id}/label", tags=["underwriter"],
              summary="Set or reverse a trip's label, recorded in the audit trail")
    def review_label(request: Request, device_id: DeviceId, trip_id: TripId, label: LabelIn,
                     who: UnderwriterDep) -> dict[str, Any]:
        with pricing_store_of(request).connection() as conn, conn.transaction():
            trip = trip_sql.get_trip_summary(conn, device_id, trip_id, for_update=True)
            if trip is None:
                raise Problem(404, "not_found", f"no trip '{trip_id}' of device '{device_id}'")
            new = None if label.label == "driver" else label.label
            trip_sql.set_label(conn, device_id, trip_id, new)
            trip_sql.audit(conn, actor=f"staff:{who.name}", action="trip.label.review",
                           policy_id=trip.policy_id, subject=trip_id,
                           detail={"from": trip.label, "to": new, "reason": label.reason})
            reprice_provisional(conn, trip.policy_id)
        return {"device_id": device_id, "trip_id": trip_id, "label": label.label}

    @app.post("/v1/policies", tags=["admin"], status_code=201,
              summary="Create or update a policy")
    def create_policy(request: Request, policy: PolicyIn, who: AdminDep) -> dict[str, Any]:
        try:
            iana_zone(policy.time_zone)
        except ValueError:
            raise Problem(422, "bad_time_zone", f"'{policy.time_zone[:64]}' is not an IANA "
                          "time zone", "time_zone") from None
        store_of(request).upsert_policy(policy.policy_id, policy.time_zone, policy.rating_factors,
                                        start_date=policy.start_date)
        return policy.model_dump(mode="json")

    @app.post("/v1/devices", tags=["admin"], status_code=201, response_model=DeviceOut,
              summary="Register a device for a policy and issue its API key (shown once)")
    def register_device(request: Request, device: DeviceIn, who: AdminDep) -> DeviceOut:
        key = access.new_secret("ubk")
        with store_of(request).connection() as conn, conn.transaction():
            if conn.execute("SELECT 1 FROM policies WHERE policy_id = %s",
                            (device.policy_id,)).fetchone() is None:
                raise Problem(422, "unknown_policy", f"no policy '{device.policy_id}'",
                              "policy_id")
            inserted = conn.execute(
                "INSERT INTO devices (device_id, policy_id, kind, api_key_hash)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) DO NOTHING RETURNING 1",
                (device.device_id, device.policy_id, device.kind,
                 access.hash_secret(key))).fetchone()
            if inserted is None:
                raise Problem(409, "device_exists", f"device '{device.device_id}' is already "
                              "registered", "device_id")
            trip_sql.audit(conn, actor=f"staff:{who.name}", action="device.register",
                           policy_id=device.policy_id, subject=device.device_id, detail={})
        return DeviceOut(device_id=device.device_id, policy_id=device.policy_id,
                         kind=device.kind, api_key=key)

    return app


def _trip_summary(trip: trip_sql.TripSummary) -> dict[str, Any]:
    return {"device_id": trip.device_id, "trip_id": trip.trip_id, "status": trip.status,
            "source": trip.source,
            "started_at": trip.started_at.isoformat() if trip.started_at else None,
            "ended_at": trip.ended_at.isoformat() if trip.ended_at else None,
            "transport_mode": trip.transport_mode, "label": trip.label or "driver"}


def _trip_view(conn: Any, trip: trip_sql.Trip) -> dict[str, Any]:
    view = _trip_summary(trip)
    view["samples"] = {"gps": trip.n_gps, "imu": trip.n_imu}
    view["features"] = trip_sql.get_features(conn, trip.device_id, trip.trip_id)
    view["events"] = trip_sql.get_events(conn, trip.device_id, trip.trip_id)
    return view


async def _reprice_due(app: FastAPI, settings: Settings) -> None:
    """Keep provisional premiums current: every interval, reprice the policies marked due
    by scored trips and label changes, a few hundred at a time, as the pricing role (every
    worker process runs one; they never claim the same)."""
    from telematics.provisional import reprice_round

    def reprice() -> int:
        store: Store = app.state.pricing_store
        with store.connection() as conn:
            return reprice_round(conn)

    while True:
        await asyncio.sleep(settings.provisional_interval_s)
        try:
            await run_in_threadpool(reprice)
        except Exception:  # must outlive a database restart
            log.warning("repricing due provisional premiums failed; retrying", exc_info=True)
            await asyncio.sleep(max(settings.provisional_interval_s, 5.0))


async def _sweep_inactive(app: FastAPI, settings: Settings) -> None:
    """Close and score trips that have had no upload for the inactivity window."""
    from telematics.scoring import score_trip

    def sweep() -> int:
        store: Store = app.state.store
        with store.connection() as conn:
            stale = trip_sql.inactive_open_trips(conn, settings.inactivity_close_s)
            conn.commit()
            for device_id, trip_id in stale:
                with conn.transaction():
                    score_trip(conn, device_id, trip_id)
                    trip = trip_sql.get_trip(conn, device_id, trip_id)
                    if trip is not None:
                        mark_due(conn, trip.policy_id)
        return len(stale)

    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            closed = await run_in_threadpool(sweep)
            if closed:
                log.info("closed %d inactive trips", closed)
        except Exception:  # the sweeper must outlive a database restart
            log.exception("inactive-trip sweep failed; retrying at the next interval")
