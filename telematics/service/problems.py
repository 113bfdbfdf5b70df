"""Errors as JSON problem documents (RFC 9457) with a stable machine-readable `code`."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from telematics.ingest import WireError
from telematics.store.repository import BatchError

PROBLEM_TYPE = "application/problem+json"
DB_RETRY_AFTER_S = 5


class Problem(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, code: str, message: str, field: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": f"about:blank#{code}", "title": code.replace("_", " "),
                            "status": status, "code": code, "detail": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_TYPE,
                    headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc.status, exc.code, exc.message, exc.field, exc.headers,
                                **exc.extra)

    @app.exception_handler(WireError)
    async def _wire(request: Request, exc: WireError) -> Response:
        return problem_response(exc.status, exc.code, exc.message, exc.field, **exc.extra)

    @app.exception_handler(BatchError)
    async def _batch(request: Request, exc: BatchError) -> Response:
        return problem_response(422, "invalid_samples", exc.problem, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid"}
        path = ".".join(str(p) for p in first.get("loc", ()))
        return problem_response(422, "invalid_request", str(first.get("msg")), path,
                                errors=[{"field": ".".join(str(p) for p in e.get("loc", ())),
                                         "message": e.get("msg")} for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 403: "forbidden", 415: "unsupported_media_type"}
        return problem_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                                str(exc.detail), headers=getattr(exc, "headers", None))

    async def _database_down(request: Request, exc: Exception) -> Response:
        return problem_response(503, "database_unavailable",
                                "the database is unavailable; retry later",
                                headers={"Retry-After": str(DB_RETRY_AFTER_S)})

    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _database_down)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# Free text from a request: PostgreSQL text and jsonb cannot hold NUL characters, so they
# are refused at the edge with the field named, never half-way through a transaction.
Text = Annotated[str, AfterValidator(_no_nul)]
