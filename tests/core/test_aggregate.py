import numpy as np
import pandas as pd
import pytest
from tracks import T0, batch, track

from telematics.core.aggregate import aggregate_trip_features
from telematics.core.features import compute_trip_features


@pytest.fixture(scope="module")
def trips():
    brake = [20.0] * 400 + [15.0, 10.0, 5.0, 0.0] + [0.0] * 10
    parts = [track(brake), track([10.0] * 50, t0=T0 + 1000), track([30.0] * 600, t0=T0 + 2000),
             track(brake, t0=T0 + 5000)]
    cols, offsets = batch(*parts)
    out = compute_trip_features(cols["t_s"], cols["lat_deg"], cols["lon_deg"], offsets,
                                speed_mps=cols["speed_mps"], now_s=2e9)
    table = out.features.copy()
    table["policy_id"] = ["a", "a", "b", "a"]
    table["period"] = "2026-09"
    return table


def test_sums_rates_and_shares(trips):
    agg = aggregate_trip_features(trips, ["policy_id", "period"]).set_index("policy_id")
    a = agg.loc["a"]
    assert a["n_trips"] == 2 and a["n_trips_unscored"] == 1  # the 500 m trip is not scored
    assert a["distance_km"] == pytest.approx(16.08)  # 2 x (8,000 m + Doppler 17.5+12.5+7.5+2.5)
    assert a["n_braking_severe"] == 2
    assert a["braking_per_100km"] == pytest.approx(2 / 16.08 * 100)
    assert a["speed_mean_mps"] == pytest.approx(
        (trips["speed_mean_mps"] * trips["moving_s"])[[0, 3]].sum() / trips["moving_s"][[0, 3]].sum())
    assert a["rural_share"] == 1.0 and agg.loc["b", "motorway_share"] == 1.0
    assert agg.loc["b", "braking_per_100km"] == 0.0


def test_one_scored_trip_aggregates_to_itself(trips):
    agg = aggregate_trip_features(trips.iloc[[2]], ["policy_id"]).iloc[0]
    row = trips.iloc[2]
    for col in ("distance_m", "moving_s", "night_s", "n_speeding", "speed_max_mps",
                "speed_mean_mps", "quality_score", "heatmap_s_v7_a4", "urban_share"):
        assert agg[col] == pytest.approx(row[col], nan_ok=True), col


def test_aggregation_is_additive_over_groups(trips):
    whole = aggregate_trip_features(trips.assign(policy_id="x"), ["policy_id"]).iloc[0]
    parts = aggregate_trip_features(trips, ["policy_id"])
    for col in ("distance_m", "n_braking", "moving_s", "heatmap_s_v5_a4"):
        assert whole[col] == pytest.approx(parts[col].sum())


def test_groups_without_scored_trips_and_unscored_option(trips):
    only_short = trips.iloc[[1]]
    agg = aggregate_trip_features(only_short, ["policy_id"])
    assert agg["n_trips"].tolist() == [0] and agg["n_trips_unscored"].tolist() == [1]
    assert agg["distance_km"].tolist() == [0.0] and agg["n_braking"].tolist() == [0]
    assert np.isnan(agg["braking_per_100km"].iloc[0])
    agg = aggregate_trip_features(only_short, ["policy_id"], scored_only=False)
    assert agg["n_trips"].tolist() == [1]
    with pytest.raises(ValueError, match="policy_id"):
        aggregate_trip_features(pd.DataFrame({"scored": [True]}), ["policy_id"])
