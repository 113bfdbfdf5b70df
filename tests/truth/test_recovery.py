"""The core recovers the simulator's ground truth: events, distance and transport mode.

Thresholds are the product's targets; a failure is fixed in the core (or in the simulator
where it is unrealistic), never by loosening them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from simulator import SimulationResult
from telematics.evaluation import (
    HARSH_KINDS,
    CoreRun,
    handled_while_moving_s,
    match_events,
    recovery_report,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(fleet: SimulationResult, core: CoreRun) -> dict[str, Any]:
    return recovery_report(fleet, core=core)


def naive_match(truth: pd.DataFrame, found: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Reference for match_events: every pair, closed intervals, same trip and kind."""
    truth_hit = np.zeros(len(truth), dtype=bool)
    found_hit = np.zeros(len(found), dtype=bool)
    for i, a in enumerate(truth.itertuples()):
        for j, b in enumerate(found.itertuples()):
            if (a.trip == b.trip and str(a.kind) == str(b.kind) and b.t_start_s <= a.t_end_s
                    and a.t_start_s <= b.t_end_s):
                truth_hit[i] = found_hit[j] = True
    return truth_hit, found_hit


def test_match_events_agrees_with_the_pairwise_reference() -> None:
    rng = np.random.default_rng(3)

    def frame(n: int) -> pd.DataFrame:
        start = rng.uniform(0.0, 100.0, n).round(1)
        return pd.DataFrame({"trip": rng.integers(0, 3, n), "kind": rng.choice(["a", "b"], n),
                             "t_start_s": start, "t_end_s": start + rng.uniform(0.0, 5.0, n).round(1)})

    for n_truth, n_found in ((0, 0), (5, 0), (0, 5), (1, 1), (40, 55)):
        truth, found = frame(n_truth), frame(n_found)
        got = match_events(truth, found)
        want = naive_match(truth, found)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # Touching intervals overlap; a different kind or trip never matches.
    touch = pd.DataFrame({"trip": [0, 0, 1], "kind": ["a", "b", "a"], "t_start_s": [5.0, 0.0, 0.0],
                          "t_end_s": [6.0, 9.0, 9.0]})
    one = pd.DataFrame({"trip": [0], "kind": ["a"], "t_start_s": [1.0], "t_end_s": [5.0]})
    assert match_events(one, touch)[1].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="found: missing columns"):
        match_events(one, one.drop(columns="kind"))


def test_population_is_big_enough(fleet: SimulationResult, report: dict[str, Any]) -> None:
    for kind in HARSH_KINDS:
        assert report["events"][kind]["truth"] >= 200, kind
    assert report["events"]["phone_handling"]["truth"] >= 500
    assert report["distance"]["trips"] >= 1000
    assert (fleet.trips["mode"].isin(["bus", "train", "walk"])).sum() >= 200


@pytest.mark.parametrize("kind", HARSH_KINDS)
def test_harsh_events_are_recovered(report: dict[str, Any], kind: str) -> None:
    figures = report["events"][kind]
    assert figures["precision"] >= 0.95, figures
    assert figures["recall"] >= 0.95, figures


def test_phone_handling_while_moving_is_recovered(report: dict[str, Any]) -> None:
    figures = report["events"]["phone_handling"]
    assert figures["precision"] >= 0.9, figures
    assert figures["recall"] >= 0.9, figures


def test_handling_truth_counts_only_seconds_above_18_kmh(fleet: SimulationResult) -> None:
    """The recall population: seconds of the 1 Hz truth above 18 km/h inside the episode,
    checked against a direct count on a few episodes."""
    trip_row = {t: i for i, t in enumerate(fleet.trips["trip_id"])}
    episodes = fleet.events[fleet.events["kind"] == "phone_handling"].head(60)
    episodes = episodes.assign(trip=[trip_row[t] for t in episodes["trip_id"]])
    seconds = handled_while_moving_s(fleet, episodes)
    for (_, e), got in zip(episodes.iterrows(), seconds, strict=True):
        truth = fleet.motion.item(int(e["trip"]))
        t, v = truth["t_s"], truth["speed_mps"]
        # Second k holds from t[k] to t[k + 1]: count those overlapping the episode.
        holds = (t + 1.0 > e["t_start_s"]) & (t < e["t_end_s"])
        assert got == pytest.approx(float((holds & (v > 5.0)).sum()), abs=1.0)


def test_distance_is_within_half_a_percent_per_trip(report: dict[str, Any]) -> None:
    assert report["distance"]["max_abs_rel_error"] < 0.005, report["distance"]


def test_transport_mode(report: dict[str, Any]) -> None:
    """Bus, train and walking trips are not scored as car trips; car trips are. Passengers
    ride a car, so the classifier sees a car: they are excluded by the driver's label (the
    simulator's truth scores ``car_driver`` only), not by detection."""
    mode = report["mode"]
    assert mode["car_driver_scored_share"] >= 0.98, mode
    assert mode["other_not_scored_share"] >= 0.95, mode
    assert mode["car_passenger"]["scored_as_car"] >= 0.9 * mode["car_passenger"]["trips"], mode
