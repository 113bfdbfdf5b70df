"""Claims GLMs on glum (frequency, severity, pure premium), binning, and plan calibration.

Estimators follow the scikit-learn convention: hyperparameters in ``__init__``,
``fit(X, y, *, exposure=...)``, ``predict``, fitted attributes end in an underscore.
Text or categorical columns of X are rating factors (one coefficient per non-base level;
the base level is the one with the most exposure, so its relativity is 1); numeric
columns enter linearly on the log scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from glum import GeneralizedLinearRegressor, TweedieDistribution

from pricing.credibility import BuhlmannStraubFit, buhlmann_straub
from pricing.plan import BehaviourTable, FactorTable, PayPerKm, Plan, bin_index, plan_from_dict
from pricing.rating import (
    DAYS_PER_YEAR,
    RatingInputs,
    behaviour_values,
    new_business_amounts,
    read_inputs,
    usage_factor,
    with_plan,
)

DispersionRule = Literal["fixed", "pearson"]
CalibrationMethod = Literal["frequency_severity", "tweedie"]
INTERCEPT = "intercept"
MISSING_BIN = "missing"


def _as_vector(values: Any, name: str, n_rows: int) -> npt.NDArray[np.float64]:
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (n_rows,):
        raise ValueError(f"{name}: expected {n_rows} values, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name}: every value must be finite")
    return vector


class _ClaimsGLM:
    """Shared machinery; subclasses fix the family and how y, exposure and weights map."""

    family: str

    def __init__(self, *, alpha: float = 0.0, robust: bool = False, gradient_tol: float | None = None,
                 max_iter: int = 100) -> None:
        self.alpha = alpha
        self.robust = robust
        self.gradient_tol = gradient_tol
        self.max_iter = max_iter

    def _family(self) -> Any:
        return self.family

    def _dispersion(self) -> float | None:
        return None

    def _design(self, X: pd.DataFrame, base_weight: npt.NDArray[np.float64] | None) -> pd.DataFrame:
        """Numeric columns as float, the others as categoricals with the base level first.

        With ``base_weight`` (fitting) each factor's base is its level of largest weight;
        without (predicting) the levels seen in the fit are reused.
        """
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X: must be a pandas DataFrame, got {type(X).__name__}")
        columns: dict[str, Any] = {}
        if base_weight is not None:
            self.base_levels_: dict[str, str] = {}
            self.levels_: dict[str, list[str]] = {}
        for name in X.columns:
            column = X[name]
            if pd.api.types.is_numeric_dtype(column) and not isinstance(column.dtype, pd.CategoricalDtype):
                values = column.to_numpy(dtype=np.float64)
                if not np.isfinite(values).all():
                    raise ValueError(f"{name}: numeric feature has missing or infinite values")
                columns[name] = values
                continue
            categorical = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
            codes = categorical.cat.codes.to_numpy()
            if (codes < 0).any():
                raise ValueError(f"{name}: categorical feature has missing values")
            labels = [str(c) for c in categorical.cat.categories]
            if len(set(labels)) != len(labels):
                raise ValueError(f"{name}: categories are not distinct as text: {labels[:5]}")
            if base_weight is not None:
                totals = np.bincount(codes, weights=base_weight, minlength=len(labels))
                seen = np.bincount(codes, minlength=len(labels)) > 0
                base = labels[int(np.argmax(totals))]
                self.base_levels_[name] = base
                self.levels_[name] = [base, *sorted(label for label, used in zip(labels, seen, strict=True)
                                                    if used and label != base)]
            levels = self.levels_[name]
            if labels == levels:
                same_text = all(isinstance(c, str) for c in categorical.cat.categories)
                columns[name] = categorical if same_text else categorical.cat.rename_categories(levels)
                continue
            position_of_label = pd.Index(levels).get_indexer(pd.Index(labels))
            recoded = position_of_label[codes]
            if (recoded < 0).any():
                unknown = sorted({labels[c] for c in np.unique(codes[recoded < 0])})
                raise ValueError(f"{name}: level(s) {unknown[:5]} not seen in fit")
            columns[name] = pd.Categorical.from_codes(recoded, categories=pd.Index(levels))
        return pd.DataFrame(columns, index=X.index)

    def _fit(self, X: pd.DataFrame, y: npt.NDArray[np.float64], weight: npt.NDArray[np.float64],
             offset: npt.NDArray[np.float64] | None, base_weight: npt.NDArray[np.float64]) -> None:
        design = self._design(X, base_weight)
        self.feature_names_in_ = list(X.columns)
        model = GeneralizedLinearRegressor(
            family=self._family(), alpha=self.alpha, drop_first=True, gradient_tol=self.gradient_tol,
            max_iter=self.max_iter, robust=self.robust,
        )
        model.fit(design, y, sample_weight=weight, offset=offset)
        names = [INTERCEPT, *model.feature_names_]
        self.model_ = model
        self.coef_ = pd.Series(np.concatenate([[model.intercept_], model.coef_]), index=names, name="coef")
        self.intercept_ = float(model.intercept_)
        self.n_rows_ = len(y)
        self._fit_data = (design, y, weight, offset)
        self.__dict__.pop("covariance_", None)

    @functools.cached_property
    def covariance_(self) -> pd.DataFrame:
        """Covariance of the coefficients (intercept first), computed on first access.

        Non-robust: the inverse Fisher information (dispersion 1 for a plain Poisson, the
        Pearson estimate otherwise); robust: glum's HC-1 sandwich.
        """
        design, y, weight, offset = self._fit_data
        covariance = self.model_.covariance_matrix(design, y, sample_weight=weight, offset=offset,
                                                   dispersion=self._dispersion(), robust=self.robust)
        names = list(self.coef_.index)
        return pd.DataFrame(covariance, index=names, columns=names)

    @property
    def std_errors_(self) -> pd.Series:
        """Standard errors of the coefficients (intercept first)."""
        return pd.Series(np.sqrt(np.diag(self.covariance_.to_numpy())), index=self.covariance_.index, name="std_error")

    def _linear_predictor(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        design = self._design(X, None)
        return np.asarray(self.model_.linear_predictor(design), dtype=np.float64)

    def relativities(self, factor: str) -> pd.Series:
        """exp(coefficient) per level of a categorical factor, the base level at 1."""
        if factor not in self.levels_:
            raise KeyError(f"{factor}: not a categorical feature of this model")
        values = {
            level: 1.0 if level == self.base_levels_[factor] else math.exp(self.coef_[f"{factor}[{level}]"])
            for level in self.levels_[factor]
        }
        return pd.Series(values, name=factor)


class FrequencyGLM(_ClaimsGLM):
    """Poisson claim counts with a log-exposure offset: E[N] = exposure x exp(X b).

    ``dispersion='fixed'`` uses the Poisson dispersion of 1 for standard errors;
    ``'pearson'`` estimates it (quasi-Poisson) for over-dispersed data.
    """

    family = "poisson"

    def __init__(self, *, alpha: float = 0.0, robust: bool = False, gradient_tol: float | None = None,
                 max_iter: int = 100, dispersion: DispersionRule = "fixed") -> None:
        super().__init__(alpha=alpha, robust=robust, gradient_tol=gradient_tol, max_iter=max_iter)
        self.dispersion = dispersion

    def _dispersion(self) -> float | None:
        return 1.0 if self.dispersion == "fixed" else None

    def fit(self, X: pd.DataFrame, y: Any, *, exposure: Any, log_offset: Any = None) -> FrequencyGLM:
        """Fit counts ``y`` over ``exposure`` (e.g. years x usage factor); ``log_offset`` adds to log(exposure)."""
        counts = _as_vector(y, "y", len(X))
        exposure_vector = _as_vector(exposure, "exposure", len(X))
        if (counts < 0).any():
            raise ValueError("y: claim counts must be non-negative")
        if (exposure_vector <= 0).any():
            raise ValueError("exposure: must be positive")
        offset = np.log(exposure_vector)
        if log_offset is not None:
            offset = offset + _as_vector(log_offset, "log_offset", len(X))
        self._fit(X, counts, np.ones(len(X)), offset, base_weight=exposure_vector)
        return self

    def predict(self, X: pd.DataFrame, *, exposure: Any) -> npt.NDArray[np.float64]:
        """Expected claim counts."""
        return _as_vector(exposure, "exposure", len(X)) * np.exp(self._linear_predictor(X))


class SeverityGLM(_ClaimsGLM):
    """Gamma average claim amount weighted by claim count: E[Y] = exp(X b)."""

    family = "gamma"

    def fit(self, X: pd.DataFrame, y: Any, *, claim_count: Any) -> SeverityGLM:
        """Fit average amounts ``y`` of rows with ``claim_count`` > 0 (the others are ignored)."""
        counts = _as_vector(claim_count, "claim_count", len(X))
        average = np.asarray(y, dtype=np.float64)
        if average.shape != (len(X),):
            raise ValueError(f"y: expected {len(X)} values, got shape {average.shape}")
        has_claims = counts > 0
        if not has_claims.any():
            raise ValueError("claim_count: no row has a claim")
        chosen = average[has_claims]
        if not (np.isfinite(chosen).all() and (chosen > 0).all()):
            raise ValueError("y: average claim amounts must be positive where claim_count > 0")
        self._fit(X.loc[has_claims], chosen, counts[has_claims], None, base_weight=counts[has_claims])
        return self

    def predict(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Expected average claim amount."""
        return np.exp(self._linear_predictor(X))


class PurePremiumGLM(_ClaimsGLM):
    """Tweedie (1 < power < 2) loss per unit of exposure, weighted by exposure."""

    def __init__(self, *, power: float = 1.5, alpha: float = 0.0, robust: bool = False,
                 gradient_tol: float | None = None, max_iter: int = 100) -> None:
        super().__init__(alpha=alpha, robust=robust, gradient_tol=gradient_tol, max_iter=max_iter)
        if not 1.0 < power < 2.0:
            raise ValueError(f"power: must lie strictly between 1 and 2, got {power}")
        self.power = power

    def _family(self) -> Any:
        return TweedieDistribution(self.power)

    def fit(self, X: pd.DataFrame, y: Any, *, exposure: Any) -> PurePremiumGLM:
        """Fit total losses ``y`` over ``exposure``."""
        losses = _as_vector(y, "y", len(X))
        exposure_vector = _as_vector(exposure, "exposure", len(X))
        if (losses < 0).any():
            raise ValueError("y: losses must be non-negative")
        if (exposure_vector <= 0).any():
            raise ValueError("exposure: must be positive")
        self._fit(X, losses / exposure_vector, exposure_vector, None, base_weight=exposure_vector)
        return self

    def predict(self, X: pd.DataFrame, *, exposure: Any) -> npt.NDArray[np.float64]:
        """Expected total losses."""
        return _as_vector(exposure, "exposure", len(X)) * np.exp(self._linear_predictor(X))


def poisson_deviance(y: Any, mu: Any, weight: Any = None) -> float:
    """Total Poisson deviance 2 sum w (y log(y/mu) - (y - mu)); zero at mu = y."""
    observed = np.asarray(y, dtype=np.float64)
    expected = np.asarray(mu, dtype=np.float64)
    weights = np.ones_like(observed) if weight is None else np.asarray(weight, dtype=np.float64)
    log_term = np.where(observed > 0, observed * np.log(np.where(observed > 0, observed, 1.0) / expected), 0.0)
    return float(2.0 * np.sum(weights * (log_term - (observed - expected))))


def gamma_deviance(y: Any, mu: Any, weight: Any = None) -> float:
    """Total Gamma deviance 2 sum w (-log(y/mu) + (y - mu)/mu); zero at mu = y."""
    observed = np.asarray(y, dtype=np.float64)
    expected = np.asarray(mu, dtype=np.float64)
    weights = np.ones_like(observed) if weight is None else np.asarray(weight, dtype=np.float64)
    return float(2.0 * np.sum(weights * (-np.log(observed / expected) + (observed - expected) / expected)))


def weighted_quantile_edges(values: Any, weight: Any, n_bins: int) -> tuple[float, ...]:
    """Inner bin edges at weighted quantiles 1/n .. (n-1)/n, duplicates dropped."""
    if n_bins < 2:
        raise ValueError(f"n_bins: must be at least 2, got {n_bins}")
    x = np.asarray(values, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    keep = np.isfinite(x) & (w > 0)
    if not keep.any():
        raise ValueError("values: no finite value with positive weight to bin")
    order = np.argsort(x[keep], kind="stable")
    sorted_x = x[keep][order]
    cumulative = np.cumsum(w[keep][order])
    targets = cumulative[-1] * np.arange(1, n_bins) / n_bins
    edges = sorted_x[np.minimum(np.searchsorted(cumulative, targets, side="right"), sorted_x.size - 1)]
    unique = np.unique(edges[edges > sorted_x[0]])
    if unique.size == 0:
        raise ValueError("values: too few distinct values to bin")
    return tuple(float(e) for e in unique)


def bin_labels(edges: tuple[float, ...]) -> list[str]:
    """Labels of the len(edges) + 1 bins: 'b0' .. 'bn' (b0 below the first edge)."""
    return [f"b{i}" for i in range(len(edges) + 1)]


def bin_values(values: Any, edges: tuple[float, ...]) -> pd.Categorical:
    """Bin i holds [edges[i-1], edges[i]); NaN goes to the 'missing' level."""
    x = np.asarray(values, dtype=np.float64)
    index = bin_index(x, edges)
    index[np.isnan(x)] = len(edges) + 1
    return cast(pd.Categorical, pd.Categorical.from_codes(index, categories=pd.Index([*bin_labels(edges), MISSING_BIN])))


@dataclass(frozen=True)
class Calibration:
    """A calibrated plan with the fitted models behind it."""

    plan: Plan
    frequency: FrequencyGLM | None
    severity: SeverityGLM | None
    pure_premium: PurePremiumGLM | None
    credibility: BuhlmannStraubFit | None
    n_rows_used: int
    n_rows_without_telematics: int


CALIBRATION_COLUMNS = ("policy_id", "claim_count", "claim_amount")


def _money_text(amount: float, decimals: int) -> str:
    return str(Decimal(repr(amount)).quantize(Decimal(1).scaleb(-decimals)))


def _behaviour_relativities(models: list[_ClaimsGLM], table: BehaviourTable, edges: tuple[float, ...]) -> tuple[float, ...]:
    labels = bin_labels(edges)
    product = np.ones(len(labels))
    for model in models:
        if table.name not in model.levels_:
            continue
        fitted = model.relativities(table.name)
        # The most exposed bin is the base (1.0); a bin without data takes its neighbour's value.
        product *= np.asarray([fitted.get(label, np.nan) for label in labels])
    filled = pd.Series(product).ffill().bfill().to_numpy()
    return tuple(float(v) for v in filled)


@dataclass(frozen=True)
class CalibrationData:
    """The GLM design of a calibration: rows with telematics data, behaviours binned."""

    X: pd.DataFrame
    claim_count: npt.NDArray[np.float64]
    claim_amount: npt.NDArray[np.float64]
    usage_exposure_years: npt.NDArray[np.float64]
    has_telematics: npt.NDArray[np.bool_]
    edges: dict[str, tuple[float, ...]]
    inputs: RatingInputs
    values: dict[str, npt.NDArray[np.float64]]


def _base_first(codes: npt.NDArray[np.intp], labels: list[str], exposure: npt.NDArray[np.float64]) -> pd.Categorical:
    """Categorical of the used levels: the one with most exposure first (the base), the rest
    sorted by text, which is the order the estimators' own design keeps."""
    totals = np.bincount(codes, weights=exposure, minlength=len(labels))
    used = np.bincount(codes, minlength=len(labels)) > 0
    base = int(np.argmax(totals))
    order = [base, *sorted((i for i in range(len(labels)) if used[i] and i != base), key=lambda i: labels[i])]
    position = np.full(len(labels), -1, dtype=np.intp)
    position[order] = np.arange(len(order))
    categories = pd.Index([labels[i] for i in order])
    return cast(pd.Categorical, pd.Categorical.from_codes(position[codes], categories=categories, validate=False))


def calibration_data(data: pd.DataFrame, template: Plan, *, rebin: int | None = None) -> CalibrationData:
    """Build the design: a priori factors and binned behaviours as text, exposure = years x usage."""
    for column in CALIBRATION_COLUMNS:
        if column not in data.columns:
            raise ValueError(f"{column}: required calibration column is missing")
    # Calibration data may hold several periods of one policy: rate each row on its own.
    inputs = read_inputs(data.assign(policy_id=np.arange(len(data))), template)
    values = behaviour_values(inputs, template)
    has_data = np.logical_and.reduce([~np.isnan(v) for v in values.values()] + [np.ones(len(inputs), dtype=bool)])
    if not has_data.any():
        raise ValueError("scored_dist_km: no row has usable telematics data to calibrate on")
    period_years = inputs.period_days / DAYS_PER_YEAR
    usage, _ = usage_factor(inputs, template, float(template.base_rate_per_year) * period_years)
    usage_exposure = (period_years * usage)[has_data]
    counts = _as_vector(data["claim_count"], "claim_count", len(data))[has_data]
    amounts = _as_vector(data["claim_amount"], "claim_amount", len(data))[has_data]
    if (counts < 0).any() or (amounts < 0).any() or ((amounts > 0) & (counts == 0)).any():
        raise ValueError("claim_count, claim_amount: must be non-negative, with an amount only where there is a claim")
    rows = np.flatnonzero(has_data)
    features: dict[str, pd.Categorical] = {}
    for factor in template.a_priori:
        levels = pd.Categorical(data[factor.name])
        codes = levels.codes[rows]
        if (codes < 0).any():
            raise ValueError(f"{factor.name}: missing values in rows with telematics data")
        features[factor.name] = _base_first(codes.astype(np.intp), [str(c) for c in levels.categories], usage_exposure)
    edges_of: dict[str, tuple[float, ...]] = {}
    for table in template.behaviour:
        observed = values[table.name][has_data]
        edges = weighted_quantile_edges(observed, usage_exposure, rebin) if rebin else table.edges
        edges_of[table.name] = edges
        features[table.name] = _base_first(bin_index(observed, edges), bin_labels(edges), usage_exposure)
    return CalibrationData(
        X=pd.DataFrame(features), claim_count=counts, claim_amount=amounts, usage_exposure_years=usage_exposure,
        has_telematics=has_data, edges=edges_of, inputs=inputs, values=values,
    )


def calibrate(data: pd.DataFrame, template: Plan, *, method: CalibrationMethod = "frequency_severity",
              target_loss_ratio: float = 0.7, rebin: int | None = None, estimate_credibility: bool = True,
              description: str | None = None, tweedie_power: float = 1.5) -> Calibration:
    """Fit the plan's relativities on claims and return a new plan version.

    ``data`` holds policy periods in the rating input layout plus ``claim_count`` and
    ``claim_amount`` (total, in major units). Rows without usable telematics data are left
    out of the fit. The template's usage model is kept and enters as an offset, so the
    fitted relativities sit on top of it; base rate and per-km rate are then scaled
    together so that the new plan's premiums on ``data`` equal losses / target_loss_ratio.
    ``rebin`` = n re-derives each behaviour's edges at n exposure-weighted quantiles.
    With several periods per policy, k of the credibility weight is re-estimated by
    Buhlmann-Straub on each period's log indicated telematics factor, weighted by km.
    """
    if not 0.0 < target_loss_ratio <= 1.5:
        raise ValueError(f"target_loss_ratio: must be in (0, 1.5], got {target_loss_ratio}")
    prepared = calibration_data(data, template, rebin=rebin)
    X, counts, amounts = prepared.X, prepared.claim_count, prepared.claim_amount
    usage_exposure, has_data, edges_of = prepared.usage_exposure_years, prepared.has_telematics, prepared.edges
    inputs, values = prepared.inputs, prepared.values

    models: list[_ClaimsGLM] = []
    frequency = severity = pure_premium = None
    if method == "frequency_severity":
        frequency = FrequencyGLM().fit(X, counts, exposure=usage_exposure)
        severity = SeverityGLM().fit(X, np.divide(amounts, counts, out=np.zeros_like(amounts), where=counts > 0),
                                     claim_count=counts)
        models = [frequency, severity]
    elif method == "tweedie":
        pure_premium = PurePremiumGLM(power=tweedie_power).fit(X, amounts, exposure=usage_exposure)
        models = [pure_premium]
    else:
        raise ValueError(f"method: must be 'frequency_severity' or 'tweedie', got {method!r}")

    factor_tables = []
    for factor in template.a_priori:
        fitted = np.ones(len(factor.relativities))
        for model in models:
            per_level = model.relativities(factor.name)
            fitted *= np.asarray([per_level.get(level, np.nan) for level, _ in factor.relativities])
        if np.isnan(fitted).any():
            missing = [level for (level, _), v in zip(factor.relativities, fitted, strict=True) if np.isnan(v)]
            raise ValueError(f"{factor.name}: level(s) {missing} have no data to calibrate on")
        factor_tables.append(FactorTable(
            name=factor.name,
            relativities=tuple((level, round(float(v), 6)) for (level, _), v in zip(factor.relativities, fitted, strict=True)),
        ))
    behaviour_tables = tuple(
        dataclasses.replace(table, edges=edges_of[table.name],
                            relativities=tuple(round(v, 6) for v in _behaviour_relativities(models, table, edges_of[table.name])))
        for table in template.behaviour
    )

    credibility_fit = None
    credibility = template.credibility
    # Only a panel (several periods of a policy with telematics data) can separate the
    # within-policy from the between-policy variance.
    policy_ids = data["policy_id"].to_numpy()[has_data] if estimate_credibility and not data["policy_id"].is_unique else None
    if policy_ids is not None and pd.Series(policy_ids).duplicated().any():
        log_indicated = np.zeros(int(has_data.sum()))
        for table in behaviour_tables:
            log_indicated += np.log(table.relativity_of(values[table.name][has_data]))
        panel = pd.DataFrame({
            "policy_id": policy_ids,
            "log_indicated": log_indicated,
            "scored_dist_km": inputs.scored_dist_km[has_data],
        })
        credibility_fit = buhlmann_straub(panel, risk="policy_id", value="log_indicated", weight="scored_dist_km")
        if math.isfinite(credibility_fit.k):
            credibility = dataclasses.replace(credibility, k_km=round(float(credibility_fit.k), 3))

    provisional = template.new_version(
        description=description or f"Calibrated ({method}) on {int(has_data.sum())} policy periods, target loss ratio {target_loss_ratio}",
        a_priori=tuple(factor_tables),
        behaviour=behaviour_tables,
        credibility=credibility,
    )
    all_losses = float(_as_vector(data["claim_amount"], "claim_amount", len(data)).sum())
    calibrated = _balance(provisional, prepared, data, all_losses / target_loss_ratio)
    return Calibration(
        plan=calibrated,
        frequency=frequency,
        severity=severity,
        pure_premium=pure_premium,
        credibility=credibility_fit,
        n_rows_used=int(has_data.sum()),
        n_rows_without_telematics=int((~has_data).sum()),
    )


def _balance(plan: Plan, prepared: CalibrationData, data: pd.DataFrame, target_premium: float) -> Plan:
    """Scale the base rate (and per-km rate, keeping the usage curve) to hit the target
    with new-business premiums (no renewal caps) on the calibration data."""
    inputs = with_plan(prepared.inputs, data, plan)
    total = float(new_business_amounts(inputs, plan, prepared.values).sum())
    if total <= 0:
        raise ValueError("data: the plan prices the calibration data at zero")
    factor = target_premium / total
    decimals = plan.currency.minor_units
    base_rate = Decimal(_money_text(float(plan.base_rate_per_year) * factor, decimals))
    usage = plan.usage
    if isinstance(usage, PayPerKm):
        usage = dataclasses.replace(usage, per_km_rate=Decimal(_money_text(float(usage.per_km_rate) * factor, decimals + 4)))
    balanced = dataclasses.replace(
        plan,
        base_rate_per_year=base_rate,
        usage=usage,
        minimum_premium_per_year=min(plan.minimum_premium_per_year, base_rate),
    )
    return plan_from_dict(balanced.to_dict())
