"""Buhlmann-Straub: a hand-computed example and Hachemeister's published figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pricing.credibility import buhlmann_straub, credibility_weight


def test_hand_computed_example() -> None:
    # Risk A: 1 and 3, risk B: 5 and 7, unit weights. Means 2 and 6, overall 4.
    # EPV = (1 + 1 + 1 + 1) / (1 + 1) = 2; VHM = (2*4 + 2*4 - 1*2) / (4 - 8/4) = 7;
    # k = 2/7, Z = 2 / (2 + 2/7) = 0.875; estimates 0.875*2 + 0.125*4 = 2.25 and 5.75.
    data = pd.DataFrame({"risk": ["A", "A", "B", "B"], "x": [1.0, 3.0, 5.0, 7.0], "w": [1.0, 1.0, 1.0, 1.0]})
    fit = buhlmann_straub(data, risk="risk", value="x", weight="w")
    assert fit.within_variance == pytest.approx(2.0)
    assert fit.between_variance == pytest.approx(7.0)
    assert fit.k == pytest.approx(2 / 7)
    assert fit.risks["z"].tolist() == pytest.approx([0.875, 0.875])
    assert fit.collective_mean == pytest.approx(4.0)
    assert fit.risks["credibility_estimate"].tolist() == pytest.approx([2.25, 5.75])


# Hachemeister (1975): average bodily-injury claim amounts (ratio) and claim counts
# (weight) in five U.S. states over 12 quarters, July 1970 to June 1973.
HACHEMEISTER_RATIO = [
    [1738, 1642, 1794, 2051, 2079, 2234, 2032, 2035, 2115, 2262, 2267, 2517],
    [1364, 1408, 1597, 1444, 1342, 1675, 1470, 1448, 1464, 1831, 1612, 1471],
    [1759, 1685, 1479, 1763, 1674, 2103, 1502, 1622, 1828, 2155, 2233, 2059],
    [1223, 1146, 1010, 1257, 1426, 1532, 1953, 1123, 1343, 1243, 1762, 1306],
    [1456, 1499, 1609, 1741, 1482, 1572, 1606, 1735, 1607, 1573, 1613, 1690],
]
HACHEMEISTER_WEIGHT = [
    [7861, 9251, 8706, 8575, 7917, 8263, 9456, 8003, 7365, 7832, 7849, 9077],
    [1622, 1742, 1523, 1515, 1622, 1602, 1964, 1515, 1527, 1748, 1654, 1861],
    [1147, 1357, 1329, 1204, 998, 1077, 1277, 1218, 896, 1003, 1108, 1121],
    [407, 396, 348, 341, 315, 328, 352, 331, 287, 384, 321, 342],
    [2902, 3172, 3046, 3068, 2693, 2910, 3275, 2697, 2663, 3017, 3242, 3425],
]


def test_hachemeister_published_figures() -> None:
    """Buhlmann-Straub on Hachemeister's data, as published (rounded) in V. Goulet's
    credibility course notes, Table 4.6, and the credibility vignette of the R package
    actuar (Dutang, Goulet, Milhaud and Pigeon): collective premium 1,684, within
    variance 1.39e8 (139,120,026), between variance 89,639, Z = 0.9847, 0.9276, 0.8985,
    0.7279, 0.9588, premiums 2,055, 1,524, 1,793, 1,443, 1,603; state 4's own weighted
    mean is 1,353."""
    data = pd.DataFrame({
        "state": np.repeat(np.arange(1, 6), 12),
        "ratio": np.ravel(HACHEMEISTER_RATIO).astype(float),
        "claims": np.ravel(HACHEMEISTER_WEIGHT).astype(float),
    })
    fit = buhlmann_straub(data, risk="state", value="ratio", weight="claims")
    assert round(fit.collective_mean) == 1684
    assert round(fit.within_variance) == 139_120_026
    assert round(fit.between_variance) == 89_639
    assert fit.risks["z"].round(4).tolist() == [0.9847, 0.9276, 0.8985, 0.7279, 0.9588]
    assert fit.risks["credibility_estimate"].round().tolist() == [2055, 1524, 1793, 1443, 1603]
    assert round(fit.risks.loc[4, "mean"]) == 1353


def test_no_heterogeneity_gives_no_credibility() -> None:
    data = pd.DataFrame({"risk": ["A", "A", "B", "B"], "x": [1.0, 3.0, 3.0, 1.0], "w": [1.0, 1.0, 1.0, 1.0]})
    fit = buhlmann_straub(data, risk="risk", value="x", weight="w")
    assert math.isinf(fit.k)
    assert (fit.risks["z"] == 0).all()
    assert (fit.risks["credibility_estimate"] == 2.0).all()


def test_credibility_weight_saturates_with_km() -> None:
    z = credibility_weight([0.0, 50.0, 1000.0, 4000.0, 1e9], 1000.0)
    assert z.tolist() == pytest.approx([0.0, 50 / 1050, 0.5, 0.8, 1.0], abs=1e-6)
    with pytest.raises(ValueError, match=r"^weight: "):
        credibility_weight([-1.0], 1000.0)


def test_bad_data_is_named() -> None:
    data = pd.DataFrame({"risk": ["A", "B"], "x": [1.0, 2.0], "w": [1.0, 0.0]})
    with pytest.raises(ValueError, match=r"^w: "):
        buhlmann_straub(data, risk="risk", value="x", weight="w")
    with pytest.raises(ValueError, match=r"^risk: at least one risk needs two"):
        buhlmann_straub(data.assign(w=1.0), risk="risk", value="x", weight="w")
