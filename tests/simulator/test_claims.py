"""Policy-level claims follow the documented true coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator import simulate_policies, true_coefficients
from simulator.claims import BEHAVIOUR_COEF, REFERENCE_KM_PER_YEAR


def _poisson_fit(x: np.ndarray, y: np.ndarray, offset: np.ndarray, iterations: int = 25) -> np.ndarray:
    """Plain IRLS for a log-link Poisson GLM with an offset (an independent oracle)."""
    beta = np.zeros(x.shape[1])
    beta[0] = np.log(y.mean() / np.exp(offset).mean())
    for _ in range(iterations):
        eta = x @ beta + offset
        mu = np.exp(eta)
        z = eta - offset + (y - mu) / mu
        xw = x * mu[:, None]
        beta = np.linalg.solve(x.T @ xw, xw.T @ z)
    return beta


def test_claim_frequency_recovers_the_true_coefficients() -> None:
    policies = simulate_policies(300_000, seed=21)
    coef = true_coefficients().set_index(["model", "term", "level"])["coefficient"]
    columns = {"intercept": np.ones(len(policies))}
    columns["log_km_per_year_rel"] = np.log(policies["distance_km"] / policies["exposure_years"]
                                            / REFERENCE_KM_PER_YEAR).to_numpy()
    for band in ("18-24", "25-34", "50-64", "65+"):
        columns[f"age_band={band}"] = (policies["age_band"] == band).to_numpy(dtype=float)
    for group in (2, 3, 4, 5):
        columns[f"vehicle_group={group}"] = (policies["vehicle_group"] == group).to_numpy(dtype=float)
    columns["novice"] = (policies["years_licensed"] < 2).to_numpy(dtype=float)
    for region in policies["region"].cat.categories[1:]:
        columns[f"region={region}"] = (policies["region"] == region).to_numpy(dtype=float)
    for name in BEHAVIOUR_COEF:
        columns[name] = policies[f"true_{name}"].to_numpy()
    design = pd.DataFrame(columns)
    fitted = dict(zip(design.columns, _poisson_fit(design.to_numpy(), policies["claim_count"].to_numpy(),
                                                   np.log(policies["exposure_years"].to_numpy())),
                      strict=True))
    region_base = coef[("frequency", "region", policies["region"].cat.categories[0])]
    expected = {
        "intercept": coef[("frequency", "intercept", "")] + region_base,
        "log_km_per_year_rel": coef[("frequency", "log_km_per_year_rel", "")],
        "novice": coef[("frequency", "novice", "")],
    }
    for band in ("18-24", "25-34", "50-64", "65+"):
        expected[f"age_band={band}"] = coef[("frequency", "age_band", band)]
    for group in (2, 3, 4, 5):
        expected[f"vehicle_group={group}"] = coef[("frequency", "vehicle_group", str(group))]
    for region in policies["region"].cat.categories[1:]:
        expected[f"region={region}"] = coef[("frequency", "region", region)] - region_base
    for name, value in BEHAVIOUR_COEF.items():
        expected[name] = value
    for name, value in expected.items():
        tolerance = 0.3 if name in {"intercept", "night_propensity", "fatigue_tolerance"} else 0.12
        assert abs(fitted[name] - value) < tolerance, (name, fitted[name], value)
    assert abs(fitted["harsh_brake_per_100km"] - BEHAVIOUR_COEF["harsh_brake_per_100km"]) < 0.03


def test_claim_counts_match_their_expectation_by_group() -> None:
    policies = simulate_policies(200_000, seed=22)
    by_band = policies.groupby("age_band", observed=True)[["claim_count", "expected_claims"]].sum()
    ratio = by_band["claim_count"] / by_band["expected_claims"]
    assert ratio.between(0.9, 1.1).all()
    assert (policies.loc[policies["claim_count"] == 0, "claim_amount"] == 0.0).all()
    assert (policies.loc[policies["claim_count"] > 0, "claim_amount"] > 0.0).all()
    mean_severity = policies["claim_amount"].sum() / policies["claim_count"].sum()
    assert 2_500.0 < mean_severity < 6_000.0


def test_observed_behaviour_scatters_around_the_truth() -> None:
    policies = simulate_policies(50_000, seed=23)
    for name in ("harsh_brake_per_100km", "speeding_per_100km", "phone_handling_per_hour"):
        ratio = policies[f"obs_{name}"].mean() / policies[f"true_{name}"].mean()
        assert 0.97 < ratio < 1.03
    assert "gender" in policies and set(policies["gender"].cat.categories) == {"F", "M"}
