"""A closed trip runs the whole core: IMU and phone handling under consent, transport mode."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import numpy as np
import pytest

import simulator
from tests.service.conftest import DeviceCreds, Tokens, grant, idem, register

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def fleet() -> simulator.SimulationResult:
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=5)
    return simulator.generate(12, 2, 5, imu=True, imu_hz=10, start_date=start)


def upload_trip(client: httpx.Client, device: DeviceCreds, fleet: simulator.SimulationResult,
                trip_index: int) -> dict[str, Any]:
    trip_id = str(fleet.trips["trip_id"].iloc[trip_index])
    last: dict[str, Any] = {}
    scored: dict[str, Any] = {}
    for upload in simulator.phone_uploads(fleet):
        if upload.trip_index != trip_index:
            continue
        body = {**upload.payload(), "device_id": device.device_id}
        r = client.post(f"/v1/trips/{trip_id}/batches", json=_plain(body),
                        headers={**device.headers, **idem()})
        assert r.status_code == 200, r.text
        last = r.json()
        scored = last.get("trip") or scored
    assert scored.get("status") in ("scored", "unscored"), last
    r = client.get(f"/v1/trips/{trip_id}", headers=device.headers)
    assert r.status_code == 200, r.text
    return {**r.json(), "scoring": scored}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [None if isinstance(x, float) and not np.isfinite(x) else x
                for x in value.tolist()]
    return value


def _first(fleet: simulator.SimulationResult, mode: str, with_event: str | None = None) -> int:
    trips = fleet.trips
    candidates = np.flatnonzero((trips["mode"] == mode).to_numpy())
    if with_event is not None:
        ids = set(fleet.events.loc[fleet.events["kind"] == with_event, "trip_id"])
        candidates = np.array([i for i in candidates if trips["trip_id"].iloc[i] in ids])
    assert candidates.size, f"no {mode} trip in the fleet"
    return int(candidates[0])


def test_a_walk_is_stored_but_not_scored(client: httpx.Client, tokens: Tokens,
                                         fleet: simulator.SimulationResult) -> None:
    device = register(client, tokens)
    trip = upload_trip(client, device, fleet, _first(fleet, "walk"))
    assert trip["status"] == "unscored"
    assert trip["transport_mode"] == "walking_cycling"
    assert trip["features"]["scored"] is False


def test_phone_handling_needs_phone_use_consent(client: httpx.Client, tokens: Tokens,
                                                fleet: simulator.SimulationResult) -> None:
    index = _first(fleet, "car_driver", with_event="phone_handling")
    with_consent = register(client, tokens)
    seen = upload_trip(client, with_consent, fleet, index)
    assert seen["transport_mode"] == "car"
    assert any(e["kind"] == "phone_handling" for e in seen["events"]), seen["events"]

    without = register(client, tokens)
    grant(client, without, ("phone_use",), granted=False)
    hidden = upload_trip(client, without, fleet, index)
    assert not any(e["kind"] == "phone_handling" for e in hidden["events"])
    assert hidden["features"]["distance_m"] == pytest.approx(seen["features"]["distance_m"])


def test_motion_and_phone_use_count_only_with_consent_for_pricing(
        client: httpx.Client, tokens: Tokens, fleet: simulator.SimulationResult) -> None:
    """Trip features feed the price: consent to use motion and phone-use data for coaching
    alone keeps them out of the features, and withdrawing the pricing consent stops their
    use from the next trip on."""
    index = _first(fleet, "car_driver", with_event="phone_handling")
    priced = register(client, tokens)
    seen = upload_trip(client, priced, fleet, index)
    assert seen["scoring"]["imu"] is True
    assert any(e["kind"] == "phone_handling" for e in seen["events"])

    coaching_only = register(client, tokens)
    grant(client, coaching_only, ("motion", "phone_use"), granted=False, purposes=("pricing",))
    hidden = upload_trip(client, coaching_only, fleet, index)
    assert hidden["scoring"]["imu"] is False
    assert not any(e["kind"] == "phone_handling" for e in hidden["events"])
    assert hidden["features"]["distance_m"] == pytest.approx(seen["features"]["distance_m"])
