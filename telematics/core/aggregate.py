"""Policy-period aggregation of trip features over scored trips: exposure sums, event
rates per 100 km and exposure-weighted shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

_NOT_ADDITIVE = frozenset({"trip", "start_t_s", "end_t_s", "driving_end_s", "scored"})
_SHARES_OF_DISTANCE = ("night", "rush")
_ROADS = ("urban", "rural", "motorway")
# Trip-level means and their weights, re-averaged so that they stay exact ratios.
_WEIGHTED_MEANS = {
    "speed_mean_mps": "moving_s",
    "limit_known_share": "moving_s",
    "jerk_abs_mean_mps3": "moving_s",
    "quality_score": "distance_m",
    "accuracy_score": "distance_m",
    "coverage_share": "duration_s",
    "kept_share": "n_samples_raw",
    "mean_accuracy_m": "n_samples",
    "speed_discrepancy_mps": "n_samples",
}


def _is_additive(name: str) -> bool:
    if name in _NOT_ADDITIVE or name in _WEIGHTED_MEANS:
        return False
    return name.startswith(("n_", "heatmap_s_")) or name.endswith(("_s", "_m"))


def aggregate_trip_features(
    features: pd.DataFrame, by: Sequence[str], *, scored_only: bool = True
) -> pd.DataFrame:
    """One row per group of ``by`` (e.g. ``policy_id``, ``period``) from trip features.

    ``features`` is :func:`telematics.core.features.compute_trip_features`' table with the
    ``by`` columns added. Only trips with ``scored`` true count unless ``scored_only`` is
    false; ``n_trips_unscored`` says how many were left out. Counts, distances and times
    are summed (``distance_km`` is the exposure), every ``n_<kind>[_<severity>]`` becomes
    ``<kind>[_<severity>]_per_100km`` over the group's distance, night and rush-hour
    shares are of distance, road shares of classified distance, speeding and phone
    handling shares of moving time, and trip-level means are re-weighted by their
    exposure (moving time, distance or duration).
    """
    by = list(by)
    missing = [c for c in [*by, "scored", "distance_m", "moving_s"] if c not in features.columns]
    if missing:
        raise ValueError(f"features: missing columns {missing}")
    scored = features["scored"].astype(bool)
    unscored = (~scored).groupby([features[c] for c in by]).sum().rename("n_trips_unscored")
    trips = features[scored] if scored_only else features
    keys = [trips[c] for c in by]
    grouped = trips.groupby(keys, sort=True)
    additive = [c for c in trips.columns if c not in by and _is_additive(c)]
    sums = grouped[additive].sum()
    cols: dict[str, pd.Series] = {
        "n_trips": grouped.size(),
        "distance_km": sums["distance_m"] / 1000.0,
        "start_t_s": grouped["start_t_s"].min(),
        "end_t_s": grouped["end_t_s"].max(),
        "speed_max_mps": grouped["speed_max_mps"].max(),
    }
    for name, weight in _WEIGHTED_MEANS.items():
        if name in trips.columns:
            valid = trips[name].notna()
            num = (trips[name].where(valid, 0.0) * trips[weight]).groupby(keys).sum()
            den = trips[weight].where(valid, 0.0).groupby(keys).sum()
            cols[name] = num / den.where(den > 0)
    per_100km = 100.0 / cols["distance_km"].where(cols["distance_km"] > 0)
    for col in additive:
        if col.startswith("n_") and not col.startswith("n_samples") and col != "n_gaps":
            cols[f"{col[2:]}_per_100km"] = sums[col] * per_100km
    distance = sums["distance_m"].where(sums["distance_m"] > 0)
    for band in _SHARES_OF_DISTANCE:
        cols[f"{band}_share"] = sums[f"{band}_distance_m"] / distance
    classified = sums[[f"{r}_distance_m" for r in _ROADS]].sum(axis=1)
    for road in _ROADS:
        cols[f"{road}_share"] = sums[f"{road}_distance_m"] / classified.where(classified > 0)
    moving = sums["moving_s"].where(sums["moving_s"] > 0)
    for kind in ("speeding", "phone_handling"):
        if f"{kind}_s" in sums.columns:
            cols[f"{kind}_share"] = sums[f"{kind}_s"] / moving
    out = pd.concat([pd.DataFrame(cols), sums], axis=1).join(unscored, how="outer")
    # A group whose trips were all unscored has no exposure: zero sums, undefined rates.
    zero_fill = {col: 0 for col in ["n_trips", "n_trips_unscored", "distance_km", *additive]}
    out = out.fillna(zero_fill)
    # fillna by column leaves one block per column; copy() consolidates them.
    out = out.astype({c: np.int64 for c in zero_fill if c.startswith("n_")}).copy()
    return out.reset_index()
