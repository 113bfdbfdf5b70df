"""Synthetic policyholders: classical rating factors and the latent driving style behind them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator._policy_kernels import STYLE_FLOATS, STYLE_INTS, _draw_style


@dataclass(frozen=True)
class Region:
    """A rating region: its network is built in a local metric frame around its centre."""

    code: str
    time_zone: str
    centre_lat_deg: float
    centre_lon_deg: float
    motorway_limit_kmh: float
    altitude_m: float
    share: float


REGIONS: tuple[Region, ...] = (
    Region("NL-UT", "Europe/Amsterdam", 52.0907, 5.1214, 100.0, 5.0, 0.20),
    Region("DE-BY", "Europe/Berlin", 48.1372, 11.5756, 130.0, 520.0, 0.20),
    Region("FR-ARA", "Europe/Paris", 45.7640, 4.8357, 130.0, 170.0, 0.15),
    Region("ES-MD", "Europe/Madrid", 40.4168, -3.7038, 120.0, 650.0, 0.15),
    Region("GB-WM", "Europe/London", 52.4862, -1.8904, 112.0, 140.0, 0.15),
    Region("IT-LO", "Europe/Rome", 45.4642, 9.1900, 130.0, 120.0, 0.15),
)

AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-49", "50-64", "65+")
_AGE_BAND_SHARES = np.array([0.10, 0.20, 0.30, 0.25, 0.15])
_AGE_BAND_LOW_YEARS = np.array([18, 25, 35, 50, 65])
_AGE_BAND_HIGH_YEARS = np.array([25, 35, 50, 65, 85])
# Younger drivers lean towards a harsher style (shift of the latent aggressiveness score).
_AGE_BAND_STYLE_SHIFT = np.array([0.6, 0.25, 0.0, -0.15, -0.1])
VEHICLE_GROUPS: tuple[int, ...] = (1, 2, 3, 4, 5)
_VEHICLE_GROUP_SHARES = np.array([0.25, 0.30, 0.20, 0.15, 0.10])

MEDIAN_ANNUAL_KM = 12_000.0
_ANNUAL_KM_LOG_SD = 0.55

# Correlation of the latent scores (caution, aggressiveness, speeding, night, phone, fatigue).
_STYLE_CORRELATION = np.array(
    [
        [1.0, -0.6, -0.4, -0.2, -0.3, -0.2],
        [-0.6, 1.0, 0.5, 0.3, 0.3, 0.2],
        [-0.4, 0.5, 1.0, 0.2, 0.2, 0.1],
        [-0.2, 0.3, 0.2, 1.0, 0.2, 0.2],
        [-0.3, 0.3, 0.2, 0.2, 1.0, 0.1],
        [-0.2, 0.2, 0.1, 0.2, 0.1, 1.0],
    ]
)
_STYLE_CHOLESKY = np.linalg.cholesky(_STYLE_CORRELATION)


def draw_style_arrays(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Classical factors and latent style of ``n`` drivers as plain arrays.

    Shared by the trace simulator and the policy-level mode so that both draw behaviour from
    the same model (``_policy_kernels._draw_style``). Categorical factors are integer codes
    into the module's tuples; ``*_per_100km`` and ``phone_handling_per_hour`` are true rates.
    """
    ints = np.empty((len(STYLE_INTS), n), dtype=np.int64)
    floats = np.empty((len(STYLE_FLOATS), n))
    _draw_style(np.uint64(rng.integers(1, 2**63 - 1)), np.cumsum(_AGE_BAND_SHARES), _AGE_BAND_LOW_YEARS,
                _AGE_BAND_HIGH_YEARS, _AGE_BAND_STYLE_SHIFT, np.cumsum(_VEHICLE_GROUP_SHARES),
                np.cumsum([r.share for r in REGIONS]), _STYLE_CHOLESKY, MEDIAN_ANNUAL_KM,
                _ANNUAL_KM_LOG_SD, ints, floats)
    style = dict(zip(STYLE_INTS, ints, strict=True))
    style["gender_female"] = style["gender_female"].astype(np.bool_)
    style["commuter"] = style["commuter"].astype(np.bool_)
    style.update(zip(STYLE_FLOATS, floats, strict=True))
    return style


def draw_population(n_drivers: int, rng: np.random.Generator, obd_share: float) -> pd.DataFrame:
    """The simulated drivers, one row each, with device ids and their latent style (truth)."""
    style = draw_style_arrays(n_drivers, rng)
    has_obd = rng.random(n_drivers) < obd_share
    driver_id = np.arange(n_drivers, dtype=np.int64)
    region = [REGIONS[c] for c in style["region_code"]]
    frame = pd.DataFrame(
        {
            "driver_id": driver_id,
            "device_id": [f"dev-{i:06d}" for i in driver_id],
            "obd_device_id": [f"obd-{i:06d}" if h else None for i, h in zip(driver_id, has_obd, strict=True)],
            "has_obd": has_obd,
            "age_band": pd.Categorical.from_codes(np.asarray(style["age_band_code"], dtype=np.int64),
                                                  categories=pd.Index(list(AGE_BANDS))),
            "age_years": style["age_years"],
            "gender": np.where(style["gender_female"], "F", "M"),
            "years_licensed": style["years_licensed"],
            "vehicle_group": style["vehicle_group"],
            "region": [r.code for r in region],
            "time_zone": [r.time_zone for r in region],
        }
    )
    for name, values in style.items():
        if name not in {"age_band_code", "age_years", "years_licensed", "vehicle_group",
                        "region_code", "gender_female"}:
            frame[name] = values
    frame["region_code"] = style["region_code"]
    return frame
