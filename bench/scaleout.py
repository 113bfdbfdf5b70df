"""Feature recomputation from the database: one process against one and two Dask workers.

Loads simulated drivers (their phones' GPS trips, through the store's ingest layer) into a
scratch database, runs `ubi features recompute` over all of them once untimed (compiling
the core and writing the privacy-trimmed paths of never-scored trips), then times the same
job in this process without Dask, on a LocalCluster of one worker and on one of two workers
(single-threaded worker processes, started and warmed before the clock starts: the scoring
warm-up, then one partition each). Every run
reads the samples, runs the numba core and replaces the features and events.

The last line printed is a JSON object with `single_process_points_per_s`,
`dask_1_worker_points_per_s`, `dask_2_workers_points_per_s` and `scaling` (two workers over
one), plus the sizes, the partitions and the machine's load average at the start: the
bench machine has two cores shared with other work and with the database server itself,
so `scaling` is a floor on what two dedicated cores give.

    python bench/scaleout.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from typing import Any

import psycopg

from simulator.simulation import generate
from telematics.jobs import features as job
from telematics.jobs.loadsim import load_simulation
from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url, up
from telematics.store.repository import Store

SINCE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _warm_worker() -> None:
    from telematics.scoring import warm_up

    warm_up()


def _timed(url: str, points: int, **kwargs: Any) -> tuple[float, job.RecomputeSummary]:
    now_s = UNTIL.timestamp()
    started = time.perf_counter()
    report, parts = job.recompute(url, SINCE, UNTIL, now_s=now_s, progress=False,
                                  points_per_partition=points, **kwargs)
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(report.failure_report())
    return elapsed, job.summarize(report, len(parts))


def _on_cluster(url: str, points: int, n_workers: int) -> tuple[float, float, job.RecomputeSummary]:
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(_warm_worker)
        # Each worker recomputes the smallest partition once, untimed: its first partition
        # loads the compiled kernels of the batch path and warms the connection and pandas
        # paths the scoring warm-up does not touch (about a second per fresh worker here,
        # paid in parallel by two workers, so it would bias the scaling measured).
        with psycopg.connect(url) as conn:
            parts = job.plan_partitions(conn, SINCE, UNTIL, points_per_partition=points)
        if parts:
            client.run(job.recompute_partition, url, min(parts, key=lambda p: p.n_points),
                       now_s=UNTIL.timestamp())
        startup = time.perf_counter() - started
        elapsed, summary = _timed(url, points, scheduler=cluster.scheduler_address)
    return startup, elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller fleet, under 60 s")
    args = parser.parse_args()
    n_drivers, days = (30, 7) if args.quick else (120, 14)
    load_avg = os.getloadavg()[0]
    up()
    with scratch_database(database_url(), "ubi_bench_scaleout") as url:
            t0 = time.perf_counter()
            sim = generate(n_drivers, days, 2026, imu=False, start_date=dt.date(2026, 10, 5))
            with Store(url) as store:
                loaded = load_simulation(store, sim)
            load_s = time.perf_counter() - t0
            # Eight partitions per worker pair keep both busy to the end without making the
            # per-partition overhead (a connection, a plan, a transaction) matter.
            points = max(1, loaded.samples // 8)
            print(f"{n_drivers} drivers x {days} days: {len(loaded.trips):,} trips, "
                  f"{loaded.samples:,} GPS samples, simulated and loaded in {load_s:.1f} s")
            _timed(url, points, local=False)
            single_s, single = _timed(url, points, local=False)
            print(f"single process:   {single_s:6.2f} s  {single.points / single_s:>12,.0f} points/s"
                  f"  ({single.partitions} partitions, {single.trips:,} trips)")
            up1, one_s, one = _on_cluster(url, points, 1)
            print(f"Dask, 1 worker:   {one_s:6.2f} s  {one.points / one_s:>12,.0f} points/s"
                  f"  (cluster start {up1:.1f} s, untimed)")
            up2, two_s, two = _on_cluster(url, points, 2)
            print(f"Dask, 2 workers:  {two_s:6.2f} s  {two.points / two_s:>12,.0f} points/s"
                  f"  (cluster start {up2:.1f} s, untimed)")
            assert single.points == one.points == two.points == loaded.samples
            scaling = one_s / two_s
            print(f"scaling 2 workers over 1: {scaling:.2f}x (load average at start {load_avg:.2f} "
                  "on 2 cores shared with the database)")
            print(json.dumps({
                "single_process_points_per_s": round(single.points / single_s),
                "dask_1_worker_points_per_s": round(one.points / one_s),
                "dask_2_workers_points_per_s": round(two.points / two_s),
                "scaling": round(scaling, 3),
                "points": loaded.samples, "trips": len(loaded.trips),
                "partitions": single.partitions, "load_average_at_start": round(load_avg, 2),
                "single_process_read_compute_write_s": [single.read_s, single.compute_s,
                                                        single.write_s],
                "quick": args.quick,
            }))


if __name__ == "__main__":
    main()
