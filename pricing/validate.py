"""Validation of a rating plan on held-out claims: Gini, lift, O/E, deviance, fairness audit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pricing.glm import bin_values, poisson_deviance
from pricing.plan import PROTECTED_ATTRIBUTE_TOKENS, Plan
from pricing.rating import reprice


def _vectors(*arrays: Any) -> list[npt.NDArray[np.float64]]:
    vectors = [np.asarray(a, dtype=np.float64) for a in arrays]
    if len({v.shape for v in vectors}) != 1 or vectors[0].ndim != 1:
        raise ValueError("observed, predicted, exposure: must be 1-d arrays of one length")
    if not all(np.isfinite(v).all() for v in vectors):
        raise ValueError("observed, predicted, exposure: every value must be finite")
    return vectors


def ordered_lorenz(observed: Any, predicted: Any, exposure: Any) -> pd.DataFrame:
    """Cumulative exposure and loss shares, policies ordered by predicted rate (lowest first).

    Frees, Meyers and Cummings (2011), "Summarizing insurance scores using a Gini index".
    """
    loss, score, weight = _vectors(observed, predicted, exposure)
    if (weight <= 0).any():
        raise ValueError("exposure: must be positive")
    if loss.sum() <= 0:
        raise ValueError("observed: total must be positive")
    order = np.lexsort((np.arange(len(score)), score / weight))
    exposure_share = np.concatenate([[0.0], np.cumsum(weight[order]) / weight.sum()])
    loss_share = np.concatenate([[0.0], np.cumsum(loss[order]) / loss.sum()])
    return pd.DataFrame({"exposure_share": exposure_share, "loss_share": loss_share})


def gini(observed: Any, predicted: Any, exposure: Any) -> float:
    """Gini index of the ordered Lorenz curve: twice the area between it and the diagonal."""
    curve = ordered_lorenz(observed, predicted, exposure)
    x = curve["exposure_share"].to_numpy()
    y = curve["loss_share"].to_numpy()
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return 1.0 - 2.0 * area


def lift_table(observed: Any, predicted: Any, exposure: Any, n_buckets: int = 10) -> pd.DataFrame:
    """Buckets of equal exposure by predicted rate: observed, expected, O/E, relative rates."""
    loss, score, weight = _vectors(observed, predicted, exposure)
    if (weight <= 0).any():
        raise ValueError("exposure: must be positive")
    order = np.lexsort((np.arange(len(score)), score / weight))
    cumulative = np.cumsum(weight[order]) / weight.sum()
    bucket = np.empty(len(score), dtype=np.int64)
    bucket[order] = np.minimum((cumulative * n_buckets - 1e-12).astype(np.int64), n_buckets - 1)
    scale = loss.sum() / score.sum()
    frame = pd.DataFrame({"bucket": bucket + 1, "exposure": weight, "observed": loss, "expected": score * scale})
    table = frame.groupby("bucket").sum()
    table["observed_over_expected"] = table["observed"] / table["expected"]
    mean_rate = loss.sum() / weight.sum()
    table["observed_rate_relative"] = table["observed"] / table["exposure"] / mean_rate
    table["expected_rate_relative"] = table["expected"] / table["exposure"] / mean_rate
    return table


def observed_over_expected(levels: Any, observed: Any, expected: Any, exposure: Any) -> pd.DataFrame:
    """O/E per level of one factor, expected rebalanced to the observed total."""
    loss, mean, weight = _vectors(observed, expected, exposure)
    frame = pd.DataFrame({"level": np.asarray(levels, dtype=object), "exposure": weight, "observed": loss,
                          "expected": mean * loss.sum() / mean.sum()})
    table = frame.groupby("level", sort=True).sum()
    table["observed_over_expected"] = table["observed"] / table["expected"]
    return table


@dataclass(frozen=True)
class DevianceComparison:
    deviance: float
    null_deviance: float

    @property
    def explained(self) -> float:
        """D^2 = 1 - D / D_null: the share of the null model's deviance explained."""
        return 1.0 - self.deviance / self.null_deviance


def poisson_deviance_vs_null(counts: Any, expected: Any, exposure: Any) -> DevianceComparison:
    """Model deviance against a single claim rate per unit of exposure."""
    y, mu, weight = _vectors(counts, expected, exposure)
    null = weight * y.sum() / weight.sum()
    return DevianceComparison(deviance=poisson_deviance(y, mu), null_deviance=poisson_deviance(y, null))


def protected_columns(frame: pd.DataFrame) -> list[str]:
    """Columns whose names denote a protected attribute (audited, never rated on)."""
    found = []
    for column in frame.columns:
        normalised = re.sub(r"[^a-z]", "", str(column).lower())
        if any(token in normalised for token in PROTECTED_ATTRIBUTE_TOKENS):
            found.append(str(column))
    return found


def fairness_audit(groups: Any, premium: Any, losses: Any, exposure: Any) -> pd.DataFrame:
    """Per group of a protected attribute: premium per exposure year and loss ratio."""
    paid, loss, weight = _vectors(premium, losses, exposure)
    frame = pd.DataFrame({"group": np.asarray(groups, dtype=object), "policies": 1, "exposure": weight,
                          "premium": paid, "losses": loss})
    table = frame.groupby("group", sort=True).sum()
    table["premium_per_exposure"] = table["premium"] / table["exposure"]
    table["loss_ratio"] = table["losses"] / table["premium"]
    table["loss_ratio_relative"] = table["loss_ratio"] / (loss.sum() / paid.sum())
    return table


@dataclass(frozen=True)
class ValidationReport:
    gini: float
    lift: pd.DataFrame
    observed_over_expected: dict[str, pd.DataFrame]
    frequency_deviance: DevianceComparison
    fairness: dict[str, pd.DataFrame]
    loss_ratio: float

    def to_dict(self) -> dict[str, Any]:
        def table(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{"level": str(k), **{str(c): float(v) for c, v in row.items()}} for k, row in frame.iterrows()]

        return {
            "gini": self.gini,
            "loss_ratio": self.loss_ratio,
            "frequency_deviance": {
                "deviance": self.frequency_deviance.deviance,
                "null_deviance": self.frequency_deviance.null_deviance,
                "explained": self.frequency_deviance.explained,
            },
            "lift": table(self.lift),
            "observed_over_expected": {name: table(frame) for name, frame in self.observed_over_expected.items()},
            "fairness": {name: table(frame) for name, frame in self.fairness.items()},
        }


def validate(data: pd.DataFrame, plan: Plan) -> ValidationReport:
    """Validate ``plan`` on held-out policy periods with ``claim_count`` and ``claim_amount``.

    The plan's new-business premium is the score; expected losses and claim counts are the
    premium rebalanced to the observed totals, and exposure is the period in years.
    """
    for column in ("claim_count", "claim_amount"):
        if column not in data.columns:
            raise ValueError(f"{column}: required validation column is missing")
    priced = reprice(data.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"], errors="ignore"), plan)
    scale = float(10**plan.currency.minor_units)
    premium = priced["premium_cents"].to_numpy(dtype=np.float64) / scale
    exposure = priced["period_years"].to_numpy()
    losses = data["claim_amount"].to_numpy(dtype=np.float64)
    counts = data["claim_count"].to_numpy(dtype=np.float64)
    expected_counts = premium * counts.sum() / premium.sum()
    by_factor: dict[str, pd.DataFrame] = {}
    for factor in plan.a_priori:
        by_factor[factor.name] = observed_over_expected(data[factor.name].astype(str).to_numpy(), losses, premium, exposure)
    for table in plan.behaviour:
        levels = np.asarray(bin_values(priced[f"{table.name}_value"].to_numpy(), table.edges).astype(str))
        by_factor[table.name] = observed_over_expected(levels, losses, premium, exposure)
    fairness = {
        column: fairness_audit(data[column].astype(str).to_numpy(), premium, losses, exposure)
        for column in protected_columns(data)
    }
    return ValidationReport(
        gini=gini(losses, premium, exposure),
        lift=lift_table(losses, premium, exposure),
        observed_over_expected=by_factor,
        frequency_deviance=poisson_deviance_vs_null(counts, expected_counts, exposure),
        fairness=fairness,
        loss_ratio=float(losses.sum() / premium.sum()),
    )
