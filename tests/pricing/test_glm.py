"""Claims GLMs: deviance and offset invariants, truth recovery, calibration to a new plan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from glum import GeneralizedLinearRegressor
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pricing.glm import (
    FrequencyGLM,
    PurePremiumGLM,
    SeverityGLM,
    bin_values,
    calibrate,
    gamma_deviance,
    poisson_deviance,
    weighted_quantile_edges,
)
from pricing.plan import Plan
from pricing.rating import reprice
from pricing.synthetic import synthetic_portfolio

POSITIVE = st.lists(st.floats(0.01, 1e3), min_size=1, max_size=30)


@settings(max_examples=100, deadline=None)
@given(values=POSITIVE)
def test_deviance_is_zero_at_mu_equal_y(values: list[float]) -> None:
    y = np.asarray(values)
    assert poisson_deviance(np.round(y), np.maximum(np.round(y), 1e-300)) == pytest.approx(0.0, abs=1e-9)
    assert gamma_deviance(y, y) == pytest.approx(0.0, abs=1e-9)


def test_poisson_deviance_matches_log_likelihood_ratio() -> None:
    rng = np.random.default_rng(5)
    mu = rng.uniform(0.05, 3.0, 500)
    y = rng.poisson(mu).astype(float)
    saturated = stats.poisson.logpmf(y, np.where(y > 0, y, 1.0)) * (y > 0) + (y == 0) * 0.0
    oracle = 2.0 * np.sum(saturated - stats.poisson.logpmf(y, mu))
    assert poisson_deviance(y, mu) == pytest.approx(oracle, rel=1e-10)


def _frequency_data(n_rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, float]]:
    """Policy-years with known log-linear claim frequency (a small generator of our own)."""
    rng = np.random.default_rng(seed)
    truth = {
        "intercept": np.log(0.08),
        "region[rural]": np.log(0.85),
        "region[urban]": np.log(1.25),
        "vehicle_group[C]": np.log(1.2),
        "vehicle_group[E]": np.log(1.5),
        "night_share": 1.1,
        "brakes_per_100km": 0.12,
    }
    region = rng.choice(["suburban", "rural", "urban"], n_rows, p=[0.5, 0.3, 0.2])
    vehicle = rng.choice(["B", "C", "E"], n_rows, p=[0.55, 0.3, 0.15])
    night_share = rng.beta(1.5, 12.0, n_rows)
    brakes = rng.gamma(2.0, 0.8, n_rows)
    exposure_years = rng.uniform(0.5, 1.0, n_rows)
    X = pd.DataFrame({"region": region, "vehicle_group": vehicle, "night_share": night_share,
                      "brakes_per_100km": brakes})
    log_rate = (truth["intercept"] + truth["night_share"] * night_share + truth["brakes_per_100km"] * brakes
                + np.select([region == "rural", region == "urban"], [truth["region[rural]"], truth["region[urban]"]], 0.0)
                + np.select([vehicle == "C", vehicle == "E"], [truth["vehicle_group[C]"], truth["vehicle_group[E]"]], 0.0))
    counts = rng.poisson(exposure_years * np.exp(log_rate)).astype(float)
    return X, counts, exposure_years, truth


def test_frequency_truth_recovery_within_two_standard_errors() -> None:
    X, counts, exposure_years, truth = _frequency_data(70_000, seed=424242)
    assert exposure_years.sum() >= 50_000
    model = FrequencyGLM().fit(X, counts, exposure=exposure_years)
    assert model.base_levels_ == {"region": "suburban", "vehicle_group": "B"}
    for name, value in truth.items():
        z = (model.coef_[name] - value) / model.std_errors_[name]
        assert abs(z) < 2.0, f"{name}: fitted {model.coef_[name]:.4f} vs true {value:.4f}, z = {z:.2f}"
    assert model.relativities("region")["urban"] == pytest.approx(1.25, rel=0.1)


def test_exposure_offset_equals_rates_with_exposure_weights() -> None:
    X, counts, exposure_years, _ = _frequency_data(5_000, seed=7)
    with_offset = FrequencyGLM(gradient_tol=1e-10).fit(X, counts, exposure=exposure_years)
    rates = GeneralizedLinearRegressor(family="poisson", alpha=0.0, drop_first=True, gradient_tol=1e-10).fit(
        with_offset._design(X, None), counts / exposure_years, sample_weight=exposure_years)
    assert with_offset.intercept_ == pytest.approx(rates.intercept_, abs=1e-6)
    np.testing.assert_allclose(with_offset.coef_.to_numpy()[1:], rates.coef_, atol=1e-6)
    np.testing.assert_allclose(with_offset.predict(X, exposure=exposure_years),
                               exposure_years * rates.predict(with_offset._design(X, None)), rtol=1e-6)


def test_severity_weight_equals_repeated_rows() -> None:
    rng = np.random.default_rng(11)
    X = pd.DataFrame({"region": rng.choice(["a", "b"], 400), "x": rng.normal(size=400)})
    claims = rng.integers(1, 4, 400).astype(float)
    average = rng.gamma(3.0, 500.0, 400) * np.where(X["region"] == "b", 1.3, 1.0)
    weighted = SeverityGLM(gradient_tol=1e-10).fit(X, average, claim_count=claims)
    repeat = np.repeat(np.arange(400), claims.astype(int))
    repeated = SeverityGLM(gradient_tol=1e-10).fit(X.iloc[repeat].reset_index(drop=True), average[repeat],
                                 claim_count=np.ones(len(repeat)))
    np.testing.assert_allclose(weighted.coef_.to_numpy(), repeated.coef_.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(weighted.std_errors_.to_numpy(), repeated.std_errors_.to_numpy(), rtol=1e-6)


def test_pure_premium_recovers_relativity() -> None:
    X, counts, exposure_years, truth = _frequency_data(40_000, seed=3)
    losses = np.array([np.random.default_rng(int(i)).gamma(2.0, 1000.0, int(c)).sum() for i, c in enumerate(counts)])
    model = PurePremiumGLM(power=1.6).fit(X, losses, exposure=exposure_years)
    assert model.coef_["region[urban]"] == pytest.approx(truth["region[urban]"], abs=3 * model.std_errors_["region[urban]"])
    assert (model.predict(X, exposure=exposure_years) > 0).all()


def test_binning() -> None:
    values = np.arange(100, dtype=float)
    edges = weighted_quantile_edges(values, np.ones(100), 4)
    assert edges == (25.0, 50.0, 75.0)
    binned = bin_values([0.0, 25.0, 99.0, np.nan], edges)
    assert list(binned) == ["b0", "b1", "b3", "missing"]


def _claims_for(portfolio: pd.DataFrame, plan: Plan, seed: int) -> pd.DataFrame:
    """Claims drawn from the plan's own relativities (full credibility): the truth to recover."""
    priced = reprice(portfolio.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"]), plan)
    indicated = np.ones(len(portfolio))
    for table in plan.behaviour:
        indicated *= priced[f"{table.name}_relativity"].to_numpy()
    mean_count = 0.9 * priced["usage_exposure_years"].to_numpy() * priced["a_priori_factor"].to_numpy() * indicated
    rng = np.random.default_rng(seed)
    counts = rng.poisson(mean_count)
    amounts = np.array([rng.gamma(2.0, 400.0, c).sum() for c in counts])
    return portfolio.assign(claim_count=counts.astype(float), claim_amount=amounts)


@pytest.mark.parametrize("method", ["frequency_severity", "tweedie"])
def test_calibrate_produces_a_new_balanced_plan_version(plan: Plan, method: str) -> None:
    portfolio = synthetic_portfolio(30_000, plan, seed=99)
    data = _claims_for(portfolio, plan, seed=100)
    result = calibrate(data, plan, method=method, target_loss_ratio=0.7)  # type: ignore[arg-type]
    new = result.plan
    assert new.version == plan.version + 1 and new.parent_sha256 == plan.sha256
    assert result.n_rows_used + result.n_rows_without_telematics == len(data)
    premiums = reprice(data.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"]), new)
    ratio = data["claim_amount"].sum() / (premiums["premium_cents"].sum() / 100)
    assert ratio == pytest.approx(0.7, rel=0.02)
    fitted = dict(next(t for t in new.a_priori if t.name == "age_band").relativities)
    true = dict(next(t for t in plan.a_priori if t.name == "age_band").relativities)
    assert fitted["18-24"] / fitted["35-54"] == pytest.approx(true["18-24"] / true["35-54"], rel=0.25)


def test_calibrate_estimates_credibility_from_a_panel(plan: Plan) -> None:
    """Six monthly periods per policy: persistent driving styles plus period-to-period noise."""
    n_policies, n_periods = 3_000, 6
    base = synthetic_portfolio(n_policies, plan, seed=12)
    rng = np.random.default_rng(13)
    style = {t.name: rng.gamma(2.0, t.edges[len(t.edges) // 2] / 2.0, n_policies) for t in plan.behaviour}
    periods = []
    for _ in range(n_periods):
        frame = base.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"])
        scored = rng.uniform(300.0, 1500.0, n_policies)
        frame["dist_km"] = scored
        frame["scored_dist_km"] = scored
        for table in plan.behaviour:
            level = style[table.name] * rng.lognormal(0.0, 0.4, n_policies)
            per_km = np.minimum(level, 1.0) if table.unit == "share_of_km" else level / 100.0
            frame[table.numerator] = per_km * scored
        periods.append(frame)
    panel = pd.concat(periods, ignore_index=True)
    counts = rng.poisson(0.05, len(panel)).astype(float)
    data = panel.assign(claim_count=counts, claim_amount=counts * 900.0)
    result = calibrate(data, plan, method="tweedie")
    assert result.credibility is not None
    assert len(result.credibility.risks) == n_policies
    assert 0 < result.credibility.k < np.inf
    assert result.plan.credibility.k_km == pytest.approx(result.credibility.k, rel=1e-6)
    z = result.credibility.risks["z"]
    assert ((z > 0) & (z < 1)).all()
