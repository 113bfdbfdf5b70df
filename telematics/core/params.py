"""Every threshold of the GPS core as a parameter with DESIGN section 6's default."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

KMH = 1.0 / 3.6


class KernelParams(NamedTuple):
    """Flat float view of :class:`GpsParams` handed to numba kernels (one compiled type)."""

    max_accuracy_m: float
    max_implied_speed_mps: float
    max_future_s: float
    gap_s: float
    jump_reanchor_fixes: float
    min_heading_speed_mps: float
    moving_speed_mps: float
    standstill_speed_mps: float
    brake_harsh_mps2: float
    brake_moderate_mps2: float
    brake_band_high_mps2: float
    brake_band_severe_mps2: float
    accel_harsh_mps2: float
    accel_moderate_mps2: float
    accel_band_high_mps2: float
    accel_band_severe_mps2: float
    harsh_min_duration_s: float
    harsh_merge_s: float
    corner_lateral_mps2: float
    corner_band_high_mps2: float
    corner_band_severe_mps2: float
    corner_min_heading_change_deg: float
    corner_min_speed_mps: float
    corner_max_accuracy_m: float
    speeding_tolerance_mps: float
    speeding_fallback_limit_mps: float
    speeding_min_duration_s: float
    speeding_merge_s: float
    speeding_band_high_mps: float
    speeding_band_severe_mps: float
    fatigue_driving_s: float
    fatigue_break_s: float
    night_start_h: float
    night_end_h: float
    rush_morning_start_h: float
    rush_morning_end_h: float
    rush_evening_start_h: float
    rush_evening_end_h: float
    context_window_s: float
    urban_max_mps: float
    motorway_min_mps: float
    quality_accuracy_good_m: float
    min_trip_distance_m: float
    min_trip_duration_s: float


@dataclass(frozen=True)
class GpsParams:
    """Thresholds of cleaning, segmentation, kinematics, events and features.

    Defaults and sources are DESIGN section 6 and ``docs/FEATURES.md``; values marked
    "project choice" there are ours.
    """

    # Cleaning (Traccar FilterHandler) and gaps.
    max_accuracy_m: float = 50.0
    max_implied_speed_mps: float = 70.0
    max_future_s: float = 24 * 3600.0
    gap_s: float = 5.0
    jump_reanchor_fixes: int = 3
    # Segmentation (Traccar, Zendrive).
    stop_radius_m: float = 200.0
    stop_min_s: float = 180.0
    stop_core_radius_m: float = 10.0
    split_gap_s: float = 3600.0
    min_trip_distance_m: float = 500.0
    min_trip_duration_s: float = 300.0
    # Kinematics.
    min_heading_speed_mps: float = 2.0
    moving_speed_mps: float = 1.0
    # Receiver speeds below this are noise at a standstill (phones report 0.1-0.5 m/s
    # parked; u-blox's static hold freezes below a similar threshold): driven distance
    # counts them as 0. Project choice.
    standstill_speed_mps: float = 0.4
    # Harsh braking (Damoov, Progressive Snapshot, Allstate Drivewise; DriveQuant).
    brake_harsh_mps2: float = 3.2
    brake_moderate_mps2: float = 1.8
    brake_band_high_mps2: float = 3.58
    brake_band_severe_mps2: float = 4.47
    # Harsh acceleration (Damoov; DriveQuant).
    accel_harsh_mps2: float = 3.0
    accel_moderate_mps2: float = 2.0
    accel_band_high_mps2: float = 3.58
    accel_band_severe_mps2: float = 4.47
    harsh_min_duration_s: float = 0.6
    harsh_merge_s: float = 3.0
    # Harsh cornering (Zendrive).
    corner_lateral_mps2: float = 3.6
    corner_band_high_mps2: float = 4.5
    corner_band_severe_mps2: float = 5.5
    corner_min_heading_change_deg: float = 30.0
    corner_min_speed_mps: float = 18.0 * KMH
    # A corner is measured from positions: a fix reporting worse accuracy (a multipath
    # jump of tens of metres) makes a turn of its own. Project choice.
    corner_max_accuracy_m: float = 10.0
    # Speeding (Zendrive, Drivewise).
    speeding_tolerance_mps: float = 8.0 * KMH
    speeding_fallback_limit_mps: float = 130.0 * KMH
    speeding_min_duration_s: float = 10.0
    speeding_merge_s: float = 5.0
    speeding_band_high_mps: float = 12.0 * KMH
    speeding_band_severe_mps: float = 32.0 * KMH
    # Fatigue (journey-length programmes).
    fatigue_driving_s: float = 2 * 3600.0
    fatigue_break_s: float = 15 * 60.0
    # Local-time bands (Drivewise, Vitality); rush hours count on weekdays only.
    night_start_h: float = 23.0
    night_end_h: float = 5.0
    rush_morning_start_h: float = 7.0
    rush_morning_end_h: float = 9.0
    rush_evening_start_h: float = 16.0
    rush_evening_end_h: float = 19.0
    # Road context by speed profile (Verbelen et al. 2018 use road types; we infer them).
    context_window_s: float = 120.0
    urban_max_mps: float = 50.0 * KMH
    motorway_min_mps: float = 90.0 * KMH
    # Speed-acceleration heatmap (Gao and Wuthrich 2018), fixed bin edges.
    heatmap_speed_edges_mps: tuple[float, ...] = tuple(
        v * KMH for v in (5.0, 20.0, 35.0, 50.0, 65.0, 80.0, 100.0, 120.0, 250.0)
    )
    heatmap_accel_edges_mps2: tuple[float, ...] = (
        -10.0, -3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0, 10.0,
    )
    # Data quality: accuracy at or below this counts as fully good.
    quality_accuracy_good_m: float = 10.0

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, tuple):
                if len(value) < 2 or any(b <= a for a, b in itertools.pairwise(value)):
                    raise ValueError(f"{name}: bin edges must be at least two increasing values")
            elif not value >= 0:
                raise ValueError(f"{name}: must be a non-negative number, got {value!r}")

    def kernel(self) -> KernelParams:
        """The scalar thresholds as the float tuple the kernels take."""
        return KernelParams(**{f: float(getattr(self, f)) for f in KernelParams._fields})


DEFAULT_PARAMS = GpsParams()
