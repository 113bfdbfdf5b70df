"""Partitioned batch work: run one function over many partitions in this process, on a local
Dask cluster or on a remote scheduler, with retries, progress and a failure report."""

from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Mode = Literal["single", "local", "scheduler"]


@dataclass(frozen=True)
class PartitionFailure:
    """A partition that still failed after its retries: its name and the last error."""

    name: str
    error: str
    detail: str = ""


@dataclass
class RunReport(Generic[R]):
    """What a partitioned run did: results by partition name, failures, where it ran."""

    mode: Mode
    n_workers: int
    results: dict[str, R] = field(default_factory=dict)
    failures: list[PartitionFailure] = field(default_factory=list)
    dashboard: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_report(self) -> str:
        """A few lines naming every failed partition and why; empty when none failed."""
        if not self.failures:
            return ""
        lines = [f"{len(self.failures)} of {len(self.failures) + len(self.results)} "
                 "partitions failed:"]
        lines += [f"  {f.name}: {f.error}" for f in self.failures]
        lines.append("Re-running the same command retries them; partitions that succeeded are "
                     "recomputed to the same result.")
        return "\n".join(lines)


def machine_workers() -> int:
    """Dask workers for a LocalCluster sized to this machine: one single-threaded process
    per core the process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def dask_client(scheduler: str | None, n_workers: int) -> Iterator[Any]:
    """A Dask client: on the scheduler at `scheduler`, or on a LocalCluster of `n_workers`
    single-threaded worker processes that lives as long as the context."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    # One thread per worker: the numba core is single-threaded per partition, and worker
    # processes (not threads) are what scale it past the GIL held by pandas and psycopg.
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def dashboard_address(client: Any) -> str | None:
    """The dashboard link of the client's scheduler, or None where it serves none."""
    info = client.scheduler_info()
    if "dashboard" not in info.get("services", {}):
        return None
    if client.cluster is not None:
        try:
            import bokeh  # noqa: F401  (the local dashboard is served only with bokeh)
        except ImportError:
            return None
    link = client.dashboard_link
    return str(link) if link else None


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled or total == 0, desc=desc, unit="part",
                file=sys.stderr, leave=False)


def run_partitions(work: Callable[[T], R], partitions: Sequence[T], *,
                   name: Callable[[T], str] = str, scheduler: str | None = None,
                   n_workers: int | None = None, local: bool = False, retries: int = 1,
                   progress: bool = True, desc: str = "partitions") -> RunReport[R]:
    """Run `work` on every partition and collect the results and failures.

    `work` must be a picklable top-level function (or a `functools.partial` of one) that is
    idempotent: a partition may run more than once (a retry after an error, or again after
    its worker died) and each run must leave the same result. Without `scheduler` and
    `local` it runs here, one partition after the other; with `local` on a LocalCluster of
    `n_workers` processes (default: one per core); with `scheduler` on that cluster.
    A failure never stops the other partitions: the report names every failed one.
    """
    if retries < 0:
        raise ValueError(f"retries: must be >= 0, got {retries}")
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers: must be >= 1, got {n_workers}")
    names = [name(p) for p in partitions]
    if len(set(names)) != len(names):
        raise ValueError("partitions: names must be unique (they key the tasks and the report)")
    started = time.perf_counter()
    if scheduler is None and not local:
        report: RunReport[R] = RunReport(mode="single", n_workers=1)
        _run_here(work, partitions, names, retries, report, progress, desc)
    else:
        workers = n_workers or machine_workers()
        with dask_client(scheduler, workers) as client:
            report = RunReport(mode="scheduler" if scheduler else "local",
                               n_workers=len(client.scheduler_info()["workers"]),
                               dashboard=dashboard_address(client))
            if report.dashboard and progress:
                print(f"Dask dashboard: {report.dashboard}", file=sys.stderr)
            _run_on_dask(client, work, partitions, names, retries, report, progress, desc)
    report.elapsed_s = time.perf_counter() - started
    return report


def _run_here(work: Callable[[T], R], partitions: Sequence[T], names: list[str], retries: int,
              report: RunReport[R], progress: bool, desc: str) -> None:
    with _progress(len(partitions), progress, desc) as bar:
        for part, part_name in zip(partitions, names, strict=True):
            for attempt in range(retries + 1):
                try:
                    report.results[part_name] = work(part)
                    break
                except Exception as exc:  # a partition's failure is reported, not raised
                    if attempt == retries:
                        report.failures.append(PartitionFailure(
                            part_name, _describe(exc), traceback.format_exc()))
            bar.update(1)


def _run_on_dask(client: Any, work: Callable[[T], R], partitions: Sequence[T],
                 names: list[str], retries: int, report: RunReport[R], progress: bool,
                 desc: str) -> None:
    from distributed import as_completed

    if not partitions:
        return
    # Keys carry the partition's name (readable on the dashboard) and a run token, so that
    # a second run in the same cluster never reuses a finished task's result.
    token = uuid.uuid4().hex[:8]
    keys = [f"{desc}-{part_name}-{token}" for part_name in names]
    futures = client.map(work, list(partitions), key=keys, retries=retries, pure=False)
    by_key = dict(zip(keys, names, strict=True))
    with _progress(len(futures), progress, desc) as bar:
        for future in as_completed(futures):
            part_name = by_key[future.key]
            if future.status == "finished":
                report.results[part_name] = future.result()
            else:
                exc = future.exception()
                tb = future.traceback()
                report.failures.append(PartitionFailure(
                    part_name, _describe(exc),
                    "".join(traceback.format_exception(type(exc), exc, tb)) if tb else ""))
            bar.update(1)
    order = {n: i for i, n in enumerate(names)}
    report.failures.sort(key=lambda f: order[f.name])


# --- repricing ------------------------------------------------------------------------------

def policy_chunks(policy_ids: Sequence[str], partition_size: int) -> list[list[str]]:
    """Policy ids in sorted runs of at most `partition_size`: each run is one partition."""
    if partition_size < 1:
        raise ValueError(f"partition_size: must be >= 1, got {partition_size}")
    ordered = sorted(set(policy_ids))
    return [ordered[i:i + partition_size] for i in range(0, len(ordered), partition_size)]


def chunk_name(chunk: Sequence[str]) -> str:
    return f"policies[{chunk[0]}..{chunk[-1]}]" if chunk else "policies[]"


def reprice_on_dask(database_url: str, plan_version: str, period_start: date,
                    period_end: date, *, scheduler: str | None = None, n_workers: int = 2,
                    partition_size: int = 20_000, policy_ids: Sequence[str] | None = None,
                    retries: int = 1, progress: bool = True) -> RunReport[int]:
    """Reprice a period on Dask with the published plan `plan_version`: the policies
    (default: every policy in force in the period) in sorted chunks of `partition_size`,
    each through `telematics.rating.reprice_partition` (its own connection, idempotent).
    `database_url` is the pricing side's connection
    (`telematics.store.provision.pricing_database_url`): here and in every partition it is
    refused if its role can read raw samples or secrets.

    As the serial driver does: for the whole portfolio the coaching targets are computed
    and stored once before the partitions (so every partition coaches towards the same
    medians) and the run's totals are recorded after them, only when none failed.
    Returns the report; its results are the premiums written per chunk.
    """
    from telematics import rating
    from telematics.store.privacy import connect_pricing

    with connect_pricing(database_url) as conn:
        plan = rating.load_published_plan(conn, plan_version)
        ids = (list(policy_ids) if policy_ids is not None
               else rating.policies_in_force(conn, period_start, period_end))
        if policy_ids is None:
            rating.coaching_targets(conn, plan, period_start, period_end)
        conn.commit()
    work = partial(rating.reprice_partition, database_url, plan_version, period_start,
                   period_end)
    report = run_partitions(work, policy_chunks(ids, partition_size), name=chunk_name,
                            scheduler=scheduler, n_workers=n_workers,
                            local=scheduler is None, retries=retries, progress=progress,
                            desc="reprice")
    if policy_ids is None and report.ok:
        with connect_pricing(database_url) as conn:
            rating.finish_run(conn, plan, period_start, period_end)
    return report
