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
ROUTE_STEP_M = 10.0  # spacing of the route's drawn positions
ROUTE_GAP_M = 200.0  # a longer stretch without positions is drawn as a straight chord
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


def speed_chart(minute: npt.NDArray[np.int64], speed_kmh: FloatArray,
                events: Sequence[SpanMark]) -> str:
    """The trip's coarse speed profile, one bar per minute, with each event shaded at its
    time. It takes a value per minute by design: a full-resolution trace drawn here would
    let the route be timed and a speed read at any place."""
    m = np.asarray(minute, dtype=np.int64)
    v = np.asarray(speed_kmh, dtype=np.float64)
    title = "Speed by minute and events"

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        bars = ax.bar(m, v, width=1.0, align="edge", color=NEUTRAL, alpha=0.75)
        for i, bar in zip(m.tolist(), bars, strict=True):
            bar.set_gid(f"speed-minute-{i}")
        seen: set[str] = set()
        for mark in events:
            colour = EVENT_COLOURS.get(mark.kind, "#999999")
            ax.axvspan(mark.start_min, max(mark.end_min, mark.start_min + 0.05), color=colour,
                       alpha=0.45, label=None if mark.kind in seen else mark.kind)
            seen.add(mark.kind)
        if seen:
            ax.legend(frameon=False, loc="best", fontsize=7)
        ax.set_xlabel("minutes since the trip started")
        ax.set_ylabel("median km/h in the minute")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
    marks = tuple((m.start_min, m.end_min, m.kind) for m in events)
    return _cached("speed", (m, v, marks), lambda: _render(title, draw, (12.0, 2.8)))


def evidence_trace(t_s: FloatArray, speed_kmh: FloatArray, duration_s: float, kind: str,
                   width: float = 260.0, height: float = 84.0) -> str:
    """An event's evidence: its speed second by second from a few seconds before to a few
    after (`t_s` relative to the event's start), the event's own span shaded."""
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(speed_kmh, dtype=np.float64)
    head = (f'<svg class="evidence" role="img" aria-label="speed around the event"'
            f' xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}">')
    if t.size < 2:
        return (head + f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle"'
                ' font-size="11">no visible positions around the event</text></svg>')
    left, right, top, bottom = 50.0, 8.0, 8.0, 18.0
    t_lo, t_hi = float(t.min()), float(max(t.max(), t.min() + 1.0))
    v_hi = max(10.0, float(np.ceil(np.nanmax(v) / 10.0) * 10.0))

    def x_of(seconds: FloatArray | float) -> FloatArray:
        return np.round(left + (np.asarray(seconds) - t_lo) / (t_hi - t_lo)
                        * (width - left - right), 1)

    def y_of(kmh: FloatArray | float) -> FloatArray:
        return np.round(top + (1.0 - np.asarray(kmh) / v_hi) * (height - top - bottom), 1)

    x, y = x_of(t), y_of(np.nan_to_num(v))
    span_x0 = float(x_of(max(0.0, t_lo)))
    span_x1 = float(x_of(min(max(duration_s, 0.5), t_hi)))
    colour = EVENT_COLOURS.get(kind, "#999999")
    points = " ".join(f"{a:g},{b:g}" for a, b in zip(x, y, strict=True))
    base = height - bottom
    return "".join([
        head,
        f'<rect class="span" x="{span_x0:g}" y="{top:g}" width="{max(span_x1 - span_x0, 1.0):g}"'
        f' height="{base - top:g}" fill="{colour}" fill-opacity="0.25"/>',
        f'<line x1="{left:g}" y1="{base:g}" x2="{width - right:g}" y2="{base:g}" stroke="#999"/>',
        f'<polyline class="trace" points="{points}" fill="none" stroke="{NEUTRAL}"'
        ' stroke-width="1.8"/>',
        f'<text x="{left - 4:g}" y="{top + 8:g}" text-anchor="end" font-size="10">'
        f"{v_hi:g} km/h</text>",
        f'<text x="{left - 4:g}" y="{base:g}" text-anchor="end" font-size="10">0</text>',
        f'<text x="{left:g}" y="{height - 4:g}" font-size="10">{t_lo:+.0f} s</text>',
        f'<text x="{width - right:g}" y="{height - 4:g}" text-anchor="end" font-size="10">'
        f"{t_hi:+.0f} s</text>",
        "</svg>"])


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


def route_resample(lat_deg: FloatArray, lon_deg: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The path as positions evenly spaced along it (every ROUTE_STEP_M, wider for a path
    longer than MAX_ROUTE_POINTS steps), from its first position to its last.

    The stored positions are a second apart, so their spacing is the speed; drawn evenly
    in distance the route says nothing about speed or time. A stretch without positions
    longer than ROUTE_GAP_M (a privacy zone crossed mid-trip, a lost signal) is not filled
    in: the positions on both sides of it are kept as they are."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lat.size < 2:
        return lat.copy(), lon.copy()
    north, east = _local_m(lat, lon, float(lat[0]), float(lon[0]))
    step_m = np.hypot(np.diff(north), np.diff(east))
    moved = np.r_[True, step_m > 0]  # a car standing still repeats its position
    lat, lon, north, east = lat[moved], lon[moved], north[moved], east[moved]
    step_m = step_m[step_m > 0]
    spacing_m = max(ROUTE_STEP_M, float(step_m[step_m <= ROUTE_GAP_M].sum()) / MAX_ROUTE_POINTS)
    breaks = np.flatnonzero(step_m > ROUTE_GAP_M)
    out_lat, out_lon = [], []
    for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, lat.size - 1], strict=True):
        along_m = np.r_[0.0, np.cumsum(step_m[first:last])]
        at_m = np.append(np.arange(0.0, along_m[-1], spacing_m), along_m[-1])
        out_lat.append(np.interp(at_m, along_m, lat[first:last + 1]))
        out_lon.append(np.interp(at_m, along_m, lon[first:last + 1]))
    return np.concatenate(out_lat), np.concatenate(out_lon)


@dataclass(frozen=True)
class PointMark:
    lat_deg: float
    lon_deg: float
    kind: str
    label: str


def route(lat_deg: FloatArray, lon_deg: FloatArray, marks: Sequence[PointMark],
          width: float = 640.0, height: float = 420.0) -> str:
    """The visible path as a polyline in its own local frame (no map, no tiles), drawn
    through evenly spaced positions (`route_resample`), with the first and last visible
    positions, event markers and a scale bar; no speed or time."""
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
    x, y = frame.project(*route_resample(lat, lon))
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
