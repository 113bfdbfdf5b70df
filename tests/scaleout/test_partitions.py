"""The generic partition runner: results by partition name, failures named, retries, and
the same behaviour in this process and on a two-worker Dask cluster."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from telematics.jobs.partitions import chunk_name, policy_chunks, run_partitions


def square_unless_seven(n: int) -> int:
    if n == 7:
        raise ValueError(f"partition {n} holds a trip the core refuses")
    return n * n


def fails_once(marker_dir: str, n: int) -> tuple[int, int]:
    """Fails the first time it sees `n`, succeeds after: a transient error."""
    marker = Path(marker_dir) / f"seen-{n}"
    if not marker.exists():
        marker.write_text("1")
        raise ConnectionError("server closed the connection unexpectedly")
    return n, os.getpid()


@pytest.mark.parametrize("where", ["single", "dask"])
def test_results_and_a_named_failure(where: str, cluster: Any) -> None:
    scheduler = cluster.scheduler_address if where == "dask" else None
    report = run_partitions(square_unless_seven, list(range(10)), name=lambda n: f"part-{n}",
                            scheduler=scheduler, retries=1, progress=False)
    assert report.mode == ("scheduler" if scheduler else "single")
    assert report.results == {f"part-{n}": n * n for n in range(10) if n != 7}
    assert [f.name for f in report.failures] == ["part-7"]
    assert report.failures[0].error == "ValueError: partition 7 holds a trip the core refuses"
    assert "part-7" in report.failure_report() and not report.ok


@pytest.mark.parametrize("where", ["single", "dask"])
def test_a_transient_failure_is_retried(where: str, cluster: Any, tmp_path: Path) -> None:
    scheduler = cluster.scheduler_address if where == "dask" else None
    work = partial(fails_once, str(tmp_path))
    report = run_partitions(work, [1, 2, 3], scheduler=scheduler, retries=1, progress=False)
    assert report.ok and sorted(v[0] for v in report.results.values()) == [1, 2, 3]
    if scheduler:
        assert {v[1] for v in report.results.values()} != {os.getpid()}
    (tmp_path / "no-retry").mkdir()
    again = run_partitions(partial(fails_once, str(tmp_path / "no-retry")), [4], retries=0,
                           scheduler=scheduler, progress=False)
    assert [f.name for f in again.failures] == ["4"]
    assert again.failures[0].error.startswith("ConnectionError")


def test_empty_work_and_bad_arguments(cluster: Any) -> None:
    for scheduler in (None, cluster.scheduler_address):
        report = run_partitions(square_unless_seven, [], scheduler=scheduler, progress=False)
        assert report.ok and report.results == {} and report.failure_report() == ""
    with pytest.raises(ValueError, match="retries"):
        run_partitions(square_unless_seven, [1], retries=-1)
    with pytest.raises(ValueError, match="n_workers"):
        run_partitions(square_unless_seven, [1], n_workers=0, local=True)
    with pytest.raises(ValueError, match="unique"):
        run_partitions(square_unless_seven, [1, 2], name=lambda n: "same")


def test_policy_chunks_cover_each_policy_once_in_order() -> None:
    ids = [f"pol-{i:04d}" for i in (5, 3, 9, 1, 3, 7, 2)]
    chunks = policy_chunks(ids, 2)
    assert chunks == [["pol-0001", "pol-0002"], ["pol-0003", "pol-0005"],
                      ["pol-0007", "pol-0009"]]
    assert chunk_name(chunks[1]) == "policies[pol-0003..pol-0005]"
    assert policy_chunks([], 3) == []
    with pytest.raises(ValueError, match="partition_size"):
        policy_chunks(ids, 0)
