"""Repricing on Dask: the partitions of `reprice_on_dask` write the premiums the serial
`reprice_partition` writes for the same policies, and a re-run replaces them."""

from __future__ import annotations

import json
import os
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pricing.plan import default_plan
from telematics import rating
from telematics.jobs.partitions import chunk_name, policy_chunks, reprice_on_dask, run_partitions
from telematics.store.privacy import PricingRoleError
from telematics.store.provision import as_pricing_role
from tests.scaleout.conftest import Fleet

pytestmark = pytest.mark.db

START, END = date(2026, 10, 1), date(2026, 11, 1)


def premiums(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT policy_id, period_start, period_end, kind, plan_version, amount, currency,"
            " breakdown::text, sha256 FROM premiums ORDER BY policy_id, kind").fetchall()


def rated_fleet(fleet: Fleet) -> str:
    """Rating factors on the fleet's policies, the default plan published and the
    portfolio's coaching targets stored (the serial driver's protocol); the plan's key."""
    with psycopg.connect(fleet.url) as conn:
        version = rating.publish_plan(conn, default_plan())
        for i, policy_id in enumerate(fleet.loaded.policies):
            conn.execute("UPDATE policies SET start_date = %s, rating_factors = %s"
                         " WHERE policy_id = %s",
                         (date(2026, 1, 1), Jsonb({"vehicle_group": "ABCDE"[i % 5],
                                                   "region": ("rural", "urban")[i % 2],
                                                   "age_band": ("25-34", "35-54")[i % 2]}),
                          policy_id))
        conn.commit()
        rating.coaching_targets(conn, rating.load_published_plan(conn, version), START, END)
        conn.commit()
    return version


def test_reprice_on_dask_equals_the_serial_partition(fleet: Fleet, cluster: Any) -> None:
    version = rated_fleet(fleet)
    ids = fleet.loaded.policies
    pricing_url = as_pricing_role(fleet.url)
    serial = rating.reprice_partition(pricing_url, version, START, END, ids)
    reference = premiums(fleet.url)
    assert serial > 0 and len(reference) == serial
    for _ in range(2):
        report = reprice_on_dask(pricing_url, version, START, END,
                                 scheduler=cluster.scheduler_address, partition_size=2,
                                 progress=False)
        assert report.ok, report.failure_report()
        assert len(report.results) == 3 and sum(report.results.values()) == serial
        assert premiums(fleet.url) == reference
    with psycopg.connect(fleet.url) as conn:
        run = conn.execute("SELECT policies FROM pricing_runs WHERE plan_version = %s"
                           " AND period_start = %s", (version, START)).fetchone()
    assert run == (serial,)


def test_repricing_runs_only_as_a_role_without_raw_samples(fleet: Fleet) -> None:
    """The fleet's raw samples are there, the pricing role cannot read them, and a
    repricing given a connection that could (the main role) refuses to start."""
    with psycopg.connect(fleet.url) as conn:
        assert conn.execute("SELECT count(*) FROM gps_samples").fetchone() > (0,)
    with psycopg.connect(as_pricing_role(fleet.url)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("ubi_pricing",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM gps_samples")
    with pytest.raises(PricingRoleError, match="gps_samples"):
        reprice_on_dask(fleet.url, "default-v1", START, END, progress=False)
    with pytest.raises(PricingRoleError, match="gps_samples"):
        rating.reprice_partition(fleet.url, "default-v1", START, END, fleet.loaded.policies)


def reprice_or_die(marker: str, database_url: str, plan_version: str, ids: list[str]) -> int:
    """`reprice_partition`, except that the first call anywhere kills its own worker
    process after writing its premiums and before committing them."""
    original = rating.reprice_period

    def write_then_die(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> int:
        out = original(conn, *args, **kwargs)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return out
        os.write(fd, json.dumps({"written": out, "pid": os.getpid()}).encode())
        os.close(fd)
        os._exit(1)

    rating.reprice_period = write_then_die
    try:
        return rating.reprice_partition(database_url, plan_version, START, END, ids)
    finally:
        rating.reprice_period = original


def test_a_worker_killed_mid_reprice_leaves_no_partial_or_duplicate_premiums(
        fleet: Fleet, cluster: Any, tmp_path: Path) -> None:
    version = rated_fleet(fleet)
    pricing_url = as_pricing_role(fleet.url)
    rating.reprice_partition(pricing_url, version, START, END, fleet.loaded.policies)
    reference = premiums(fleet.url)
    with psycopg.connect(fleet.url) as conn:
        conn.execute("DELETE FROM premiums")
    marker = tmp_path / "killed.json"
    report = run_partitions(partial(reprice_or_die, str(marker), pricing_url, version),
                            policy_chunks(fleet.loaded.policies, 2), name=chunk_name,
                            scheduler=cluster.scheduler_address, retries=0, progress=False)
    died = json.loads(marker.read_text())
    assert died["written"] > 0 and died["pid"] != os.getpid()
    assert report.ok, report.failure_report()
    assert sum(report.results.values()) == len(reference)
    assert premiums(fleet.url) == reference


def test_repricing_nothing_is_fine(fleet: Fleet, cluster: Any) -> None:
    version = rated_fleet(fleet)
    pricing_url = as_pricing_role(fleet.url)
    before = premiums(fleet.url)
    report = reprice_on_dask(pricing_url, version, START, END, policy_ids=[],
                             scheduler=cluster.scheduler_address, progress=False)
    assert report.ok and report.results == {}
    # No policy is in force in a period before the fleet's policies start.
    old = (date(2020, 1, 1), date(2020, 2, 1))
    report = reprice_on_dask(pricing_url, version, *old, scheduler=cluster.scheduler_address,
                             progress=False)
    assert report.ok and report.results == {}
    assert premiums(fleet.url) == before
