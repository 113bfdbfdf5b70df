"""numba kernels of the behaviour model and the policy-level draws (one pass per row).

Latent normals are Irwin-Hall deviates from the fast stream (bounded at +-3.46; the model
truncates them at +-3 anyway); Poisson and Gamma draws that feed claims use exact samplers
(inversion or Hörmann's PTRS, Marsaglia-Tsang with Box-Muller normals).
"""

from __future__ import annotations

import math

import numpy as np

from simulator._jit import serial_kernel
from simulator._rng import normal, uniform


@serial_kernel
def _categorical(state: np.uint64, cdf: np.ndarray) -> tuple[np.uint64, int]:
    state, u = uniform(state)
    code = 0
    while code < cdf.shape[0] - 1 and u >= cdf[code]:
        code += 1
    return state, code


@serial_kernel
def _exact_normal(state: np.uint64) -> tuple[np.uint64, float]:
    state, u1 = uniform(state)
    state, u2 = uniform(state)
    return state, math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


@serial_kernel
def _poisson(state: np.uint64, lam: float) -> tuple[np.uint64, int]:
    if lam <= 0.0:
        return state, 0
    if lam < 12.0:
        limit = math.exp(-lam)
        k = 0
        state, product = uniform(state)
        while product > limit:
            k += 1
            state, u = uniform(state)
            product *= u
        return state, k
    # Hörmann (1993), transformed rejection with squeeze (PTRS).
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        state, u = uniform(state)
        u -= 0.5
        state, v = uniform(state)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return state, int(k)
        if k < 0.0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - math.lgamma(k + 1.0)):
            return state, int(k)


@serial_kernel
def _gamma(state: np.uint64, shape: float) -> tuple[np.uint64, float]:
    """Gamma(shape, 1) by Marsaglia and Tsang (boosted for shape < 1)."""
    boost = 1.0
    if shape < 1.0:
        state, u = uniform(state)
        boost = (1.0 - u) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        state, x = _exact_normal(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        state, u = uniform(state)
        if math.log(1.0 - u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return state, d * v * boost


STYLE_FLOATS: tuple[str, ...] = (
    "caution", "aggressiveness", "speeding_habit", "night_propensity", "phone_habit",
    "fatigue_tolerance", "annual_km", "harsh_brake_per_100km", "harsh_accel_per_100km",
    "harsh_corner_per_100km", "speeding_per_100km", "speeding_excess_kmh",
    "phone_handling_per_hour", "night_trip_prob_per_day", "cruise_factor", "accel_max_mps2",
    "brake_plan_mps2", "lateral_comfort_mps2", "jerk_mps3",
)
STYLE_INTS: tuple[str, ...] = (
    "age_band_code", "age_years", "years_licensed", "vehicle_group", "region_code",
    "gender_female", "commuter",
)
_SQRT_HALF = 0.7071067811865476


@serial_kernel
def _clipped_normal(state: np.uint64) -> tuple[np.uint64, float]:
    state, n = normal(state)
    return state, min(max(n, -3.0), 3.0)


@serial_kernel
def _draw_style(state: np.uint64, age_cdf: np.ndarray, age_low: np.ndarray, age_high: np.ndarray,
                age_shift: np.ndarray, vehicle_cdf: np.ndarray, region_cdf: np.ndarray,
                cholesky: np.ndarray, annual_km_median: float, annual_km_log_sd: float,
                out_int: np.ndarray, out_float: np.ndarray) -> None:
    """The behaviour model: classical factors, latent style and true rates of each driver.

    Rows of ``out_int`` and ``out_float`` are named by ``STYLE_INTS`` and ``STYLE_FLOATS``.
    Latent scores z (caution, aggressiveness, speeding, night, phone, fatigue) are correlated
    standard normals truncated at 3 sd, aggressiveness shifted by age band; a style value is
    Phi(z). True event rates are log-linear in z; normal-driving parameters stay inside the
    moderate bands of DESIGN.md.
    """
    white = np.empty(6)
    z = np.empty(6)
    for i in range(out_int.shape[1]):
        state, band = _categorical(state, age_cdf)
        state, u = uniform(state)
        age = age_low[band] + int(u * (age_high[band] - age_low[band]))
        state, u = uniform(state)
        out_int[0, i] = band
        out_int[1, i] = age
        out_int[2, i] = math.floor((age - 18) * u**0.3)  # most license soon after 18
        state, group = _categorical(state, vehicle_cdf)
        out_int[3, i] = group + 1
        state, region = _categorical(state, region_cdf)
        out_int[4, i] = region
        state, u = uniform(state)
        out_int[5, i] = u < 0.5
        state, u = uniform(state)
        out_int[6, i] = u < (0.25 if band == 4 else 0.7)
        for k in range(6):
            state, white[k] = normal(state)
        for j in range(6):
            total = 0.0
            for k in range(j + 1):
                total += cholesky[j, k] * white[k]
            z[j] = min(max(total, -3.0), 3.0)
        z[1] += age_shift[band]
        z[0] -= 0.5 * age_shift[band]
        for j in range(6):
            out_float[j, i] = 0.5 * math.erfc(-z[j] * _SQRT_HALF)
        state, n = _clipped_normal(state)
        out_float[6, i] = annual_km_median * math.exp(annual_km_log_sd * n)
        state, n = _clipped_normal(state)
        out_float[7, i] = 1.2 * math.exp(0.6 * z[1] - 0.15 * z[0] + 0.25 * n)
        state, n = _clipped_normal(state)
        out_float[8, i] = 0.8 * math.exp(0.6 * z[1] + 0.25 * n)
        state, n = _clipped_normal(state)
        out_float[9, i] = 0.6 * math.exp(0.6 * z[1] + 0.25 * n)
        out_float[10, i] = 1.5 * math.exp(0.6 * z[2])
        out_float[11, i] = 12.0 + 18.0 * out_float[2, i]
        out_float[12, i] = math.exp(0.6 * z[4])
        out_float[13, i] = 0.02 + 0.25 * out_float[3, i] ** 2
        out_float[14, i] = 0.93 + 0.08 * (1.0 - out_float[0, i])
        aggressiveness = out_float[1, i]
        out_float[15, i] = 1.1 + 0.6 * aggressiveness
        out_float[16, i] = 0.9 + 0.5 * aggressiveness
        out_float[17, i] = 1.3 + 0.9 * aggressiveness
        out_float[18, i] = 1.5 + 1.5 * aggressiveness


@serial_kernel
def _count_noise(state: np.uint64, lam: float) -> tuple[np.uint64, int]:
    """A Poisson count as measured; above 30 its normal approximation is close enough."""
    if lam < 30.0:
        return _poisson(state, lam)
    state, n = normal(state)
    return state, max(0, round(lam + math.sqrt(lam) * n))


@serial_kernel
def _draw_policy_periods(state: np.uint64, annual_km: np.ndarray, rates_per_100km: np.ndarray,
                         phone_per_hour: np.ndarray, night_share: np.ndarray,
                         out_exposure_years: np.ndarray, out_distance_km: np.ndarray,
                         out_obs_per_100km: np.ndarray, out_obs_phone_per_hour: np.ndarray,
                         out_obs_night_share: np.ndarray) -> None:
    """Exposure, distance and observed behaviour of each policy period."""
    for i in range(annual_km.shape[0]):
        state, u = uniform(state)
        exposure = 1.0
        if u >= 0.8:
            state, u = uniform(state)
            exposure = 0.1 + 0.9 * u
        state, n = normal(state)
        distance = annual_km[i] * exposure * math.exp(0.15 * n)
        out_exposure_years[i] = exposure
        out_distance_km[i] = distance
        hundreds = distance / 100.0
        for k in range(rates_per_100km.shape[0]):
            state, count = _count_noise(state, rates_per_100km[k, i] * hundreds)
            out_obs_per_100km[k, i] = count / hundreds
        hours = distance / 40.0
        state, count = _count_noise(state, phone_per_hour[i] * hours)
        out_obs_phone_per_hour[i] = count / hours
        # Share of night km over a period's ~200 trips (moments of a Beta(200 m, 200 (1 - m))).
        m = night_share[i]
        state, n = normal(state)
        out_obs_night_share[i] = min(max(m + math.sqrt(m * (1.0 - m) / 201.0) * n, 0.0), 1.0)


@serial_kernel
def _draw_claims(state: np.uint64, expected: np.ndarray, shape: float, scale: np.ndarray,
                 out_count: np.ndarray, out_amount: np.ndarray) -> None:
    """Poisson claim counts; the amount is the sum of ``count`` Gamma(shape, scale) claims."""
    for i in range(expected.shape[0]):
        state, count = _poisson(state, expected[i])
        out_count[i] = count
        amount = 0.0
        if count > 0:
            state, g = _gamma(state, shape * count)
            amount = g * scale[i]
        out_amount[i] = amount
