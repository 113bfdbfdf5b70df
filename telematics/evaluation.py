"""Truth recovery: run the full core over a simulated fleet and score it against the truth.

The simulator knows every harsh manoeuvre, phone-handling episode, true distance and
transport mode; this module runs what the platform runs on the same feeds (GPS features
and events, IMU orientation and events, transport mode) and counts what it recovers. It
takes the simulator's result by shape (``SimulatedFleet``), not by import: ``telematics``
does not depend on ``simulator``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from telematics.core.params import KMH
from telematics.pipeline import HARSH_KINDS, run_pipeline

HANDLING_KIND = "phone_handling"
# DESIGN section 6: handling counts from 3 s at more than 18 km/h.
HANDLING_MIN_SPEED_MPS = 18.0 * KMH
HANDLING_MIN_S = 3.0
DISTANCE_MIN_M = 2_000.0
SCORED_MODES = ("car_driver",)
CAR_MODES = ("car_driver", "car_passenger")
OTHER_MODES = ("bus", "train", "walk")


class Streams(Protocol):
    """Flat per-sample columns of many trips; trip ``i`` owns ``offsets[i]:offsets[i+1]``."""

    @property
    def offsets(self) -> np.ndarray: ...
    @property
    def columns(self) -> Mapping[str, np.ndarray]: ...


class SimulatedFleet(Protocol):
    """What recovery needs from ``simulator.SimulationResult``.

    ``trips``: one row per trip with ``trip_id``, ``mode``, ``distance_m`` (true) and
    optionally ``time_zone`` (else UTC: recovery does not depend on local time); ``events``: the
    true events with ``trip_id``, ``kind``, ``t_start_s``, ``t_end_s``; ``gps`` and ``imu``:
    the phone feeds per trip; ``motion``: the 1 Hz truth (``t_s``, ``speed_mps``).
    """

    @property
    def trips(self) -> pd.DataFrame: ...
    @property
    def events(self) -> pd.DataFrame: ...
    @property
    def gps(self) -> Streams: ...
    @property
    def imu(self) -> Streams | None: ...
    @property
    def motion(self) -> Streams: ...


@dataclass(frozen=True)
class CoreRun:
    """The core's output over a fleet: per-trip features (with ``mode`` and
    ``mode_scored`` from the mode classifier and ``imu_oriented_share``) and the events
    (``trip`` is the row of the fleet's trip table)."""

    features: pd.DataFrame
    events: pd.DataFrame


def _time_zones(trips: pd.DataFrame) -> str | list[str]:
    if "time_zone" in trips.columns:
        return [str(z) for z in trips["time_zone"]]
    return "UTC"


def run_core(fleet: SimulatedFleet, *, now_s: float | None = None, parallel: bool = False) -> CoreRun:
    """The platform's core (``telematics.pipeline.run_pipeline``, the same as real-time
    scoring runs) over every trip of ``fleet``, with the phone's IMU where there is one."""
    gps = fleet.gps
    g = gps.columns
    offsets = np.asarray(gps.offsets, dtype=np.int64)
    n_trips = offsets.shape[0] - 1
    if len(fleet.trips) != n_trips:
        raise ValueError(f"gps: {n_trips} trips, but the trip table has {len(fleet.trips)}")
    now = float(np.max(g["t_s"], initial=0.0)) + 1.0 if now_s is None else now_s
    imu = fleet.imu
    out = run_pipeline(dict(g), offsets, imu=None if imu is None else dict(imu.columns),
                       imu_offsets=None if imu is None else np.asarray(imu.offsets),
                       time_zone=_time_zones(fleet.trips), now_s=now, parallel=parallel)
    return CoreRun(out.features, out.events)


def match_events(truth: pd.DataFrame, found: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Which truth events are found and which found events are true.

    Both frames have ``trip``, ``kind``, ``t_start_s`` and ``t_end_s``; a found event
    matches a truth event of the same trip and kind whose interval overlaps its own
    (closed intervals). Returns one flag per row of ``truth`` and one per row of ``found``.
    """
    cols = ["trip", "kind", "t_start_s", "t_end_s"]
    for name, frame in (("truth", truth), ("found", found)):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{name}: missing columns {missing}")
    left = truth[cols].assign(kind=truth["kind"].astype(str), _row_t=np.arange(len(truth)))
    right = found[cols].assign(kind=found["kind"].astype(str), _row_f=np.arange(len(found)))
    pairs = left.merge(right, on=["trip", "kind"], suffixes=("_t", "_f"))
    overlap = ((pairs["t_start_s_f"] <= pairs["t_end_s_t"])
               & (pairs["t_start_s_t"] <= pairs["t_end_s_f"])).to_numpy()
    truth_hit = np.zeros(len(truth), dtype=bool)
    found_hit = np.zeros(len(found), dtype=bool)
    truth_hit[pairs["_row_t"].to_numpy()[overlap]] = True
    found_hit[pairs["_row_f"].to_numpy()[overlap]] = True
    return truth_hit, found_hit


def handled_while_moving_s(fleet: SimulatedFleet, truth: pd.DataFrame) -> np.ndarray:
    """Seconds of each truth event (rows of ``truth``: ``trip``, ``t_start_s``,
    ``t_end_s``) during which the true speed exceeded 18 km/h (1 Hz truth, each second
    holding until the next)."""
    motion = fleet.motion
    t_all = motion.columns["t_s"]
    fast = motion.columns["speed_mps"] > HANDLING_MIN_SPEED_MPS
    # Cumulative fast seconds per trip, so each event is two look-ups.
    cum = np.concatenate(([0], np.cumsum(fast)))
    out = np.empty(len(truth))
    offsets = motion.offsets
    for r, (trip, t0, t1) in enumerate(zip(truth["trip"].to_numpy(), truth["t_start_s"].to_numpy(),
                                             truth["t_end_s"].to_numpy(), strict=True)):
        lo, hi = int(offsets[trip]), int(offsets[trip + 1])
        a = lo + int(np.searchsorted(t_all[lo:hi], t0, side="right")) - 1
        b = lo + int(np.searchsorted(t_all[lo:hi], t1, side="left"))
        out[r] = cum[max(b, lo)] - cum[max(a, lo)]
    return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def recovery_report(fleet: SimulatedFleet, *, core: CoreRun | None = None,
                    parallel: bool = False) -> dict[str, Any]:
    """Truth-recovery figures of the core on ``fleet`` (runs the core unless given ``core``).

    ``events``: per kind (harsh braking, acceleration, cornering; phone handling while
    moving) the truth and found counts, matched counts on both sides, precision and
    recall. Harsh kinds compare the core's harsh events (not the moderate band) with every
    truth event of the kind. Phone handling: recall over truth episodes with at least 3 s
    above 18 km/h, precision of found events against any truth episode. ``distance``:
    relative error of the core's distance against the true distance on trips over 2 km.
    ``mode``: share of car trips the classifier scores and of bus, train and walking
    trips it does not.
    """
    run = core if core is not None else run_core(fleet, parallel=parallel)
    trips = fleet.trips
    row_of = pd.Series(np.arange(len(trips)), index=trips["trip_id"].to_numpy())
    truth = fleet.events.assign(trip=row_of.loc[fleet.events["trip_id"].to_numpy()].to_numpy())
    found = run.events.rename(columns={"start_t_s": "t_start_s", "end_t_s": "t_end_s"})
    report: dict[str, Any] = {"n_trips": len(trips), "events": {}}
    for kind in (*HARSH_KINDS, HANDLING_KIND):
        t = truth[truth["kind"] == kind]
        f = found[(found["kind"] == kind).to_numpy() & (found["severity"] != "moderate").to_numpy()]
        truth_hit, found_hit = match_events(t, f)
        if kind == HANDLING_KIND:
            counted = handled_while_moving_s(fleet, t) >= HANDLING_MIN_S
        else:
            counted = np.ones(len(t), dtype=bool)
        report["events"][kind] = {
            "truth": int(counted.sum()),
            "found": len(f),
            "truth_matched": int(truth_hit[counted].sum()),
            "found_matched": int(found_hit.sum()),
            "recall": _ratio(int(truth_hit[counted].sum()), int(counted.sum())),
            "precision": _ratio(int(found_hit.sum()), len(f)),
        }
    true_m = trips["distance_m"].to_numpy()
    long_trips = true_m > DISTANCE_MIN_M
    error = run.features["distance_m"].to_numpy()[long_trips] / true_m[long_trips] - 1.0
    report["distance"] = {
        "trips": int(long_trips.sum()),
        "max_abs_rel_error": float(np.abs(error).max(initial=0.0)),
        "median_abs_rel_error": float(np.median(np.abs(error))) if error.size else float("nan"),
        "total_rel_error": float(run.features["distance_m"].to_numpy()[long_trips].sum()
                                 / true_m[long_trips].sum() - 1.0) if error.size else float("nan"),
    }
    mode = trips["mode"].astype(str).to_numpy()
    scored = run.features["mode_scored"].to_numpy()
    report["mode"] = {
        m: {"trips": int((mode == m).sum()), "scored_as_car": int(scored[mode == m].sum())}
        for m in (*CAR_MODES, *OTHER_MODES)
    }
    car = np.isin(mode, SCORED_MODES)
    other = np.isin(mode, OTHER_MODES)
    report["mode"]["car_driver_scored_share"] = _ratio(int(scored[car].sum()), int(car.sum()))
    report["mode"]["other_not_scored_share"] = _ratio(int((~scored[other]).sum()), int(other.sum()))
    return report
