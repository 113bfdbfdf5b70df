"""True claims model and the policy-level mode: frequency and severity from documented coefficients.

Frequency is Poisson with

    log E[N] = log(exposure_years) + intercept + km_elasticity * log(km_per_year / 12,000)
               + age band + vehicle group + region + novice
               + sum_b coef_b * behaviour_b

where the behaviours are the driver's true (latent) rates, not their noisy observations.
Severities are Gamma with a fixed shape and a log-linear mean; the claim amount of a period
is the sum of its claims' severities. The coefficients are returned as a table so that a
calibrated rating plan can be checked against them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator._policy_kernels import _draw_claims, _draw_policy_periods
from simulator.population import AGE_BANDS, REGIONS, VEHICLE_GROUPS, draw_style_arrays

REFERENCE_KM_PER_YEAR = 12_000.0
SEVERITY_SHAPE = 1.5

FREQUENCY_INTERCEPT = float(np.log(0.04))
LOG_EXPOSURE_COEF = 1.0  # an offset: claims are proportional to time at risk
KM_ELASTICITY = 0.55
AGE_BAND_COEF = dict(zip(AGE_BANDS, (0.55, 0.18, 0.0, -0.08, 0.12), strict=True))
VEHICLE_GROUP_COEF = dict(zip(VEHICLE_GROUPS, (0.0, 0.06, 0.12, 0.20, 0.32), strict=True))
REGION_COEF = dict(zip((r.code for r in REGIONS), (0.05, 0.0, 0.08, 0.10, 0.15, 0.12), strict=True))
NOVICE_COEF = 0.25  # years licensed < 2
NOVICE_YEARS = 2
BEHAVIOUR_COEF = {
    "harsh_brake_per_100km": 0.07,
    "harsh_accel_per_100km": 0.04,
    "harsh_corner_per_100km": 0.06,
    "speeding_per_100km": 0.05,
    "night_propensity": 0.35,
    "phone_handling_per_hour": 0.08,
    "fatigue_tolerance": 0.15,
}
SEVERITY_INTERCEPT = float(np.log(3_200.0))
SEVERITY_VEHICLE_GROUP_STEP = 0.08
SEVERITY_SPEEDING_COEF = 0.03


def true_coefficients() -> pd.DataFrame:
    """Every true coefficient, one row each: (model, term, level, coefficient, description)."""
    rows: list[tuple[str, str, str, float, str]] = [
        ("frequency", "intercept", "", FREQUENCY_INTERCEPT, "log claims per year at the reference levels"),
        ("frequency", "log_exposure_years", "", LOG_EXPOSURE_COEF, "offset"),
        ("frequency", "log_km_per_year_rel", "", KM_ELASTICITY,
         f"log(km per exposure year / {REFERENCE_KM_PER_YEAR:.0f})"),
        ("frequency", "novice", "", NOVICE_COEF, f"years licensed < {NOVICE_YEARS}"),
    ]
    rows += [("frequency", "age_band", k, v, "") for k, v in AGE_BAND_COEF.items()]
    rows += [("frequency", "vehicle_group", str(k), v, "") for k, v in VEHICLE_GROUP_COEF.items()]
    rows += [("frequency", "region", k, v, "") for k, v in REGION_COEF.items()]
    rows += [("frequency", k, "", v, "true (latent) behaviour, per unit") for k, v in BEHAVIOUR_COEF.items()]
    rows += [
        ("frequency", "gender", "", 0.0, "never a risk factor here; for fairness audits only"),
        ("severity", "intercept", "", SEVERITY_INTERCEPT, "log mean claim amount, vehicle group 1"),
        ("severity", "vehicle_group_step", "", SEVERITY_VEHICLE_GROUP_STEP, "per group above 1"),
        ("severity", "speeding_per_100km", "", SEVERITY_SPEEDING_COEF, "true behaviour"),
        ("severity", "gamma_shape", "", SEVERITY_SHAPE, "shape of each claim's Gamma amount"),
    ]
    return pd.DataFrame(rows, columns=["model", "term", "level", "coefficient", "description"])


def frequency_log_rate(exposure_years: np.ndarray, distance_km: np.ndarray,
                       style: dict[str, np.ndarray]) -> np.ndarray:
    """log E[claim count] of each policy period (see the module docstring)."""
    km_per_year = np.maximum(distance_km, 1.0) / exposure_years
    log_rate = (LOG_EXPOSURE_COEF * np.log(exposure_years) + FREQUENCY_INTERCEPT
                + KM_ELASTICITY * np.log(km_per_year / REFERENCE_KM_PER_YEAR))
    log_rate += np.array(list(AGE_BAND_COEF.values()))[style["age_band_code"]]
    log_rate += np.array(list(VEHICLE_GROUP_COEF.values()))[style["vehicle_group"] - 1]
    log_rate += np.array(list(REGION_COEF.values()))[style["region_code"]]
    log_rate += NOVICE_COEF * (style["years_licensed"] < NOVICE_YEARS)
    for name, coef in BEHAVIOUR_COEF.items():
        log_rate += coef * style[name]
    return log_rate


def severity_mean(style: dict[str, np.ndarray]) -> np.ndarray:
    return np.exp(SEVERITY_INTERCEPT + SEVERITY_VEHICLE_GROUP_STEP * (style["vehicle_group"] - 1)
                  + SEVERITY_SPEEDING_COEF * style["speeding_per_100km"])


def draw_claims(exposure_years: np.ndarray, distance_km: np.ndarray, style: dict[str, np.ndarray],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected count, claim count, claim amount) of each policy period."""
    expected = np.exp(frequency_log_rate(exposure_years, distance_km, style))
    count = np.empty(expected.shape[0], dtype=np.int64)
    amount = np.empty(expected.shape[0])
    # The sum of k Gamma(shape, scale) amounts is Gamma(k * shape, scale).
    _draw_claims(np.uint64(rng.integers(1, 2**63 - 1)), expected, SEVERITY_SHAPE,
                 severity_mean(style) / SEVERITY_SHAPE, count, amount)
    return expected, count, amount


_OBSERVED_PER_100KM = ("harsh_brake_per_100km", "harsh_accel_per_100km", "harsh_corner_per_100km",
                       "speeding_per_100km")
_TRUE_COLUMNS = ("caution", "aggressiveness", "speeding_habit", "night_propensity", "phone_habit",
                 "fatigue_tolerance", "annual_km", "commuter", *_OBSERVED_PER_100KM,
                 "phone_handling_per_hour")


def simulate_policies(n_policies: int, seed: int) -> pd.DataFrame:
    """Policy-period rows without traces: factors, true and observed behaviour, claims.

    Observed behaviour is what the period's telematics would measure: event counts are
    Poisson around the true rate times the distance (at 40 km/h for phone handling per hour),
    the night share is Beta around the true share; the true values are in ``true_*`` columns.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    style = draw_style_arrays(n_policies, rng)
    exposure = np.empty(n_policies)
    distance_km = np.empty(n_policies)
    obs_per_100km = np.empty((len(_OBSERVED_PER_100KM), n_policies))
    obs_phone = np.empty(n_policies)
    obs_night = np.empty(n_policies)
    _draw_policy_periods(np.uint64(rng.integers(1, 2**63 - 1)), style["annual_km"],
                         np.stack([style[name] for name in _OBSERVED_PER_100KM]),
                         style["phone_handling_per_hour"],
                         0.01 + 0.15 * style["night_propensity"] ** 2,
                         exposure, distance_km, obs_per_100km, obs_phone, obs_night)
    expected, count, amount = draw_claims(exposure, distance_km, style, rng)
    columns: dict[str, object] = {
        "policy_id": np.arange(n_policies, dtype=np.int64),
        "exposure_years": exposure,
        "distance_km": distance_km,
        "age_band": pd.Categorical.from_codes(np.asarray(style["age_band_code"], dtype=np.int64),
                                              categories=pd.Index(list(AGE_BANDS))),
        "age_years": style["age_years"],
        "gender": pd.Categorical.from_codes(np.asarray(style["gender_female"], dtype=np.int64),
                                            categories=pd.Index(["M", "F"])),
        "years_licensed": style["years_licensed"],
        "vehicle_group": style["vehicle_group"],
        "region": pd.Categorical.from_codes(np.asarray(style["region_code"], dtype=np.int64),
                                            categories=pd.Index([r.code for r in REGIONS])),
    }
    columns.update({f"true_{name}": style[name] for name in _TRUE_COLUMNS})
    columns.update({f"obs_{name}": obs_per_100km[k] for k, name in enumerate(_OBSERVED_PER_100KM)})
    columns["obs_night_share"] = obs_night
    columns["obs_phone_handling_per_hour"] = obs_phone
    columns["expected_claims"] = expected
    columns["claim_count"] = count
    columns["claim_amount"] = amount
    return pd.DataFrame(columns, copy=False)
