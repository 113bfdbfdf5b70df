"""Uploads conform to docs/WIRE_FORMAT.md and carry every sample exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from simulator import (
    SimulationResult,
    delivery_plan,
    iter_deliveries,
    obd_payloads,
    phone_uploads,
    write,
)

GPS_REQUIRED = {"seq", "t_us", "lat_deg", "lon_deg"}
GPS_FIELDS = GPS_REQUIRED | {"speed_mps", "heading_deg", "accuracy_m", "altitude_m", "speed_limit_mps"}
IMU_FIELDS = {"seq", "t_us", "acc_x_mps2", "acc_y_mps2", "acc_z_mps2", "gyr_x_radps", "gyr_y_radps",
              "gyr_z_radps"}
OBD_FIELDS = {"seq", "t_us", "speed_kmh", "rpm", "odometer_km", "ignition", "throttle_pct"}


def _check_columnar(stream: dict, fields: set[str]) -> int:
    assert set(stream) == fields
    lengths = {len(values) for values in stream.values()}
    assert len(lengths) == 1
    return lengths.pop()


def test_written_phone_batches_follow_the_wire_format(with_imu: SimulationResult, tmp_path: Path) -> None:
    write(with_imu, tmp_path, batch_s=120.0)
    trips = with_imu.trips.set_index("trip_id")
    seen: dict[tuple[str, str], list[int]] = {}
    for path in sorted((tmp_path / "phone").rglob("*.json")):
        body = json.loads(path.read_text())
        assert set(body) <= {"device_id", "trip_id", "batch_no", "final", "gps", "imu"}
        assert body["device_id"] == path.parent.name
        seen.setdefault((body["device_id"], body["trip_id"]), []).append(body["batch_no"])
        assert _check_columnar(body["imu"], IMU_FIELDS) > 0
        if "gps" not in body:  # a window spent in a tunnel
            continue
        gps = body["gps"]
        n = _check_columnar(gps, GPS_FIELDS)
        assert n > 0 and np.all(np.diff(gps["seq"]) == 1)
        assert all(isinstance(t, int) for t in gps["t_us"])
        assert np.all(np.diff(np.asarray(gps["t_us"], dtype=np.int64)) > 0)
        assert all(-90.0 <= v <= 90.0 for v in gps["lat_deg"])
        assert all(v is None or 0.0 <= v < 360.0 for v in gps["heading_deg"])
        assert all(v > 0.0 for v in gps["accuracy_m"])
        trip = trips.loc[body["trip_id"]]
        t0_us = round(trip["t_start_s"] * 1e6)
        t1_us = round(trip["t_end_s"] * 1e6)
        assert all(t0_us <= t <= t1_us for t in gps["t_us"])
    assert len(seen) == len(with_imu.trips)
    for batches in seen.values():
        assert sorted(batches) == list(range(len(batches)))


def test_batches_partition_each_trip(with_imu: SimulationResult) -> None:
    per_trip: dict[str, dict[str, int]] = {}
    for upload in phone_uploads(with_imu, batch_s=60.0):
        counts = per_trip.setdefault(upload.trip_id, {"gps": 0, "imu": 0, "final": 0})
        body = upload.payload()
        assert "gps" in body or "imu" in body
        for stream in ("gps", "imu"):
            if stream in body:
                seq = body[stream]["seq"]
                assert seq.shape[0] > 0 and seq[0] == counts[stream]
                counts[stream] += seq.shape[0]
        counts["final"] += upload.final
    trips = with_imu.trips.set_index("trip_id")
    for trip_id, counts in per_trip.items():
        assert counts["gps"] == trips.loc[trip_id, "n_gps"]
        assert counts["imu"] == trips.loc[trip_id, "n_imu"]
        assert counts["final"] == 1


def test_obd_feeds_follow_the_dongle_format(with_imu: SimulationResult) -> None:
    feeds = list(obd_payloads(with_imu))
    assert len(feeds) == len(with_imu.obd_feeds) > 0
    for device_id, feed_id, body in feeds:
        assert body["device_id"] == device_id and body["feed_id"] == feed_id
        obd = body["obd"]
        n = _check_columnar(obd, OBD_FIELDS)
        np.testing.assert_array_equal(obd["seq"], np.arange(n))
        assert obd["speed_kmh"].dtype == np.int64 and obd["t_us"].dtype == np.int64
        assert np.all(np.diff(obd["t_us"]) > 0)
        assert np.all(np.diff(obd["odometer_km"]) >= 0.0)
        np.testing.assert_allclose(obd["odometer_km"] * 10.0, np.round(obd["odometer_km"] * 10.0))
        assert not obd["ignition"][-1]


def test_odometer_advances_by_the_true_distance(with_imu: SimulationResult) -> None:
    trips = with_imu.trips
    for i, feed_id in enumerate(with_imu.obd_feeds["feed_id"]):
        odometer = with_imu.obd.item(i)["odometer_km"]
        true_km = trips.loc[trips["obd_feed_id"] == feed_id, "distance_m"].sum() / 1000.0
        assert abs((odometer[-1] - odometer[0]) - true_km) <= 0.1 * (trips["obd_feed_id"] == feed_id).sum() + 1e-9


def test_delivery_plan_is_late_out_of_order_and_repeated(no_imu: SimulationResult) -> None:
    plan = delivery_plan(no_imu, seed=1, batch_s=120.0)
    keys = [(d.upload.trip_id, d.upload.batch_no) for d in plan]
    uploads = {(u.trip_id, u.batch_no) for u in phone_uploads(no_imu, batch_s=120.0)}
    assert set(keys) == uploads
    assert len(keys) > len(uploads)  # retries
    assert all(d.deliver_at_s > d.upload.ready_at_s for d in plan)
    arrival = pd.DataFrame({"ready": [d.upload.ready_at_s for d in plan]})
    assert (arrival["ready"].diff() < 0).any()  # out of order
    times = [d.deliver_at_s for d in plan]
    assert times == sorted(times)


def test_in_memory_streams_have_consistent_shapes(with_imu: SimulationResult) -> None:
    n_trips = len(with_imu.trips)
    assert with_imu.imu is not None
    for streams in (with_imu.gps, with_imu.imu, with_imu.motion):
        assert len(streams) == n_trips
        assert streams.offsets.dtype == np.int64 and np.all(np.diff(streams.offsets) >= 0)
        for values in streams.columns.values():
            assert values.shape == (streams.offsets[-1],)
        assert streams.columns["t_s"].dtype == np.float64
    assert len(with_imu.obd) == len(with_imu.obd_feeds)
    imu_dt = np.diff(with_imu.imu.item(0)["t_s"])
    np.testing.assert_allclose(imu_dt, 0.1, atol=1e-6)


def test_iter_deliveries_yields_payloads_in_plan_order(with_imu: SimulationResult) -> None:
    plan = delivery_plan(with_imu, seed=3)
    posted = list(iter_deliveries(with_imu, seed=3))
    assert len(posted) == len(plan)
    for (device_id, trip_id, batch_no, payload), planned in zip(posted, plan, strict=True):
        assert (device_id, trip_id, batch_no) == (planned.upload.device_id, planned.upload.trip_id,
                                                  planned.upload.batch_no)
        assert payload["trip_id"] == trip_id and payload["batch_no"] == batch_no
