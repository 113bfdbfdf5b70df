"""Property tests: input order and duplicates do not matter; distance is additive."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from tracks import T0, track

from telematics.core.features import compute_trip_features

NOW = T0 + 1e6
SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def trips(draw):
    n = draw(st.integers(2, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tr = track(np.clip(15 + np.cumsum(rng.normal(0, 1.5, n - 1)), 0, 45),
               heading_deg=np.cumsum(rng.normal(0, 10, n - 1)), t0=T0)
    tr["t_s"] = tr["t_s"] + np.cumsum(rng.choice([0.0, 0.0, 0.0, 8.0], n))
    tr["accuracy_m"] = rng.uniform(3, 60, n)
    return tr, rng


def _run(tr, offsets=None):
    return compute_trip_features(tr["t_s"], tr["lat_deg"], tr["lon_deg"], offsets,
                                 speed_mps=tr["speed_mps"], accuracy_m=tr["accuracy_m"],
                                 now_s=NOW, time_zone="Europe/Amsterdam")


@SETTINGS
@given(trips())
def test_shuffled_and_duplicated_samples_give_the_same_features(case):
    tr, rng = case
    n = tr["t_s"].shape[0]
    idx = np.concatenate([np.arange(n), rng.integers(0, n, rng.integers(0, n + 1))])
    rng.shuffle(idx)
    messy = {k: v[idx] for k, v in tr.items()}
    clean, dup = _run(tr), _run(messy)
    pd.testing.assert_frame_equal(clean.features, dup.features)
    pd.testing.assert_frame_equal(clean.events, dup.events)


@SETTINGS
@given(trips(), st.floats(0.0, 1.0))
def test_distance_of_a_trip_is_the_sum_over_its_split_parts(case, where):
    tr, _ = case
    tr["accuracy_m"] = np.full_like(tr["t_s"], 5.0)
    n = tr["t_s"].shape[0]
    k = int(where * (n - 1))
    # The parts share the split fix, so no step is lost.
    parts = {key: np.concatenate([v[:k + 1], v[k:]]) for key, v in tr.items()}
    whole = _run(tr).features["distance_m"].sum()
    split = _run(parts, [0, k + 1, n + 1]).features["distance_m"]
    assert split.sum() == np.float64(whole) or abs(split.sum() - whole) <= 1e-9 * whole
