"""Buhlmann-Straub credibility with non-parametric (unbiased) structure estimators.

For risks i = 1..I observed over periods j with ratios X_ij and weights w_ij (km driven):
w_i = sum_j w_ij, X_i = sum_j w_ij X_ij / w_i, w = sum_i w_i,

    EPV  s2 = sum_ij w_ij (X_ij - X_i)^2 / sum_i (n_i - 1)
    VHM  a  = (sum_i w_i (X_i - X_w)^2 - (I - 1) s2) / (w - sum_i w_i^2 / w)
    k = s2 / a,  Z_i = w_i / (w_i + k)

with X_w the weight-weighted mean; the collective mean is the credibility-weighted
sum_i Z_i X_i / sum_i Z_i (Buhlmann and Gisler 2005, section 4.8; Klugman, Panjer and
Willmot, Loss Models, section on empirical Bayes estimation). When the VHM estimate is not
positive the data show no heterogeneity: every Z is 0 and k is infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

CollectiveMean = Literal["credibility_weighted", "weight_weighted"]


@dataclass(frozen=True)
class BuhlmannStraubFit:
    """Structure parameters and, per risk, weight, mean, Z and credibility estimate."""

    collective_mean: float
    within_variance: float
    between_variance: float
    k: float
    risks: pd.DataFrame

    def credibility_weight(self, weight: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return credibility_weight(weight, self.k)


def credibility_weight(weight: npt.ArrayLike, k: float) -> npt.NDArray[np.float64]:
    """Z = w / (w + k); 0 for an infinite k (no heterogeneity), 1 for k = 0."""
    values = np.asarray(weight, dtype=np.float64)
    if (values < 0).any() or np.isnan(values).any():
        raise ValueError("weight: must be non-negative and not NaN")
    if not k >= 0:
        raise ValueError(f"k: must be non-negative, got {k!r}")
    if math.isinf(k):
        return np.zeros_like(values)
    if k == 0:
        return np.ones_like(values)
    return values / (values + k)


def buhlmann_straub(data: pd.DataFrame, *, risk: str, value: str, weight: str,
                    collective: CollectiveMean = "credibility_weighted") -> BuhlmannStraubFit:
    """Fit Buhlmann-Straub on long data (one row per risk and period)."""
    for column in (risk, value, weight):
        if column not in data.columns:
            raise ValueError(f"{column}: column is missing")
    values = data[value].to_numpy(dtype=np.float64)
    weights = data[weight].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{value}: every value must be finite")
    if not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ValueError(f"{weight}: every weight must be finite and positive")
    codes, labels = pd.factorize(data[risk], sort=True)
    n_risks = len(labels)
    if n_risks < 2:
        raise ValueError(f"{risk}: at least two risks are needed, got {n_risks}")
    risk_weight = np.bincount(codes, weights=weights, minlength=n_risks)
    risk_mean = np.bincount(codes, weights=weights * values, minlength=n_risks) / risk_weight
    periods = np.bincount(codes, minlength=n_risks)
    degrees_within = int((periods - 1).sum())
    if degrees_within < 1:
        raise ValueError(f"{risk}: at least one risk needs two or more periods to estimate the within variance")
    deviation = values - risk_mean[codes]
    within = float(np.sum(weights * deviation**2) / degrees_within)
    total_weight = float(risk_weight.sum())
    weighted_mean = float(np.sum(risk_weight * risk_mean) / total_weight)
    between_numerator = float(np.sum(risk_weight * (risk_mean - weighted_mean) ** 2)) - (n_risks - 1) * within
    between = between_numerator / (total_weight - float(np.sum(risk_weight**2)) / total_weight)
    if between > 0:
        k = within / between
        z = risk_weight / (risk_weight + k)
    else:
        k = math.inf
        z = np.zeros(n_risks)
    if collective == "credibility_weighted" and z.sum() > 0:
        mean = float(np.sum(z * risk_mean) / z.sum())
    else:
        mean = weighted_mean
    risks = pd.DataFrame(
        {
            "weight": risk_weight,
            "mean": risk_mean,
            "periods": periods,
            "z": z,
            "credibility_estimate": z * risk_mean + (1 - z) * mean,
        },
        index=pd.Index(labels, name=risk),
    )
    return BuhlmannStraubFit(collective_mean=mean, within_variance=within, between_variance=between, k=k, risks=risks)
