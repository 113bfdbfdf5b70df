"""The full core over a batch of trips: GPS features and events, the phone's IMU where
there is one, and the transport mode. The service scores one closed trip with it; batch
recomputation and the truth-recovery evaluation run it over many trips at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from telematics.core.clean import CleanedGps, clean_gps
from telematics.core.features import FeatureBlocks, compute_trip_feature_blocks
from telematics.core.imu import process_imu
from telematics.core.kinematics import Kinematics, compute_kinematics
from telematics.core.mode import MODE_CAR, MODE_NAMES, classify_one_trip, classify_trips

HARSH_KINDS: tuple[str, ...] = ("braking", "acceleration", "cornering")
# Trips whose IMU was oriented over at least this share of samples take their harsh
# events from the IMU; the others keep the GPS's.
IMU_MIN_ORIENTED_SHARE = 0.5


@dataclass(frozen=True)
class PipelineResult:
    """Per-trip features (with ``mode``, ``mode_confidence``, ``mode_scored`` and
    ``imu_oriented_share``) and the events (``trip`` is the trip's position)."""

    features: pd.DataFrame
    events: pd.DataFrame


def run_pipeline(gps: Mapping[str, np.ndarray], gps_offsets: np.ndarray, *,
                 imu: Mapping[str, np.ndarray] | None = None,
                 imu_offsets: np.ndarray | None = None,
                 time_zone: str | Sequence[str] = "UTC", now_s: float,
                 phone_handling: bool | np.ndarray = True,
                 parallel: bool = False) -> PipelineResult:
    """Run the core over flat per-sample columns with trips at ``*_offsets``.

    ``gps`` needs ``t_s``, ``lat_deg``, ``lon_deg``, ``speed_mps``, ``accuracy_m`` and
    ``speed_limit_mps`` (NaN where unknown); ``imu`` (optional, same trips) ``t_s`` and
    ``acc_[xyz]_mps2``, optionally ``gyr_[xyz]_radps``. ``phone_handling`` False (for all
    trips, or per trip) drops phone-handling events: no consent to use phone-use data.
    """
    offsets = np.asarray(gps_offsets, dtype=np.int64)
    cleaned, kin = _clean_and_move(gps, offsets, now_s, parallel)
    idx = cleaned.sample_index
    modes = classify_trips(gps["t_s"][idx], kin.speed_mps, cleaned.offsets)
    blocks, oriented = _features(gps, offsets, cleaned, kin, imu, imu_offsets, time_zone,
                                 now_s, phone_handling, parallel)
    out = blocks.frames()
    features = out.features.assign(
        mode=np.asarray(MODE_NAMES, dtype=object)[modes.mode],
        mode_confidence=modes.confidence, mode_scored=modes.scored,
        imu_oriented_share=oriented)
    return PipelineResult(features, out.events)


@dataclass(frozen=True)
class TripResult:
    """One trip's features (the row of :class:`PipelineResult` as Python scalars, in its
    column order) and its events (the event table's columns as arrays)."""

    features: dict[str, Any]
    events: dict[str, np.ndarray]


def run_trip_pipeline(gps: Mapping[str, np.ndarray], *,
                      imu: Mapping[str, np.ndarray] | None = None, time_zone: str = "UTC",
                      now_s: float, phone_handling: bool = True) -> TripResult:
    """:func:`run_pipeline` for one trip (the columns are the trip) without building
    tables: real-time scoring's path, where the frames cost more than the kernels. The
    result is the one of ``run_pipeline``, value for value."""
    n = gps["t_s"].shape[0]
    offsets = np.array([0, n], dtype=np.int64)
    cleaned, kin = _clean_and_move(gps, offsets, now_s, False)
    mode, confidence = classify_one_trip(gps["t_s"][cleaned.sample_index], kin.speed_mps)
    imu_offsets = None if imu is None else np.array([0, imu["t_s"].shape[0]], dtype=np.int64)
    blocks, oriented = _features(gps, offsets, cleaned, kin, imu, imu_offsets, time_zone,
                                 now_s, phone_handling, False)
    features = blocks.row(0)
    features.update(mode=MODE_NAMES[mode], mode_confidence=confidence,
                    mode_scored=mode == MODE_CAR, imu_oriented_share=float(oriented[0]))
    return TripResult(features, blocks.event_columns())


def _clean_and_move(gps: Mapping[str, np.ndarray], offsets: np.ndarray, now_s: float,
                    parallel: bool) -> tuple[CleanedGps, Kinematics]:
    cleaned = clean_gps(gps["t_s"], gps["lat_deg"], gps["lon_deg"], gps["accuracy_m"],
                        offsets, now_s=now_s, parallel=parallel)
    idx = cleaned.sample_index
    kin = compute_kinematics(gps["t_s"][idx], gps["lat_deg"][idx], gps["lon_deg"][idx],
                             gps["speed_mps"][idx], cleaned.offsets)
    return cleaned, kin


def _features(gps: Mapping[str, np.ndarray], offsets: np.ndarray, cleaned: CleanedGps,
              kin: Kinematics, imu: Mapping[str, np.ndarray] | None,
              imu_offsets: np.ndarray | None, time_zone: str | Sequence[str], now_s: float,
              phone_handling: bool | np.ndarray, parallel: bool
              ) -> tuple[FeatureBlocks, np.ndarray]:
    """The GPS features with the IMU's events where it was oriented, and each trip's
    oriented share."""
    n_trips = offsets.shape[0] - 1
    idx = cleaned.sample_index
    extra = None
    imu_trips = None
    oriented = np.zeros(n_trips)
    if imu is not None:
        if imu_offsets is None:
            raise ValueError("imu_offsets: required with imu")
        result = process_imu(
            imu["t_s"], imu["acc_x_mps2"], imu["acc_y_mps2"], imu["acc_z_mps2"],
            np.asarray(imu_offsets, dtype=np.int64), gps["t_s"][idx], kin.speed_mps,
            cleaned.offsets, gyr_x_radps=imu.get("gyr_x_radps"),
            gyr_y_radps=imu.get("gyr_y_radps"), gyr_z_radps=imu.get("gyr_z_radps"),
            gps_lat_deg=gps["lat_deg"][idx], gps_lon_deg=gps["lon_deg"][idx])
        oriented = result.orientation.oriented_share
        imu_trips = oriented >= IMU_MIN_ORIENTED_SHARE
        frame = result.events.to_frame()
        keep = (~frame["kind"].isin(HARSH_KINDS).to_numpy()
                | imu_trips[frame["trip"].to_numpy()])
        allowed = np.broadcast_to(np.asarray(phone_handling, dtype=np.bool_), (n_trips,))
        keep &= (frame["kind"] != "phone_handling").to_numpy() | allowed[frame["trip"].to_numpy()]
        extra = frame[keep].reset_index(drop=True)
    blocks = compute_trip_feature_blocks(
        gps["t_s"], gps["lat_deg"], gps["lon_deg"], offsets, speed_mps=gps["speed_mps"],
        accuracy_m=gps["accuracy_m"], speed_limit_mps=gps["speed_limit_mps"],
        time_zone=time_zone, now_s=now_s, extra_events=extra, imu_trips=imu_trips,
        parallel=parallel)
    return blocks, oriented
