"""Batch feature recomputation against the real database: the batch path (many trips per
query and per core call) equals real-time scoring trip by trip, in this process and on a
two-worker Dask cluster, and survives re-runs, a killed worker and a failing partition."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from telematics.cli import main
from telematics.jobs import features as job
from telematics.jobs.partitions import run_partitions
from telematics.store import privacy as privacy_sql
from telematics.store.repository import GPS, read_samples
from tests.scaleout.conftest import SINCE, UNTIL, Fleet, snapshot, wipe_features

pytestmark = pytest.mark.db

SMALL = 6_000  # GPS samples per partition: several partitions even on this small fleet
NOW_S = UNTIL.timestamp() + 30 * 86_400.0


def expected(fleet: Fleet, *, include_labelled: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """The reference (each trip scored by `score_trip`) as a recomputation after
    `wipe_features` must leave it: trips it must not touch stay wiped."""
    with psycopg.connect(fleet.url) as conn:
        skipped = {(r[0], r[1]) for r in conn.execute(
            "SELECT device_id, trip_id FROM trips WHERE policy_id = %s",
            (fleet.no_consent_policy,))}
    if not include_labelled:
        skipped.add(fleet.labelled)
    ref = fleet.reference
    return {
        "features": [r for r in ref["features"] if (r[0], r[1]) not in skipped],
        "events": [r for r in ref["events"] if (r[0], r[1]) not in skipped],
        "trips": [(r[0], r[1], "closed", None, r[4]) if (r[0], r[1]) in skipped else r
                  for r in ref["trips"]],
        "paths": ref["paths"],
    }


def plan(fleet: Fleet, points: int = SMALL) -> list[job.Partition]:
    with psycopg.connect(fleet.url) as conn:
        return job.plan_partitions(conn, SINCE, UNTIL, points_per_partition=points,
                                   window=timedelta(days=2))


def test_partitions_cover_every_eligible_trip_once(fleet: Fleet) -> None:
    parts = plan(fleet)
    assert len(parts) >= 3
    seen: list[tuple[str, str]] = []
    with psycopg.connect(fleet.url) as conn:
        for part in parts:
            rows = conn.execute(
                "SELECT device_id, trip_id FROM trips WHERE started_at >= %s AND started_at < %s"
                " AND device_id BETWEEN %s AND %s AND status <> 'open'",
                (part.since, part.until, part.first_device, part.last_device)).fetchall()
            assert len(rows) == part.n_trips
            seen += [(r[0], r[1]) for r in rows]
        every = conn.execute("SELECT device_id, trip_id FROM trips").fetchall()
    assert sorted(seen) == sorted((r[0], r[1]) for r in every)
    assert sum(p.n_points for p in parts) == fleet.loaded.samples


def test_one_query_reads_what_read_samples_reads_trip_by_trip(fleet: Fleet) -> None:
    part = job.Partition(0, SINCE, UNTIL, "", "\uffff")
    with psycopg.connect(fleet.url) as conn:
        data = job.read_partition(conn, part, include_labelled=True)
        unconsented = {r[0] for r in conn.execute(
            "SELECT device_id FROM devices WHERE policy_id = %s", (fleet.no_consent_policy,))}
        assert data.n_trips == len([d for d, _ in fleet.loaded.trips if d not in unconsented])
        for k in range(data.n_trips):
            ref = read_samples(conn, GPS, data.device_id[k], data.trip_id[k])
            got = data.trip_gps(k)
            for name in job._GPS_FIELDS:
                assert got[name].dtype == ref[name].dtype
                assert got[name].tobytes() == ref[name].tobytes(), name


def test_location_consent_follows_granted_categories(fleet: Fleet) -> None:
    """Histories that end granted or withdrawn, per purpose: the partition's SQL selects
    exactly the policies that `granted_categories` says have location consent."""
    histories = [[("pricing", False)], [("pricing", True), ("pricing", False)],
                 [("coaching", True)], [("pricing", False), ("claims", True)],
                 [("pricing", True), ("coaching", False)], []]
    part = job.Partition(0, SINCE, UNTIL, "", "\uffff")
    with psycopg.connect(fleet.url) as conn:
        conn.execute("DELETE FROM consents")
        for policy_id, history in zip(fleet.loaded.policies, histories, strict=True):
            for purpose, granted in history:
                privacy_sql.record_consent(conn, policy_id, "location", purpose, granted, "t")
        selected = {r[2] for r in job._select_trips(conn, part, True)[0]}
        reference = {p for p in fleet.loaded.policies
                     if "location" in privacy_sql.granted_categories(conn, p)}
        conn.rollback()
    assert reference == {fleet.loaded.policies[i] for i in (2, 3, 4)}
    assert selected == reference


def test_single_process_recompute_equals_real_time_scoring(fleet: Fleet) -> None:
    wipe_features(fleet.url)
    report, parts = job.recompute(fleet.url, SINCE, UNTIL, local=False, now_s=NOW_S,
                                  points_per_partition=SMALL, progress=False)
    assert report.ok and report.mode == "single" and len(parts) >= 3
    assert snapshot(fleet.url) == expected(fleet)
    summary = job.summarize(report, len(parts))
    assert summary.trips == len(expected(fleet)["features"])
    assert summary.skipped_label == 1 and summary.skipped_consent > 0


def test_dask_recompute_is_bit_for_bit_the_single_process_result(fleet: Fleet,
                                                                cluster: Any) -> None:
    wipe_features(fleet.url)
    report, parts = job.recompute(fleet.url, SINCE, UNTIL, scheduler=cluster.scheduler_address,
                                  now_s=NOW_S, points_per_partition=SMALL, progress=False)
    assert report.ok and report.mode == "scheduler" and report.n_workers == 2
    assert sorted(report.results) == sorted(p.name for p in parts)
    assert snapshot(fleet.url) == expected(fleet)
    report, _ = job.recompute(fleet.url, SINCE, UNTIL, scheduler=cluster.scheduler_address,
                              now_s=NOW_S, include_labelled=True, progress=False)
    assert report.ok
    assert snapshot(fleet.url) == expected(fleet, include_labelled=True)


def test_rerun_replaces_and_never_duplicates(fleet: Fleet, cluster: Any) -> None:
    wipe_features(fleet.url)
    for _ in range(2):
        report, _ = job.recompute(fleet.url, SINCE, UNTIL,
                                  scheduler=cluster.scheduler_address, now_s=NOW_S,
                                  points_per_partition=SMALL, progress=False)
        assert report.ok
        assert snapshot(fleet.url) == expected(fleet)


def test_a_trip_uploaded_to_meanwhile_keeps_its_real_time_score(fleet: Fleet) -> None:
    wipe_features(fleet.url)
    part = job.Partition(0, SINCE, UNTIL, "", "\uffff")
    with psycopg.connect(fleet.url) as conn:
        data = job.read_partition(conn, part)
        conn.commit()
        late = (data.device_id[0], data.trip_id[0])
        conn.execute("UPDATE trips SET last_upload_at = now() WHERE device_id = %s"
                     " AND trip_id = %s", late)
        conn.commit()
        with conn.transaction():
            written, _, _, changed = job.write_partition(conn, data, job.compute_partition(
                data, NOW_S))
        assert changed == 1 and written == data.n_trips - 1
        assert conn.execute("SELECT count(*) FROM trip_features WHERE device_id = %s"
                            " AND trip_id = %s", late).fetchone() == (0,)


def recompute_or_die(marker: str, database_url: str, part: job.Partition, *,
                     now_s: float) -> job.PartitionResult:
    """`recompute_partition`, except that the first call anywhere kills its own worker
    process after writing its rows and before committing them."""
    original = job.write_partition

    def write_then_die(conn: psycopg.Connection[Any], data: job.PartitionData,
                       result: Any) -> tuple[int, int, int, int]:
        out = original(conn, data, result)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return out
        row = conn.execute("SELECT count(*) FROM trip_features").fetchone()
        os.write(fd, json.dumps({"partition": part.name, "rows_in_transaction": row[0] if row
                                 else 0, "pid": os.getpid()}).encode())
        os.close(fd)
        os._exit(1)

    job.write_partition = write_then_die
    try:
        return job.recompute_partition(database_url, part, now_s=now_s)
    finally:
        job.write_partition = original


def test_a_worker_killed_mid_write_leaves_no_partial_rows(fleet: Fleet, cluster: Any,
                                                         tmp_path: Path) -> None:
    wipe_features(fleet.url)
    marker = tmp_path / "killed.json"
    parts = plan(fleet)
    report = run_partitions(partial(recompute_or_die, str(marker), fleet.url, now_s=NOW_S),
                            parts, name=lambda p: p.name, scheduler=cluster.scheduler_address,
                            retries=0, progress=False)
    died = json.loads(marker.read_text())
    assert died["rows_in_transaction"] > 0 and died["pid"] != os.getpid()
    assert report.ok, report.failure_report()
    assert died["partition"] in report.results
    assert snapshot(fleet.url) == expected(fleet)


def test_an_empty_range_does_nothing(fleet: Fleet, cluster: Any) -> None:
    before = snapshot(fleet.url)
    for scheduler in (None, cluster.scheduler_address):
        report, parts = job.recompute(fleet.url, UNTIL, UNTIL + timedelta(days=30),
                                      scheduler=scheduler, local=False, progress=False)
        assert parts == [] and report.ok and report.results == {}
        assert job.summarize(report, 0).points == 0
    assert snapshot(fleet.url) == before


def test_a_failing_partition_is_named_and_the_others_complete(
        fleet: Fleet, cluster: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wipe_features(fleet.url)
    victim = fleet.loaded.policies[0]
    with psycopg.connect(fleet.url) as conn:
        row = conn.execute(
            "SELECT d.device_id, p.time_zone FROM devices d JOIN policies p USING (policy_id)"
            " WHERE policy_id = %s", (victim,)).fetchone()
        assert row is not None
        device, time_zone = row
        conn.execute("UPDATE policies SET time_zone = 'Mars/Olympus_Mons' WHERE policy_id = %s",
                     (victim,))
    try:
        report, parts = job.recompute(fleet.url, SINCE, UNTIL,
                                      scheduler=cluster.scheduler_address, now_s=NOW_S,
                                      points_per_partition=SMALL, window=timedelta(days=2),
                                      progress=False)
        bad = {p.name for p in parts if p.first_device <= device <= p.last_device}
        assert bad and {f.name for f in report.failures} == bad
        assert set(report.results) == {p.name for p in parts} - bad
        assert all("Mars/Olympus_Mons" in f.error for f in report.failures), report.failures
        text = report.failure_report()
        assert all(name in text for name in bad)
        with psycopg.connect(fleet.url) as conn:
            assert conn.execute("SELECT count(*) FROM trip_features WHERE policy_id = %s",
                                (victim,)).fetchone() == (0,)
        monkeypatch.setenv("UBI_DATABASE_URL", fleet.url)
        code = main(["features", "recompute", "--since", SINCE.isoformat(), "--until",
                     UNTIL.isoformat(), "--single-process", "--partition-points", str(SMALL),
                     "--window-days", "2", "--quiet", "--retries", "0"])
        out = capsys.readouterr()
        assert code == 1
        assert json.loads(out.out)["failed"] == sorted(bad)
        assert all(name in out.err for name in bad)
    finally:
        with psycopg.connect(fleet.url) as conn:
            conn.execute("UPDATE policies SET time_zone = %s WHERE policy_id = %s",
                         (time_zone, victim))
