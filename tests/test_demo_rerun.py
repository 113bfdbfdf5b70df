"""`ubi demo` run again: on a later day with the same options it re-uses the recorded data
set (its uploads change nothing), with other options or in a database without its
devices it uploads a new one in place of the old; it never fails and never counts twice.

The runs are tiny (two drivers, one day) and each is told its date, so that nothing waits
for a real day to pass; each is checked against the simulator, run here on its own.
"""

from __future__ import annotations

import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import simulator
from telematics.demo import PREFIX, DataSet, DemoOptions, _read_state, _write_state, run_demo
from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url

DRIVERS, DAYS, SEED, POLICIES = 2, 1, 7, 5_000  # seed 7: both drivers have a dongle


def _run(tmp_path: Path, today: date, *, imu: bool) -> dict[str, Any]:
    return run_demo(DemoOptions(drivers=DRIVERS, days=DAYS, policies=POLICIES, seed=SEED,
                                imu=imu, clients=2, today=today, out=tmp_path / "report"))


def _held(url: str) -> dict[str, Any]:
    """What the database holds of the demo: phone trips, and samples by stream."""
    like = (PREFIX + "%",)
    with psycopg.connect(url) as conn:
        trips = conn.execute("SELECT device_id, trip_id FROM trips WHERE device_id LIKE %s"
                             " AND source = 'phone'", like).fetchall()
        samples = {table: conn.execute(f"SELECT count(*) FROM {table}_samples"
                                       " WHERE device_id LIKE %s", like).fetchone()
                   for table in ("gps", "imu", "obd")}
    return {"trips": sorted(trips), **{k: v[0] for k, v in samples.items() if v is not None}}


def _simulated(start: date, *, imu: bool) -> dict[str, Any]:
    """What the demo's data set from ``start`` should leave in the database."""
    result = simulator.generate(DRIVERS, DAYS, SEED, imu=imu, start_date=start)
    return {"trips": sorted((PREFIX + d, t) for d, t in
                            zip(result.trips["device_id"], result.trips["trip_id"], strict=True)),
            "gps": int(result.gps.offsets[-1]),
            "imu": int(result.imu.offsets[-1]) if result.imu is not None else 0,
            "obd": int(result.obd.offsets[-1])}


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("period", "trips", "counted_trips", "counted_km", "events",
                                    "transport_modes", "premiums", "repriced_policies")}


@pytest.mark.db
@pytest.mark.slow
def test_rerun_on_later_days_with_the_imu_toggled_and_in_another_database(
        own_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UBI_DATABASE_URL", own_db_url)
    monkeypatch.chdir(tmp_path)  # the demo keeps its state in ./.ubi/demo
    today = datetime.now(UTC).date()

    first = _run(tmp_path, today - timedelta(days=6), imu=False)
    first_start = today - timedelta(days=6 + DAYS + 1)
    assert not first["data_set_reused"] and first["period"][0] == str(first_start)
    held = _held(own_db_url)
    assert held == _simulated(first_start, imu=False) and held["obd"] > 0
    assert first["uploads"]["samples_stored"] == held["gps"] + held["obd"]

    # Three days later, with the IMU: a new data set (the same trip ids, other bodies)
    # takes the first one's place, instead of being refused or merged into its trips.
    second = _run(tmp_path, today - timedelta(days=3), imu=True)
    second_start = today - timedelta(days=3 + DAYS + 1)
    assert not second["data_set_reused"] and second["period"][0] == str(second_start)
    held = _held(own_db_url)
    assert held == _simulated(second_start, imu=True) and held["imu"] > 0
    assert second["uploads"]["samples_stored"] == held["gps"] + held["imu"] + held["obd"]
    assert second["premiums"]["policies"] == second["repriced_policies"] == DRIVERS

    # Today, the same options: the recorded data set again. Its uploads are answered as
    # retries, or, for the phone whose idempotency records are gone (past their TTL, as
    # `ubi maintenance` leaves them), done again finding every sample already stored.
    with psycopg.connect(own_db_url) as conn:
        conn.execute("DELETE FROM idempotency_keys WHERE device_id = (SELECT min(device_id)"
                     " FROM devices WHERE kind = 'phone' AND device_id LIKE %s)", (PREFIX + "%",))
    third = _run(tmp_path, today, imu=True)
    assert third["data_set_reused"] and _figures(third) == _figures(second)
    assert _held(own_db_url) == held
    uploads = third["uploads"]
    assert 0 < uploads["answered_from_idempotency_store"] < uploads["requests"]
    assert uploads["samples_stored"] == uploads["rejected_samples"] == 0
    assert 0 < third["upload_phase_s"] < third["wall_time_s"]

    # Another database, the state file still naming the devices of the first: they are
    # registered there rather than posting with keys it does not know.
    with scratch_database(database_url(), "ubi_test") as other_url:
        monkeypatch.setenv("UBI_DATABASE_URL", other_url)
        elsewhere = _run(tmp_path, today, imu=True)
        other_held = _held(other_url)
    start = today - timedelta(days=DAYS + 1)
    assert not elsewhere["data_set_reused"] and elsewhere["period"][0] == str(start)
    assert other_held == _simulated(start, imu=True)
    assert elsewhere["uploads"]["samples_stored"] == sum(
        other_held[k] for k in ("gps", "imu", "obd"))


def test_state_file_round_trip_is_private_and_a_bad_one_is_no_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _read_state() is None
    data_set = DataSet(drivers=3, days=2, seed=4, imu=True, start_date=date(2026, 11, 2))
    _write_state(data_set, {"demo-ph-000000": "ubk_secret"})
    state_file = tmp_path / ".ubi" / "demo" / "data_set.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert _read_state() == (data_set, {"demo-ph-000000": "ubk_secret"})
    assert data_set.period == (date(2026, 11, 2), date(2026, 11, 5))
    for text in ('{"demo-ph-000000": "ubk_secret"}', "[]", "{", '{"data_set": {}, "keys": {}}'):
        state_file.write_text(text)  # an older layout (keys only), or a damaged file
        assert _read_state() is None, text
