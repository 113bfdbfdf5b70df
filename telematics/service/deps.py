"""Request-scoped helpers shared by the routers: the store, rate limits, idempotent writes."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from telematics.service import uploads
from telematics.service.auth import Principal
from telematics.service.problems import Problem
from telematics.service.ratelimit import RateLimiter
from telematics.store.repository import Store


def store_of(request: Request) -> Store:
    """The main pool: device writes, raw samples, credentials, administration."""
    store: Store = request.app.state.store
    return store


def pricing_store_of(request: Request) -> Store:
    """The pool connected as the role ubi_pricing: everything that reads only aggregates
    (the workbench, the underwriter API, premiums and scores), never raw samples."""
    store: Store = request.app.state.pricing_store
    return store


def limit(request: Request, who: Principal) -> None:
    wait = request.app.state.limiter.acquire(who.name)
    if wait > 0:
        raise Problem(429, "rate_limited", "too many requests from this device",
                      headers={"Retry-After": RateLimiter.retry_after_header(wait)})


async def idempotent(request: Request, who: Principal, key: str | None, body: bytes,
                     work_factory: Callable[[], uploads.Work]) -> Response:
    """Run a device write once per Idempotency-Key, off the event loop."""
    checked = uploads.check_idempotency_key(key)
    limit(request, who)
    fingerprint = uploads.request_fingerprint(request.method, request.url.path, body)
    assert who.device_id is not None
    device_id = who.device_id

    def run() -> Response:  # parse and write in one trip to the thread pool
        work = work_factory()
        return uploads.run_idempotent(store_of(request), request.app.state.settings,
                                      device_id, checked, fingerprint, work)
    return await run_in_threadpool(run)
