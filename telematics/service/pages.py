"""Server-rendered pages: the Jinja2 environment, small forms, static assets, cookies."""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import jinja2
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from pricing.money import minor_units_to_decimal
from telematics.service.problems import Problem

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16_384
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
# Pages hold personal data: never cached, framed or fed from another origin. Inline styles
# stay allowed for matplotlib's SVG <style> blocks.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

static_router = APIRouter(include_in_schema=False)


def _money(cents: Any, minor_units: int = 2, signed: bool = False) -> str:
    if cents is None:
        return "–"
    amount = minor_units_to_decimal(abs(int(cents)), minor_units)
    sign = "-" if int(cents) < 0 else ("+" if signed and int(cents) > 0 else "")
    return f"{sign}{amount:,}"


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, Decimal):
        return f"{value:,.{digits}f}"
    return f"{float(value):,.{digits}f}"


def _when(value: Any, time_zone: str | None = None) -> str:
    """A time (or ISO text) in the given IANA zone, else as stored (UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if time_zone and value.tzinfo is not None:
            value = value.astimezone(ZoneInfo(time_zone))
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if isinstance(value, date):
        return value.isoformat()
    return "–" if value is None else str(value)


def _clock(value: Any, time_zone: str | None = None) -> str:
    """Time of day of a time (or ISO text), in the given zone."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if time_zone and moment.tzinfo is not None:
        moment = moment.astimezone(ZoneInfo(time_zone))
    return moment.strftime("%H:%M:%S")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(money=_money, number=_number, when=_when, clock=_clock)
    return env


ENV = _environment()


def render(name: str, status_code: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> HTMLResponse:
    html = ENV.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as single values (last one wins)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Problem(415, "unsupported_media_type",
                      "send the form as application/x-www-form-urlencoded", "content-type")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Problem(413, "body_too_large", f"a form is at most {MAX_FORM_BYTES} bytes",
                          "body")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Problem(400, "bad_form", "the form is not UTF-8", "body") from None
    return {key: values[-1] for key, values in parsed.items()}


def field(form: dict[str, str], name: str, *, choices: tuple[str, ...] | None = None,
          max_length: int = 2000, required: bool = True) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        raise Problem(422, "invalid_request", f"'{name}' is required", name)
    if len(value) > max_length:
        raise Problem(422, "invalid_request", f"'{name}' is longer than {max_length} characters",
                      name)
    if choices is not None and value not in choices:
        raise Problem(422, "invalid_request", f"'{name}' must be one of {', '.join(choices)}",
                      name)
    return value


def set_session_cookie(response: Response, request: Request, name: str, value: str,
                       path: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="strict", path=path,
                        secure=request.url.scheme == "https", max_age=12 * 3600)


def redirect(location: str) -> Response:
    return Response(status_code=303, headers={"Location": location, **PAGE_HEADERS})


@static_router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """The workbench's own CSS and JS (no CDN): a fixed set of files, cached for an hour."""
    path = HERE / "static" / name
    media_type = STATIC_TYPES.get(path.suffix)
    if media_type is None or path.name != name or not path.is_file():
        raise Problem(404, "not_found", f"no static file '{name}'", "name")
    return Response(path.read_bytes(), media_type=media_type,
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})
