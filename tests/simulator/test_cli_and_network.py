"""The command line, and the road network's route geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator._route_kernels import _advance
from simulator.cli import main
from simulator.network import NODE_ROAD, build_network
from simulator.routes import route_pieces


def test_cli_policy_level(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--policy-level", "--policies", "1000", "--seed", "4"]) == 0
    policies = pd.read_parquet(tmp_path / "policies.parquet")
    assert len(policies) == 1000 and {"exposure_years", "distance_km", "claim_count"} <= set(policies)
    assert len(pd.read_parquet(tmp_path / "truth" / "coefficients.parquet")) > 10


def test_cli_trace_mode(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--drivers", "2", "--days", "1", "--seed", "3", "--no-imu"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n_drivers"] == 2 and manifest["imu_hz"] is None
    assert len(list((tmp_path / "phone").rglob("*.json"))) == manifest["n_phone_batches"]
    for name in ("drivers", "trips", "events", "claims", "coefficients", "obd_feeds"):
        assert (tmp_path / "truth" / f"{name}.parquet").exists()


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--policy-level" in capsys.readouterr().out


def test_routes_chain_from_origin_to_destination() -> None:
    network = build_network(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    region, origin, destination = [], [], []
    for r in range(len(network.region_node_offsets) - 1):
        nodes = network.region_nodes(r)
        road = np.flatnonzero(network.node_kind[nodes] == NODE_ROAD)
        for _ in range(10):
            o, d = rng.choice(road, 2, replace=False)
            region.append(r)
            origin.append(o)
            destination.append(d)
    stops = np.column_stack([origin, destination]).ravel()
    pieces = route_pieces(network, np.array(region), np.arange(0, stops.shape[0] + 1, 2), stops)
    assert np.all(pieces.len_m > 0.0)
    for t in range(len(region)):
        lo, hi = pieces.offsets[t], pieces.offsets[t + 1]
        assert hi > lo
        for k in range(lo, hi):
            x, y, _ = _advance(pieces.x0_m[k], pieces.y0_m[k], pieces.h0_rad[k], pieces.len_m[k],
                               pieces.curv_1pm[k])
            if k + 1 < hi:
                assert x == pytest.approx(pieces.x0_m[k + 1], abs=1e-6)
                assert y == pytest.approx(pieces.y0_m[k + 1], abs=1e-6)
        end = network.region_node_offsets[region[t]] + destination[t]
        assert x == pytest.approx(network.node_x_m[end], abs=1e-6)
        assert y == pytest.approx(network.node_y_m[end], abs=1e-6)


def test_route_arrays_must_align() -> None:
    network = build_network(np.random.default_rng(0))
    with pytest.raises(ValueError, match="one entry per trip plus one"):
        route_pieces(network, np.array([0, 0]), np.array([0, 2]), np.array([1, 2]))
