"""Charts for the workbench as inline SVG text: matplotlib plots and a hand-drawn route.

matplotlib is used through its object API (no pyplot, no global backend), so rendering is
safe in the server's worker threads; one lock serialises it anyway because font and text
caches are shared. Output is deterministic (fixed SVG hash salt), so equal inputs give
equal bytes and a small cache keyed by the inputs' digest saves re-rendering.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

FloatArray = npt.NDArray[np.float64]
CACHE_ENTRIES = 256
EARTH_RADIUS_M = 6_371_008.8
MAX_ROUTE_POINTS = 5_000
RISE = "#c0392b"
FALL = "#2e8b57"
NEUTRAL = "#4a6fa5"
EVENT_COLOURS = {"braking": "#c0392b", "acceleration": "#d68910", "cornering": "#8e44ad",
                 "speeding": "#1f618d", "phone_handling": "#117a65", "fatigue": "#566573"}
_STYLE: dict[str, Any] = {"svg.hashsalt": "ubi-workbench", "svg.fonttype": "none", "font.size": 9.0,
          "axes.spines.top": False, "axes.spines.right": False}

_render_lock = threading.Lock()
_cache: OrderedDict[str, str] = OrderedDict()
_cache_lock = threading.Lock()


def _digest(kind: str, parts: Sequence[object]) -> str:
    digest = hashlib.sha256(kind.encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.dtype).encode() + str(part.shape).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _cached(kind: str, parts: Sequence[object], render: Callable[[], str]) -> str:
    key = _digest(kind, parts)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    svg = render()
    with _cache_lock:
        _cache[key] = svg
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return svg


def _figure(width_in: float = 6.0, height_in: float = 3.2) -> Figure:
    return Figure(figsize=(width_in, height_in), layout="constrained")


def _svg_of(figure: Figure, title: str) -> str:
    """The figure as an inline <svg> element (no XML prologue), labelled for screen readers."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    svg = text[text.index("<svg"):]
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(title)}" ', 1)


def _render(title: str, draw: Callable[[Figure], None], size: tuple[float, float]) -> str:
    with _render_lock, matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]
        figure = _figure(*size)
        draw(figure)
        return _svg_of(figure, title)


def histogram(values: FloatArray, *, title: str, xlabel: str, bins: int = 20) -> str:
    """Distribution of one figure over the portfolio."""
    values = np.asarray(values, dtype=np.float64)

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        if values.size:
            ax.hist(values, bins=min(bins, max(1, values.size)), color=NEUTRAL,
                    edgecolor="white")
            ax.axvline(float(np.median(values)), color=RISE, linewidth=1, linestyle="--",
                       label=f"median {np.median(values):,.2f}")
            ax.legend(frameon=False)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("policies")
    return _cached("hist", (values, title, xlabel, bins), lambda: _render(title, draw, (5.0, 3.0)))


def lorenz(exposure_share: FloatArray, loss_share: FloatArray, gini: float) -> str:
    """Ordered Lorenz curve: policies by premium rate, cumulative exposure vs claims."""
    x = np.asarray(exposure_share, dtype=np.float64)
    y = np.asarray(loss_share, dtype=np.float64)
    title = f"Lorenz curve (Gini {gini:.3f})"

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=1, label="no segmentation")
        ax.plot(x, y, color=NEUTRAL, linewidth=2, label="premium order")
        ax.fill_between(x, y, x, color=NEUTRAL, alpha=0.15)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("cumulative share of exposure")
        ax.set_ylabel("cumulative share of claims")
        ax.set_title(title)
        ax.legend(frameon=False, loc="upper left")
    return _cached("lorenz", (x, y, gini), lambda: _render(title, draw, (4.0, 3.6)))


def bars(labels: Sequence[str], values: FloatArray, *, title: str, ylabel: str,
         reference: float | None = None) -> str:
    """One bar per label (loss ratio by decile), an optional horizontal reference line."""
    values = np.asarray(values, dtype=np.float64)

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        ax.bar(list(labels), np.nan_to_num(values), color=NEUTRAL)
        if reference is not None and math.isfinite(reference):
            ax.axhline(reference, color=RISE, linestyle="--", linewidth=1,
                       label=f"portfolio {reference:.2f}")
            ax.legend(frameon=False)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    return _cached("bars", (tuple(labels), values, title, ylabel, reference),
                   lambda: _render(title, draw, (5.0, 3.0)))


def waterfall(labels: Sequence[str], amounts_cents: Sequence[int], minor_units: int,
              currency: str) -> str:
    """The premium built up from the base: one floating bar per line, then the total."""
    scale = 10.0 ** -minor_units
    # Lines of zero (a cap that did not bind) stay in the table but would only crowd the chart.
    kept = [i for i, cents in enumerate(amounts_cents) if i == 0 or cents != 0]
    labels = [labels[i].replace("_", " ") for i in kept]
    amounts = np.asarray([amounts_cents[i] for i in kept], dtype=np.float64) * scale
    title = "Premium waterfall"

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        ends = np.cumsum(amounts)
        starts = ends - amounts
        colours = [NEUTRAL] + [RISE if a > 0 else FALL for a in amounts[1:]]
        names = [*labels, "premium"]
        ax.bar(names[:-1], amounts, bottom=starts, color=colours)
        ax.bar(names[-1:], [ends[-1] if ends.size else 0.0], color="#34495e")
        for i, (end, amount) in enumerate(zip(ends, amounts, strict=True)):
            ax.text(i, max(end, end - amount), f"{amount:+,.2f}" if i else f"{amount:,.2f}",
                    ha="center", va="bottom", fontsize=7)
        if ends.size:
            ax.text(len(names) - 1, ends[-1], f"{ends[-1]:,.2f}", ha="center", va="bottom",
                    fontsize=7, fontweight="bold")
        low = float(min(np.min(starts), np.min(ends))) if ends.size else 0.0
        high = float(max(np.max(starts), np.max(ends))) if ends.size else 1.0
        ax.set_ylim(bottom=max(0.0, low * 0.9), top=high * 1.1)
        ax.set_ylabel(currency)
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    return _cached("waterfall", (tuple(labels), amounts, currency),
                   lambda: _render(title, draw, (11.0, 3.6)))


@dataclass(frozen=True)
class SpanMark:
    start_min: float
    end_min: float
    kind: str


def speed_chart(t_min: FloatArray, speed_kmh: FloatArray, events: Sequence[SpanMark]) -> str:
    """Speed over the trip's visible part with each event shaded at its time."""
    t = np.asarray(t_min, dtype=np.float64)
    v = np.asarray(speed_kmh, dtype=np.float64)
    title = "Speed and events"

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        ax.plot(t, v, color=NEUTRAL, linewidth=1)
        seen: set[str] = set()
        for mark in events:
            colour = EVENT_COLOURS.get(mark.kind, "#999999")
            ax.axvspan(mark.start_min, max(mark.end_min, mark.start_min + 0.05), color=colour,
                       alpha=0.35, label=None if mark.kind in seen else mark.kind)
            seen.add(mark.kind)
        if seen:
            ax.legend(frameon=False, loc="best", fontsize=7)
        ax.set_xlabel("minutes since the trip started")
        ax.set_ylabel("km/h")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
    marks = tuple((m.start_min, m.end_min, m.kind) for m in events)
    return _cached("speed", (t, v, marks), lambda: _render(title, draw, (12.0, 2.8)))


# --- the route ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteFrame:
    """Equirectangular projection of a path's bounding box into an SVG viewBox."""

    lat0_deg: float
    lon0_deg: float
    north_max_m: float
    east_min_m: float
    scale: float  # viewBox units per metre
    pad: float

    @classmethod
    def fit(cls, lat_deg: FloatArray, lon_deg: FloatArray, width: float,
            height: float, pad: float = 16.0) -> RouteFrame:
        lat0, lon0 = float(np.mean(lat_deg)), float(np.mean(lon_deg))
        north, east = _local_m(lat_deg, lon_deg, lat0, lon0)
        span = max(float(np.ptp(east)) / (width - 2 * pad),
                   float(np.ptp(north)) / (height - 2 * pad), 1e-9)
        return cls(lat0, lon0, float(np.max(north)), float(np.min(east)), 1.0 / span, pad)

    def project(self, lat_deg: FloatArray, lon_deg: FloatArray) -> tuple[FloatArray, FloatArray]:
        north, east = _local_m(np.asarray(lat_deg, dtype=np.float64),
                               np.asarray(lon_deg, dtype=np.float64), self.lat0_deg, self.lon0_deg)
        x = self.pad + (east - self.east_min_m) * self.scale
        y = self.pad + (self.north_max_m - north) * self.scale
        return np.round(x, 1), np.round(y, 1)


def _local_m(lat_deg: FloatArray, lon_deg: FloatArray, lat0: float,
             lon0: float) -> tuple[FloatArray, FloatArray]:
    north = np.radians(lat_deg - lat0) * EARTH_RADIUS_M
    east = np.radians(lon_deg - lon0) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    return north, east


def route_sample(n: int) -> npt.NDArray[np.intp]:
    """Indices of the path's positions drawn: all of them up to MAX_ROUTE_POINTS, else an
    even stride that keeps the last one."""
    if n <= MAX_ROUTE_POINTS:
        return np.arange(n)
    index = np.arange(0, n, math.ceil(n / MAX_ROUTE_POINTS))
    return index if index[-1] == n - 1 else np.append(index, n - 1)


@dataclass(frozen=True)
class PointMark:
    lat_deg: float
    lon_deg: float
    kind: str
    label: str


def route(lat_deg: FloatArray, lon_deg: FloatArray, marks: Sequence[PointMark],
          width: float = 640.0, height: float = 420.0) -> str:
    """The visible path as a polyline in its own local frame (no map, no tiles), with start
    and end of the visible part, event markers and a scale bar."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    keep = np.isfinite(lat) & np.isfinite(lon)
    lat, lon = lat[keep], lon[keep]
    head = (f'<svg class="route" role="img" aria-label="route" xmlns="http://www.w3.org/2000/svg"'
            f' viewBox="0 0 {width:g} {height:g}">')
    if lat.size < 2:
        return (head + f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle">'
                "no visible positions (the whole trip lies in its privacy zones)</text></svg>")
    frame = RouteFrame.fit(lat, lon, width, height)
    picked = route_sample(lat.size)
    x, y = frame.project(lat[picked], lon[picked])
    # A wide, flat route needs less height than the frame allows: trim the empty band.
    height = max(160.0, min(height, float(np.ceil(np.max(y))) + 2 * frame.pad + 12.0))
    head = (f'<svg class="route" role="img" aria-label="route" xmlns="http://www.w3.org/2000/svg"'
            f' viewBox="0 0 {width:g} {height:g}">')
    points = " ".join(f"{a:g},{b:g}" for a, b in zip(x, y, strict=True))
    parts = [head, f'<rect width="{width:g}" height="{height:g}" fill="#f7f9fb"/>',
             f'<polyline class="path" points="{points}" fill="none" stroke="{NEUTRAL}"'
             ' stroke-width="2.5" stroke-linejoin="round" stroke-linecap="round"/>',
             f'<circle class="ends" cx="{x[0]:g}" cy="{y[0]:g}" r="5" fill="{FALL}">'
             "<title>first visible position</title></circle>",
             f'<circle class="ends" cx="{x[-1]:g}" cy="{y[-1]:g}" r="5" fill="#34495e">'
             "<title>last visible position</title></circle>"]
    for mark in marks:
        if not (math.isfinite(mark.lat_deg) and math.isfinite(mark.lon_deg)):
            continue
        mx, my = frame.project(np.array([mark.lat_deg]), np.array([mark.lon_deg]))
        colour = EVENT_COLOURS.get(mark.kind, "#999999")
        parts.append(f'<circle class="event" data-kind="{escape(mark.kind)}" cx="{mx[0]:g}"'
                     f' cy="{my[0]:g}" r="6" fill="{colour}" fill-opacity="0.8" stroke="white">'
                     f"<title>{escape(mark.label)}</title></circle>")
    bar_m = _scale_bar_m(width / 4 / frame.scale)
    bar = bar_m * frame.scale
    parts.append(f'<g class="scale"><line x1="16" y1="{height - 14:g}" x2="{16 + bar:.1f}"'
                 f' y2="{height - 14:g}" stroke="#333" stroke-width="2"/><text x="16"'
                 f' y="{height - 19:g}" font-size="11">{_distance_text(bar_m)}</text></g>')
    parts.append(f'<text x="{width - 16:g}" y="24" text-anchor="end" font-size="12">N &#8593;</text>')
    parts.append("</svg>")
    return "".join(parts)


def _scale_bar_m(at_most_m: float) -> float:
    """The largest 1-2-5 x 10^k metres not above `at_most_m`."""
    exponent = math.floor(math.log10(max(at_most_m, 1.0)))
    for step in (5.0, 2.0, 1.0):
        if step * 10.0**exponent <= at_most_m:
            return step * 10.0**exponent
    return 10.0**exponent


def _distance_text(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
