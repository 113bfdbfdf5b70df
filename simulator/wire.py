"""Uploads in the wire format of docs/WIRE_FORMAT.md, a planned delivery order, and ``write``.

Phones upload each trip in batches of ``batch_s`` seconds of recording (a short trip is one
batch); a batch is ready when its window closes. ``delivery_plan`` adds what real phones do
to that: network delays, days offline, retries that send a batch twice, so arrivals are late,
out of order and duplicated. A load generator only has to post ``iter_deliveries`` in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.simulation import SimulationResult

WIRE_VERSION = "ubi-simulator/1"
DEFAULT_BATCH_S = 300.0
_US = 1_000_000
# Decimals on the wire: 1e-7 deg is about 1 cm; IMU values keep well below their noise.
_GPS_DECIMALS = {"lat_deg": 7, "lon_deg": 7, "speed_mps": 2, "heading_deg": 1, "accuracy_m": 1,
                 "altitude_m": 1, "speed_limit_mps": 2}
_IMU_DECIMALS = {"acc_x_mps2": 4, "acc_y_mps2": 4, "acc_z_mps2": 4, "gyr_x_radps": 5,
                 "gyr_y_radps": 5, "gyr_z_radps": 5}
_OBD_DECIMALS = {"rpm": 0, "odometer_km": 1, "throttle_pct": 1}


@dataclass(frozen=True)
class PhoneUpload:
    """One phone batch: which samples it carries and when it could first be sent.

    The JSON body is built on demand by ``payload()``, so that planning deliveries of a large
    simulation does not hold every body in memory at once.
    """

    device_id: str
    trip_id: str
    batch_no: int
    final: bool
    ready_at_s: float
    result: SimulationResult = field(repr=False, compare=False)
    trip_index: int
    gps_rows: tuple[int, int]  # rows of the trip's GPS stream
    imu_rows: tuple[int, int]

    def payload(self) -> dict[str, Any]:
        """The request body in the wire format; a stream with no samples is left out."""
        body: dict[str, Any] = {"device_id": self.device_id, "trip_id": self.trip_id,
                                "batch_no": self.batch_no, "final": self.final}
        g0, g1 = self.gps_rows
        i0, i1 = self.imu_rows
        if g1 > g0 or i1 == i0:
            body["gps"] = _columns(self.result.gps.item(self.trip_index), g0, g1, _GPS_DECIMALS)
        if i1 > i0 and self.result.imu is not None:
            body["imu"] = _columns(self.result.imu.item(self.trip_index), i0, i1, _IMU_DECIMALS)
        return body


@dataclass(frozen=True)
class Delivery:
    """A planned post of an upload; ``attempt`` > 0 re-sends a batch already delivered."""

    deliver_at_s: float
    attempt: int
    upload: PhoneUpload


def _t_us(t_s: np.ndarray) -> np.ndarray:
    return np.rint(t_s * _US).astype(np.int64)


def _columns(item: dict[str, np.ndarray], lo: int, hi: int,
             decimals: dict[str, int]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"seq": np.arange(lo, hi, dtype=np.int64)}
    out["t_us"] = _t_us(item["t_s"][lo:hi])
    for name, values in item.items():
        if name == "t_s":
            continue
        part = values[lo:hi]
        out[name] = np.round(part, decimals[name]) if name in decimals else np.ascontiguousarray(part)
    if "heading_deg" in out:
        out["heading_deg"] %= 360.0  # 359.97 rounds to 360.0
    return out


def phone_uploads(result: SimulationResult, batch_s: float = DEFAULT_BATCH_S) -> Iterator[PhoneUpload]:
    """Every phone batch of every trip, in trip order then batch order."""
    if batch_s <= 0.0:
        raise ValueError("batch_s must be positive")
    trips = result.trips
    for i, (device_id, trip_id, t0, t1) in enumerate(zip(
            trips["device_id"], trips["trip_id"], trips["t_start_s"], trips["t_end_s"], strict=True)):
        n_batches = max(1, int(np.ceil((t1 - t0 + 1e-6) / batch_s)))
        edges = t0 + batch_s * np.arange(1, n_batches)
        gps_t = result.gps.item(i)["t_s"]
        gps_cuts = np.concatenate([[0], np.searchsorted(gps_t, edges), [gps_t.shape[0]]])
        imu_cuts = np.zeros(n_batches + 1, dtype=np.int64)
        if result.imu is not None:
            imu_t = result.imu.item(i)["t_s"]
            imu_cuts = np.concatenate([[0], np.searchsorted(imu_t, edges), [imu_t.shape[0]]])
        for b in range(n_batches):
            final = b == n_batches - 1
            yield PhoneUpload(device_id, trip_id, b, final, float(t1) if final else float(edges[b]),
                              result, i, (int(gps_cuts[b]), int(gps_cuts[b + 1])),
                              (int(imu_cuts[b]), int(imu_cuts[b + 1])))


def obd_payloads(result: SimulationResult) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(device_id, feed_id, payload) of every dongle feed."""
    for i, (device_id, feed_id) in enumerate(zip(result.obd_feeds["device_id"],
                                                 result.obd_feeds["feed_id"], strict=True)):
        obd = _columns(result.obd.item(i), 0, int(result.obd.offsets[i + 1] - result.obd.offsets[i]),
                       _OBD_DECIMALS)
        yield device_id, feed_id, {"device_id": device_id, "feed_id": feed_id, "obd": obd}


def delivery_plan(result: SimulationResult, seed: int, batch_s: float = DEFAULT_BATCH_S,
                  retry_share: float = 0.04) -> list[Delivery]:
    """Phone uploads in the order a server would receive them.

    Most batches arrive seconds after they are ready; some after minutes to hours (no
    signal), a few days later (phone offline); ``retry_share`` are posted again after a
    timeout. Ties are broken by device, trip, batch and attempt, so the order is reproducible.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    uploads = list(phone_uploads(result, batch_s))
    n = len(uploads)
    kind = rng.random(n)
    delay = np.where(kind < 0.85, rng.lognormal(np.log(5.0), 1.0, n),
                     np.where(kind < 0.97, rng.uniform(600.0, 6 * 3600.0, n),
                              rng.uniform(86_400.0, 4 * 86_400.0, n)))
    retry = rng.random(n) < retry_share
    retry_after = rng.uniform(30.0, 600.0, n)
    deliveries = [Delivery(u.ready_at_s + float(delay[k]), 0, u) for k, u in enumerate(uploads)]
    deliveries += [Delivery(u.ready_at_s + float(delay[k] + retry_after[k]), 1, u)
                   for k, u in enumerate(uploads) if retry[k]]
    deliveries.sort(key=lambda d: (d.deliver_at_s, d.upload.device_id, d.upload.trip_id,
                                   d.upload.batch_no, d.attempt))
    return deliveries


def iter_deliveries(result: SimulationResult, seed: int,
                    batch_s: float = DEFAULT_BATCH_S) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    """(device_id, trip_id, batch_no, payload) in planned delivery order: what a load generator posts."""
    for d in delivery_plan(result, seed, batch_s):
        yield d.upload.device_id, d.upload.trip_id, d.upload.batch_no, d.upload.payload()


def _dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """A DataFrame as Parquet, byte-identical for identical frames."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Fixed writer options (and no clock) so that the same result gives the same bytes.
    pq.write_table(table, path, compression="zstd", compression_level=3, version="2.6",
                   use_dictionary=True, write_statistics=True, data_page_version="1.0")


def phone_upload_path(upload: PhoneUpload) -> str:
    return f"phone/{upload.device_id}/{upload.trip_id}.b{upload.batch_no:03d}.json"


def write(result: SimulationResult, out_dir: str | Path, *, batch_s: float = DEFAULT_BATCH_S) -> Path:
    """Write uploads, dongle feeds, the delivery plan and the truth under ``out_dir``.

    Layout::

        manifest.json                          what was simulated, counts, format version
        phone/<device_id>/<trip_id>.bNNN.json  one phone upload batch each
        obd/<device_id>/<feed_id>.json         one dongle feed (vehicle and local day) each
        delivery_plan.parquet                  planned arrival order of the phone batches
        truth/*.parquet                        drivers, trips, events, claims, coefficients,
                                               obd_feeds
    """
    root = Path(out_dir)
    (root / "truth").mkdir(parents=True, exist_ok=True)
    deliveries = delivery_plan(result, result.seed, batch_s)
    n_batches = 0
    for upload in phone_uploads(result, batch_s):
        path = root / phone_upload_path(upload)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_dumps(upload.payload()))
        n_batches += 1
    n_feeds = 0
    for device_id, feed_id, payload in obd_payloads(result):
        path = root / "obd" / device_id / f"{feed_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_dumps(payload))
        n_feeds += 1
    write_parquet(pd.DataFrame({
        "deliver_at_s": [d.deliver_at_s for d in deliveries],
        "attempt": np.array([d.attempt for d in deliveries], dtype=np.int64),
        "device_id": [d.upload.device_id for d in deliveries],
        "trip_id": [d.upload.trip_id for d in deliveries],
        "batch_no": np.array([d.upload.batch_no for d in deliveries], dtype=np.int64),
        "ready_at_s": [d.upload.ready_at_s for d in deliveries],
        "path": [phone_upload_path(d.upload) for d in deliveries],
    }), root / "delivery_plan.parquet")
    for name in ("drivers", "trips", "events", "claims", "coefficients", "obd_feeds"):
        write_parquet(getattr(result, name), root / "truth" / f"{name}.parquet")
    manifest = {
        "format": WIRE_VERSION,
        "seed": result.seed,
        "days": result.days,
        "start_date": result.start_date.isoformat(),
        "imu_hz": result.imu_hz,
        "batch_s": batch_s,
        "n_drivers": len(result.drivers),
        "n_trips": len(result.trips),
        "n_phone_batches": n_batches,
        "n_obd_feeds": n_feeds,
        "n_gps_samples": int(result.gps.offsets[-1]),
        "n_imu_samples": int(result.imu.offsets[-1]) if result.imu is not None else 0,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return root
