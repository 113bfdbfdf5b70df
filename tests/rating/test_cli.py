"""`ubi price ...` end to end on a small simulated portfolio."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from simulator import simulate_policies
from telematics.cli import build_parser, main
from telematics.rating import from_simulator_layout
from telematics.store.provision import as_pricing_role
from tests.rating.conftest import add_policy, add_trip, at, trip_features

pytestmark = pytest.mark.db


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(["price", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def _load_portfolio(conn: psycopg.Connection[Any], simulated: pd.DataFrame) -> None:
    """Each simulated policy as a database policy with October trips at its observed rates."""
    rows = from_simulator_layout(simulated)
    monthly_km = simulated["distance_km"].to_numpy() / simulated["exposure_years"].to_numpy() / 12.0
    for i, row in enumerate(rows.itertuples()):
        policy_id = f"S{row.policy_id}"
        add_policy(conn, policy_id, factors={"vehicle_group": row.vehicle_group, "region": row.region,
                                             "age_band": row.age_band})
        km = float(monthly_km[i]) / 3.0
        for k in range(3):
            add_trip(conn, policy_id, f"oct{k}", datetime(2026, 10, 3 + 9 * k, 7, tzinfo=UTC), km,
                     features=trip_features(
                         km, brakes=round(float(simulated["obs_harsh_brake_per_100km"].iat[i] * km / 100)),
                         accels=round(float(simulated["obs_harsh_accel_per_100km"].iat[i] * km / 100)),
                         corners=round(float(simulated["obs_harsh_corner_per_100km"].iat[i] * km / 100)),
                         night_km=float(simulated["obs_night_share"].iat[i]) * km))
        if simulated["claim_count"].iat[i] > 0:
            conn.execute("INSERT INTO claims (claim_id, policy_id, occurred_at, amount) VALUES (%s, %s, %s, %s)",
                         (f"C{i}", policy_id, datetime(2026, 10, 15, tzinfo=UTC) + timedelta(hours=i),
                          round(float(simulated["claim_amount"].iat[i]), 2)))


def test_every_price_command_has_help() -> None:
    parser = build_parser()
    price = parser._subparsers._group_actions[0].choices["price"]  # type: ignore[union-attr]
    commands = price._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {"calibrate", "publish", "reprice", "replay", "validate"}
    for sub in commands.values():
        assert sub.description and len(sub.description) > 30
        assert "--database-url" in sub.format_help()


def test_price_commands_end_to_end(rating_url: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    simulated = simulate_policies(400, seed=11)
    data = tmp_path / "policies.parquet"
    simulated.to_parquet(data)
    db = ["--database-url", rating_url]

    code, out, err = _run(capsys, "calibrate", *db, "--data", str(data), "--out", str(tmp_path / "plan.json"),
                          "--relevel", "--publish")
    assert code == 0, err
    assert out is not None and out["published"] == "default-v2" and out["rows_used"] == 400
    assert set(out["behaviours_not_in_data"]) == {"phone_handling", "speeding", "urban_driving", "motorway_driving"}

    code, out, err = _run(capsys, "publish", *db, str(tmp_path / "plan.json"))
    assert code == 0 and out is not None and out["published"] == "default-v2"

    _load_portfolio(conn, simulated)
    code, out, err = _run(capsys, "reprice", *db, "--plan", "default-v2", "--period", "2026-10",
                          "--batch-size", "150")
    assert code == 0, err
    assert out is not None and out["premiums_written"] == 400
    run = conn.execute("SELECT policies, total_premium_cents, coaching_targets FROM pricing_runs").fetchone()
    total = conn.execute("SELECT sum(amount) FROM premiums WHERE kind = 'period'").fetchone()
    assert run is not None and total is not None
    assert run[0] == 400 and run[1] == int(total[0] * 100)
    assert set(run[2]) == {"harsh_braking", "harsh_acceleration", "harsh_cornering",
                                               "night_driving"}

    before = conn.execute("SELECT policy_id, amount, breakdown FROM premiums"
                          " ORDER BY policy_id").fetchall()
    code, out, err = _run(capsys, "reprice", *db, "--plan", "default-v2", "--period", "2026-10",
                          "--batch-size", "150", "--workers", "2")
    assert code == 0, err
    assert out is not None and out["premiums_written"] == 400 and out["ran_on"] == "local"
    assert conn.execute("SELECT policy_id, amount, breakdown FROM premiums"
                        " ORDER BY policy_id").fetchall() == before  # same to the cent

    code, out, err = _run(capsys, "reprice", *db, "--plan", "default-v2", "--period", "2026-10",
                          "--policies", "S1,S2", "--batch-size", "0")
    assert code == 0 and out is not None and out["premiums_written"] == 2
    assert conn.execute("SELECT count(*) FROM premiums").fetchone() == (400,)

    code, out, err = _run(capsys, "replay", *db, "--period", "2026-10")
    assert code == 0, err
    assert out is not None and out["ok"] and out["records"] == 400

    conn.execute("UPDATE premiums SET amount = amount - 0.01 WHERE policy_id = 'S17'")
    code, out, err = _run(capsys, "replay", *db)
    assert code == 1 and out is not None and not out["ok"]
    assert "policy S17" in err and "premium_cents" in err

    code, out, err = _run(capsys, "validate", *db, "--plan", "default-v2", "--data", str(data))
    assert code == 0, err
    assert out is not None and np.isfinite(out["gini"]) and out["gini"] > 0
    assert "gender" in out["fairness"]

    code, out, err = _run(capsys, "calibrate", *db, "--from-db", "--period", "2026-10", "--template", "default-v2",
                          "--data", str(data), "--out", str(tmp_path / "plan3.json"))
    assert code == 0, err
    assert out is not None and out["version"] == 3 and out["published"] is None and out["rows_used"] == 800


def test_bad_input_is_named(rating_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database-url", rating_url]
    code, _, err = _run(capsys, "reprice", *db, "--period", "2026-13")
    assert code == 2 and "period: expected a month" in err
    code, _, err = _run(capsys, "reprice", *db, "--plan", "nope-v1", "--period", "2026-10")
    assert code == 2 and "no published plan 'nope-v1'" in err
    code, _, err = _run(capsys, "calibrate", *db, "--out", str(tmp_path / "x.json"))
    assert code == 2 and "--data/--from-db" in err


def test_price_commands_connect_as_the_pricing_role(rating_url: str, conn: psycopg.Connection[Any],
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --database-url the commands connect to UBI_PRICING_DATABASE_URL, and refuse
    it when its role could read raw samples (here the main, superuser role)."""
    add_policy(conn, "R001")
    add_trip(conn, "R001", "t1", at(5), 12.0)
    monkeypatch.setenv("UBI_PRICING_DATABASE_URL", rating_url)
    code, out, err = _run(capsys, "reprice", "--period", "2026-10")
    assert code == 2 and out is None
    assert "can read gps_samples, imu_samples, obd_samples" in err and "ubi_pricing" in err
    assert conn.execute("SELECT count(*) FROM premiums").fetchone() == (0,)
    monkeypatch.setenv("UBI_PRICING_DATABASE_URL", as_pricing_role(rating_url))
    code, out, err = _run(capsys, "reprice", "--period", "2026-10")
    assert code == 0, err
    assert out is not None and out["premiums_written"] == 1
    code, out, err = _run(capsys, "replay", "--period", "2026-10")
    assert code == 0, err
