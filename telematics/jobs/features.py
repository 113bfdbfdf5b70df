"""`ubi features ...`: batch recomputation of trip features from stored samples.

The job plans partitions of trips (a start-time window times a run of devices, balanced by
GPS samples), and each partition, wherever it runs, opens its own connection, reads all its
trips' samples with one COPY, runs the numba core once over the flat arrays with offsets,
and replaces the trips' features and events in one transaction. A partition that runs
twice (a retry, a worker that died) leaves the same rows: the write deletes and inserts the
partition's (device, trip) keys, and a transaction cut short writes nothing.

What is recomputed is what :func:`telematics.scoring.score_trip` computes for one trip,
with the same core call, the same privacy-zone masking of event positions and the same
conversions: the tests compare the two on the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from telematics.jobs.partitions import RunReport, run_partitions
from telematics.pipeline import PipelineResult, run_pipeline
from telematics.privacy import TripZones, ZoneOffset, draw_zone_radii_m
from telematics.scoring import CODE_VERSION, trip_outcome
from telematics.store import privacy as privacy_sql
from telematics.store.pgcopy import PG_EPOCH_US
from telematics.store.repository import GPS, IMU, binary_aggregates, read_samples

# Trips the GPS core scores. OBD trips are scored from speed alone (telematics/obd_scoring.py)
# and an OBD feed is a container, never scored.
GPS_SOURCES = ("phone", "gpx")
# An open trip is still receiving uploads: it is scored when it closes.
DONE_STATUSES = ("closed", "scored", "unscored", "failed")
# Trips the policyholder said were not theirs to drive: they never count against the driver.
NOT_DRIVING_LABELS = ("passenger", "transit", "not_me")
DEFAULT_PARTITION_POINTS = 2_000_000
DEFAULT_WINDOW = timedelta(days=7)
# Below this many GPS samples the job runs in this process unless told otherwise: starting
# worker processes costs more than it saves.
SINGLE_PROCESS_POINTS = 5_000_000


@dataclass(frozen=True)
class Partition:
    """Trips that start in [since, until) of the devices first_device..last_device
    (inclusive), as planned: `n_trips` and `n_points` are estimates for balancing."""

    index: int
    since: datetime
    until: datetime
    first_device: str
    last_device: str
    n_trips: int = 0
    n_points: int = 0

    @property
    def name(self) -> str:
        return (f"p{self.index:04d}[{self.since:%Y-%m-%dT%H:%M}..{self.until:%Y-%m-%dT%H:%M}"
                f" {self.first_device}..{self.last_device}]")


@dataclass(frozen=True)
class PartitionResult:
    """What one partition did."""

    trips: int  # trips whose features were written
    points: int  # GPS samples read and run through the core
    events: int
    no_samples: int  # trips with no GPS sample: marked unscored, features left alone
    changed: int  # trips that received an upload while the partition ran: left alone
    skipped_consent: int  # trips of policies without location consent: not recomputed
    skipped_label: int  # trips labelled as not driven by the policyholder
    read_s: float
    compute_s: float
    write_s: float


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: needs a time zone, e.g. 2026-11-01T00:00:00+00:00")
    return value.astimezone(UTC)


# --- planning ------------------------------------------------------------------------------

def plan_partitions(conn: psycopg.Connection[Any], since: datetime, until: datetime, *,
                    points_per_partition: int = DEFAULT_PARTITION_POINTS,
                    window: timedelta = DEFAULT_WINDOW) -> list[Partition]:
    """Split the trips that start in [since, until) into partitions: one start-time window
    of `window` after another, and inside each, runs of devices (in id order) holding about
    `points_per_partition` GPS samples. A device's trips in a window are never split."""
    since, until = _utc(since, "since"), _utc(until, "until")
    if until <= since:
        raise ValueError(f"until: must be after since ({since.isoformat()})")
    if not 1 <= points_per_partition <= MAX_PARTITION_POINTS:
        raise ValueError(f"points_per_partition: must be in 1..{MAX_PARTITION_POINTS:,}, "
                         f"got {points_per_partition}")
    if window <= timedelta(0):
        raise ValueError("window: must be positive")
    rows = conn.execute(
        "SELECT floor(extract(epoch FROM started_at - %(s)s) / %(w)s)::bigint AS slot,"
        " device_id, count(*), coalesce(sum(n_gps), 0)"
        " FROM trips WHERE started_at >= %(s)s AND started_at < %(u)s"
        " AND status = ANY(%(st)s) AND source = ANY(%(src)s)"
        " GROUP BY slot, device_id ORDER BY slot, device_id",
        {"s": since, "u": until, "w": window.total_seconds(), "st": list(DONE_STATUSES),
         "src": list(GPS_SOURCES)}).fetchall()
    parts: list[Partition] = []
    run: list[tuple[str, int, int]] = []
    run_slot = -1

    def close_run() -> None:
        if run:
            lo = since + run_slot * window
            parts.append(Partition(len(parts), lo, min(lo + window, until), run[0][0],
                                   run[-1][0], sum(r[1] for r in run), sum(r[2] for r in run)))
            run.clear()

    for slot, device_id, n_trips, n_points in rows:
        if slot != run_slot or (run and sum(r[2] for r in run) + n_points > points_per_partition):
            close_run()
            run_slot = int(slot)
        run.append((str(device_id), int(n_trips), int(n_points)))
    close_run()
    return parts


# --- reading -------------------------------------------------------------------------------

@dataclass
class PartitionData:
    """A partition's eligible trips and their GPS samples as flat columns with offsets."""

    device_id: list[str]
    trip_id: list[str]
    policy_id: list[str]
    time_zone: list[str]
    last_upload_at: list[datetime]
    offsets: np.ndarray  # int64 [n_trips + 1]
    gps: dict[str, np.ndarray]  # t_us, lat_deg, lon_deg, speed_mps, accuracy_m, speed_limit_mps
    skipped_consent: int
    skipped_label: int
    # Added by `attach_imu`: per trip, consent to phone-use data; the IMU of the trips with
    # consent to motion data, flat with offsets (None when no trip has any).
    phone_use: list[bool] = field(default_factory=list)
    imu: dict[str, np.ndarray] | None = None
    imu_offsets: np.ndarray | None = None

    @property
    def n_trips(self) -> int:
        return len(self.trip_id)

    def trip_gps(self, k: int) -> dict[str, np.ndarray]:
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return {name: values[lo:hi] for name, values in self.gps.items()}


_GPS_FIELDS = ("t_us", "lat_deg", "lon_deg", "speed_mps", "accuracy_m", "speed_limit_mps")
# Most partitions' samples in one bytea per column (`binary_aggregates`), built by the server with the types'
# own binary send functions (big-endian int64 and float64): one row to transfer and
# numpy to decode, instead of a protocol message and Python work per sample. Missing
# optional values come as NaN, as `read_samples` gives them.
_READ_GPS = (
    "SELECT string_agg(int8send(k.ord), ''::bytea), "
    + binary_aggregates(GPS, ("time", "seq", *_GPS_FIELDS[1:]), qualifier="s.")
    + " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS k(device_id, trip_id, ord)"
    " JOIN gps_samples s ON s.device_id = k.device_id AND s.trip_id = k.trip_id"
    " WHERE s.time >= %s AND s.time <= %s")
# A bytea value is at most 1 GiB: 8-byte columns of up to this many samples fit with room.
MAX_PARTITION_POINTS = 100_000_000


def _select_trips(conn: psycopg.Connection[Any], part: Partition,
                  include_labelled: bool) -> tuple[list[tuple[Any, ...]], int, int]:
    """The partition's trips to recompute, with the counts left out for consent and label.
    Location consent is the latest decision per purpose, as in `granted_categories`:
    granted for any purpose is enough to score."""
    rows = conn.execute(
        "WITH part AS (SELECT t.device_id, t.trip_id, t.policy_id, t.label, t.last_upload_at,"
        "  t.started_at, t.ended_at FROM trips t"
        "  WHERE t.started_at >= %(s)s AND t.started_at < %(u)s"
        "  AND t.device_id BETWEEN %(d0)s AND %(d1)s"
        "  AND t.status = ANY(%(st)s) AND t.source = ANY(%(src)s)),"
        " latest AS (SELECT DISTINCT ON (c.policy_id, c.purpose) c.policy_id, c.granted"
        "  FROM consents c WHERE c.category = 'location'"
        "  AND c.policy_id IN (SELECT policy_id FROM part)"
        "  ORDER BY c.policy_id, c.purpose, c.at DESC, c.consent_id DESC)"
        " SELECT part.device_id, part.trip_id, part.policy_id, p.time_zone, part.label,"
        "  part.last_upload_at,"
        "  EXISTS (SELECT 1 FROM latest l WHERE l.policy_id = part.policy_id AND l.granted),"
        "  part.started_at, part.ended_at"
        " FROM part JOIN policies p USING (policy_id) ORDER BY part.device_id, part.trip_id",
        {"s": part.since, "u": part.until, "d0": part.first_device, "d1": part.last_device,
         "st": list(DONE_STATUSES), "src": list(GPS_SOURCES)}).fetchall()
    consented = [r for r in rows if r[6]]
    kept = [r for r in consented if include_labelled or r[4] not in NOT_DRIVING_LABELS]
    return kept, len(rows) - len(consented), len(consented) - len(kept)


def read_partition(conn: psycopg.Connection[Any], part: Partition, *,
                   include_labelled: bool = False) -> PartitionData:
    """The partition's eligible trips and all their GPS samples, read with one query, in
    the order `read_samples` gives each trip (time, then sequence number), plus what
    `attach_imu` adds."""
    trips, skipped_consent, skipped_label = _select_trips(conn, part, include_labelled)
    devices = [str(r[0]) for r in trips]
    trip_ids = [str(r[1]) for r in trips]
    counts = np.zeros(len(trips), dtype=np.int64)
    gps = {name: np.empty(0, dtype=np.int64 if name == "t_us" else np.float64)
           for name in _GPS_FIELDS}
    if trips:
        lo = min((r[7] for r in trips if r[7] is not None), default=part.since)
        hi = max((r[8] for r in trips if r[8] is not None), default=part.until)
        row = conn.execute(_READ_GPS, (devices, trip_ids, lo, hi), binary=True).fetchone()
        if row is not None and row[0] is not None:
            ordinal, time_pg_us, seq = (np.frombuffer(b, dtype=">i8").astype(np.int64)
                                        for b in row[:3])
            # The server aggregates in any order: sort to each trip's samples by time, then
            # sequence number, as `read_samples` orders them ((time, seq) is unique).
            order = np.lexsort((seq, time_pg_us, ordinal))
            gps["t_us"] = time_pg_us[order] + PG_EPOCH_US
            for name, raw in zip(_GPS_FIELDS[1:], row[3:], strict=True):
                gps[name] = np.frombuffer(raw, dtype=">f8").astype(np.float64)[order]
            counts = np.bincount(ordinal - 1, minlength=len(trips))
    offsets = np.zeros(len(trips) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return attach_imu(conn, PartitionData(devices, trip_ids, [str(r[2]) for r in trips],
                         [str(r[3]) for r in trips], [r[5] for r in trips], offsets, gps,
                         skipped_consent, skipped_label))


# --- computing -----------------------------------------------------------------------------

def compute_partition(data: PartitionData, now_s: float) -> PipelineResult:
    """The core's features and events of the partition's trips that have samples, in one
    call over the flat arrays (`trip` indexes those trips in order): the same pipeline as
    real-time scoring, with the IMU of the trips whose policy consented to motion data."""
    has = np.diff(data.offsets) > 0
    sel = np.flatnonzero(has)
    offsets = np.concatenate([[0], np.cumsum(np.diff(data.offsets)[sel])]).astype(np.int64)
    gps = data.gps
    columns = {"t_s": gps["t_us"] / 1e6, **{k: gps[k] for k in _GPS_FIELDS[1:]}}
    imu = imu_offsets = None
    if data.imu is not None and data.imu_offsets is not None:
        counts = np.diff(data.imu_offsets)[sel]
        picked = np.concatenate([np.arange(data.imu_offsets[k], data.imu_offsets[k + 1])
                                 for k in sel]) if sel.size else np.zeros(0, dtype=np.int64)
        imu = {k: v[picked] for k, v in data.imu.items()}
        imu_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return run_pipeline(columns, offsets, imu=imu, imu_offsets=imu_offsets,
                        time_zone=[data.time_zone[k] for k in sel], now_s=now_s,
                        phone_handling=np.asarray(data.phone_use, dtype=np.bool_)[sel])


def attach_imu(conn: psycopg.Connection[Any], data: PartitionData) -> PartitionData:
    """Add the IMU samples of the trips whose policy consented to motion data, and each
    trip's phone-use consent (the rules of real-time scoring)."""
    granted = {p: privacy_sql.scoring_categories(conn, p) for p in set(data.policy_id)}
    data.phone_use = ["phone_use" in granted[p] for p in data.policy_id]
    streams: list[dict[str, np.ndarray] | None] = []
    for k in range(data.n_trips):
        if "motion" in granted[data.policy_id[k]]:
            streams.append(read_samples(conn, IMU, data.device_id[k], data.trip_id[k]))
        else:
            streams.append(None)
    sizes = [0 if s is None else s["t_us"].size for s in streams]
    if not any(sizes):
        return data
    names = ("acc_x_mps2", "acc_y_mps2", "acc_z_mps2", "gyr_x_radps", "gyr_y_radps",
             "gyr_z_radps")
    present = [s for s in streams if s is not None and s["t_us"].size]
    flat = {"t_s": np.concatenate([s["t_us"] / 1e6 for s in present])}
    for name in names:
        flat[name] = np.concatenate([s[name] for s in present])
    for name in names[3:]:
        if not np.isfinite(flat[name]).all():
            del flat[name]  # the kernel takes a gyroscope whole or not at all
    data.imu = flat
    data.imu_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return data


# --- writing -------------------------------------------------------------------------------

_STAGING = (
    "CREATE TEMP TABLE recompute_keys (device_id text, trip_id text, status text,"
    " mode text, mode_confidence double precision) ON COMMIT DROP",
    "CREATE TEMP TABLE recompute_features (device_id text, trip_id text, policy_id text,"
    " started_us bigint, ended_us bigint, scored boolean, distance_m double precision,"
    " duration_s double precision, features jsonb) ON COMMIT DROP",
    "CREATE TEMP TABLE recompute_events (device_id text, trip_id text, event_no integer,"
    " kind text, severity text, start_us bigint, end_us bigint, peak_value double precision,"
    " speed_mps double precision, lat_deg double precision, lon_deg double precision)"
    " ON COMMIT DROP",
)


def _locked_unchanged(conn: psycopg.Connection[Any], data: PartitionData) -> list[int]:
    """Lock the partition's trips (as real-time scoring does) and return the indexes of
    those with no upload since they were read: a later upload has re-scored a trip from
    samples this partition did not see, and that score stands."""
    rows = conn.execute(
        "SELECT t.device_id, t.trip_id, t.last_upload_at, t.status FROM trips t"
        " JOIN unnest(%s::text[], %s::text[]) AS k(device_id, trip_id)"
        " ON t.device_id = k.device_id AND t.trip_id = k.trip_id"
        " ORDER BY t.device_id, t.trip_id FOR UPDATE OF t",
        (data.device_id, data.trip_id)).fetchall()
    now = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    return [k for k in range(data.n_trips)
            if now.get((data.device_id[k], data.trip_id[k]), (None, ""))[0]
            == data.last_upload_at[k] and now[(data.device_id[k], data.trip_id[k])][1] != "open"]


def _zone_offsets(conn: psycopg.Connection[Any], policy_ids: set[str]) -> dict[str, ZoneOffset]:
    rows = conn.execute("SELECT policy_id, offset_east_m, offset_north_m FROM privacy_keys"
                        " WHERE policy_id = ANY(%s)", (sorted(policy_ids),)).fetchall()
    found = {str(r[0]): ZoneOffset(float(r[1]), float(r[2])) for r in rows}
    for policy_id in sorted(policy_ids - set(found)):
        found[policy_id] = privacy_sql.zone_offset(conn, policy_id)
    return found


def _zone_radii(conn: psycopg.Connection[Any], data: PartitionData,
                keep: list[int]) -> dict[tuple[str, str], tuple[float, float]]:
    rows = conn.execute(
        "SELECT p.device_id, p.trip_id, p.zone_start_m, p.zone_end_m FROM trip_paths p"
        " JOIN unnest(%s::text[], %s::text[]) AS k(device_id, trip_id)"
        " ON p.device_id = k.device_id AND p.trip_id = k.trip_id",
        ([data.device_id[k] for k in keep], [data.trip_id[k] for k in keep])).fetchall()
    return {(str(r[0]), str(r[1])): (float(r[2]), float(r[3])) for r in rows}


def _nullable(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def write_partition(conn: psycopg.Connection[Any], data: PartitionData,
                    result: PipelineResult) -> tuple[int, int, int, int]:
    """Replace the features and events of the partition's trips, inside the caller's
    transaction: delete the trips' rows, insert the new ones by COPY through staging tables
    (so that times are converted exactly as `replace_features` converts them) and set each
    trip's status as real-time scoring does. Returns (trips written, events written, trips
    without samples, trips changed meanwhile)."""
    keep = _locked_unchanged(conn, data)
    changed = data.n_trips - len(keep)
    n_samples = np.diff(data.offsets)
    row_of = np.cumsum(n_samples > 0) - 1  # trip index -> row of `result`
    offsets = _zone_offsets(conn, {data.policy_id[k] for k in keep if n_samples[k] > 0})
    radii = _zone_radii(conn, data, keep)
    for statement in _STAGING:
        conn.execute(statement)
    features = result.features
    ev = result.events
    ev_bounds = np.searchsorted(ev["trip"].to_numpy(), np.arange(len(features) + 1))
    n_events = 0
    no_samples = 0
    with conn.cursor() as cur:
        key_rows: list[tuple[Any, ...]] = []
        feature_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        path_rows: list[tuple[Any, ...]] = []
        for k in keep:
            device_id, trip_id, policy_id = data.device_id[k], data.trip_id[k], data.policy_id[k]
            if n_samples[k] == 0:
                key_rows.append((device_id, trip_id, "unscored", None, None))
                no_samples += 1
                continue
            r = int(row_of[k])
            gps = data.trip_gps(k)
            trip_radii = radii.get((device_id, trip_id))
            if trip_radii is None:
                trip_radii = draw_zone_radii_m(offsets[policy_id])
            zones = TripZones.of_trip(gps["lat_deg"], gps["lon_deg"], offsets[policy_id],
                                      trip_radii)
            if (device_id, trip_id) not in radii:
                visible = (zones.visible(gps["lat_deg"], gps["lon_deg"]) if zones is not None
                           else np.zeros(gps["t_us"].size, dtype=np.bool_))
                speed = gps["speed_mps"][visible]
                path_rows.append((device_id, trip_id, policy_id,
                                  (gps["t_us"][visible] / 1e6).tolist(),
                                  gps["lat_deg"][visible].tolist(),
                                  gps["lon_deg"][visible].tolist(),
                                  np.where(np.isfinite(speed), speed, 0.0).tolist(),
                                  trip_radii[0], trip_radii[1]))
            a, b = int(ev_bounds[r]), int(ev_bounds[r + 1])
            out = trip_outcome(features.iloc[r], ev.iloc[a:b], zones)
            event_rows.extend(
                (device_id, trip_id, i, e["kind"], e["severity"], e["start_us"], e["end_us"],
                 e["peak_value"], e["speed_mps"], e["lat_deg"], e["lon_deg"])
                for i, e in enumerate(out.events))
            n_events += len(out.events)
            feature_rows.append((device_id, trip_id, policy_id, int(gps["t_us"][0]),
                                 int(gps["t_us"][-1]), out.scored, out.distance_m,
                                 out.duration_s, Jsonb(out.features)))
            key_rows.append((device_id, trip_id, out.status, out.mode, out.mode_confidence))
        for table, rows in (("recompute_keys", key_rows), ("recompute_features", feature_rows),
                            ("recompute_events", event_rows)):
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        if path_rows:
            with cur.copy("COPY trip_paths (device_id, trip_id, policy_id, t_s, lat_deg,"
                          " lon_deg, speed_mps, zone_start_m, zone_end_m) FROM STDIN") as copy:
                for values in path_rows:
                    copy.write_row(values)
        cur.execute("DELETE FROM events e USING recompute_features k"
                    " WHERE e.device_id = k.device_id AND e.trip_id = k.trip_id")
        cur.execute("DELETE FROM trip_features f USING recompute_features k"
                    " WHERE f.device_id = k.device_id AND f.trip_id = k.trip_id")
        cur.execute(
            "INSERT INTO trip_features (device_id, trip_id, policy_id, started_at, ended_at,"
            " scored, distance_m, duration_s, features, code_version)"
            " SELECT device_id, trip_id, policy_id, to_timestamp(started_us / 1e6),"
            " to_timestamp(ended_us / 1e6), scored, distance_m, duration_s, features, %s"
            " FROM recompute_features", (CODE_VERSION,))
        cur.execute(
            "INSERT INTO events (device_id, trip_id, event_no, kind, severity, start_at,"
            " end_at, peak_value, speed_mps, lat_deg, lon_deg)"
            " SELECT device_id, trip_id, event_no, kind, severity, to_timestamp(start_us / 1e6),"
            " to_timestamp(end_us / 1e6), peak_value, speed_mps, lat_deg, lon_deg"
            " FROM recompute_events")
        cur.execute(
            "UPDATE trips t SET status = k.status,"
            " transport_mode = COALESCE(k.mode, t.transport_mode),"
            " mode_confidence = COALESCE(k.mode_confidence, t.mode_confidence)"
            " FROM recompute_keys k WHERE t.device_id = k.device_id AND t.trip_id = k.trip_id")
    return len(keep) - no_samples, n_events, no_samples, changed


def recompute_partition(database_url: str, part: Partition, *, now_s: float,
                        include_labelled: bool = False) -> PartitionResult:
    """Recompute one partition on its own connection: read, compute, replace in one
    transaction. Safe to run again, and to die half way: nothing is written until commit."""
    t0 = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        data = read_partition(conn, part, include_labelled=include_labelled)
        conn.commit()
        t1 = time.perf_counter()
        result = compute_partition(data, now_s)
        t2 = time.perf_counter()
        with conn.transaction():
            trips, events, no_samples, changed = write_partition(conn, data, result)
        t3 = time.perf_counter()
    return PartitionResult(trips=trips, points=int(data.offsets[-1]), events=events,
                           no_samples=no_samples, changed=changed,
                           skipped_consent=data.skipped_consent,
                           skipped_label=data.skipped_label, read_s=t1 - t0,
                           compute_s=t2 - t1, write_s=t3 - t2)


# --- the job -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecomputeSummary:
    mode: str
    n_workers: int
    partitions: int
    failed: list[str]
    trips: int
    points: int
    events: int
    no_samples: int
    changed: int
    skipped_consent: int
    skipped_label: int
    elapsed_s: float
    points_per_s: float
    dashboard: str | None
    read_s: float  # summed over partitions: time in the database read, the core, the write
    compute_s: float
    write_s: float


def summarize(report: RunReport[PartitionResult], n_partitions: int) -> RecomputeSummary:
    results = list(report.results.values())

    def total(name: str) -> int:
        return sum(int(getattr(r, name)) for r in results)

    points = total("points")
    return RecomputeSummary(
        mode=report.mode, n_workers=report.n_workers, partitions=n_partitions,
        failed=[f.name for f in report.failures], trips=total("trips"), points=points,
        events=total("events"), no_samples=total("no_samples"), changed=total("changed"),
        skipped_consent=total("skipped_consent"), skipped_label=total("skipped_label"),
        elapsed_s=round(report.elapsed_s, 3),
        points_per_s=round(points / report.elapsed_s, 1) if report.elapsed_s > 0 else 0.0,
        dashboard=report.dashboard,
        **{name: round(sum(float(getattr(r, name)) for r in results), 3)
           for name in ("read_s", "compute_s", "write_s")})


def recompute(database_url: str, since: datetime, until: datetime, *,
              scheduler: str | None = None, n_workers: int | None = None,
              local: bool | None = None, include_labelled: bool = False,
              points_per_partition: int = DEFAULT_PARTITION_POINTS,
              window: timedelta = DEFAULT_WINDOW, retries: int = 1, progress: bool = True,
              now_s: float | None = None) -> tuple[RunReport[PartitionResult], list[Partition]]:
    """Recompute the features of every trip that starts in [since, until).

    With `scheduler` the partitions run on that Dask cluster; with `local` on a LocalCluster
    of `n_workers` processes (default: one per core); with `local=None` (the default) on a
    LocalCluster only when the job is large, else in this process. `now_s` (default: the
    clock at the start) is the one "now" every partition uses, so a retry computes the same.
    """
    since, until = _utc(since, "since"), _utc(until, "until")
    with psycopg.connect(database_url) as conn:
        parts = plan_partitions(conn, since, until, points_per_partition=points_per_partition,
                                window=window)
    if local is None:
        local = scheduler is None and (n_workers is not None or (
            len(parts) > 1 and sum(p.n_points for p in parts) > SINGLE_PROCESS_POINTS))
    work = partial(recompute_partition, database_url,
                   now_s=time.time() if now_s is None else float(now_s),
                   include_labelled=include_labelled)
    report = run_partitions(work, parts, name=lambda p: p.name, scheduler=scheduler,
                            n_workers=n_workers, local=local, retries=retries,
                            progress=progress, desc="features")
    return report, parts


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone; give one, e.g. 2026-11-01T00:00:00+00:00")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _recompute_command(args: argparse.Namespace) -> int:
    from telematics.store.provision import database_url

    if args.until <= args.since:
        print("ubi: --until must be after --since", file=sys.stderr)
        return 2
    local: bool | None = True if args.local or args.workers else None
    if args.single_process:
        if args.scheduler or local:
            print("ubi: --single-process excludes --scheduler, --local and --workers",
                  file=sys.stderr)
            return 2
        local = False
    report, parts = recompute(
        database_url(), args.since, args.until, scheduler=args.scheduler,
        n_workers=args.workers, local=local, include_labelled=args.include_labelled,
        points_per_partition=args.partition_points,
        window=timedelta(days=args.window_days), retries=args.retries,
        progress=not args.quiet)
    print(json.dumps(asdict(summarize(report, len(parts))), indent=2))
    if not report.ok:
        print(report.failure_report(), file=sys.stderr)
        return 1
    return 0


def register(jobs: Any) -> None:
    """Add the `features` job and its commands to the `ubi` parser."""
    features = jobs.add_parser("features", help="recompute trip features from stored samples",
                               description="Batch feature recomputation (single process or Dask).")
    commands = features.add_subparsers(dest="command", metavar="COMMAND", required=True)
    text = ("recompute the features and events of the trips that start in [since, until) "
            "from their stored GPS samples")
    rec = commands.add_parser(
        "recompute", help=text,
        description=text[0].upper() + text[1:] + ". Trips of policies without location "
        "consent, open trips and (unless --include-labelled) trips labelled passenger, "
        "transit or not-me are left alone. Re-running is safe: a partition replaces its "
        "trips' rows. Prints a JSON summary; exits 1 naming the partitions that failed.")
    rec.add_argument("--since", type=_parse_time, required=True,
                     help="first trip start time, ISO 8601 with zone")
    rec.add_argument("--until", type=_parse_time, required=True,
                     help="end (exclusive) of trip start times, ISO 8601 with zone")
    rec.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on this Dask scheduler, e.g. tcp://10.0.0.5:8786")
    rec.add_argument("--workers", type=_positive_int, metavar="N",
                     help="run on a LocalCluster of N worker processes")
    rec.add_argument("--local", action="store_true",
                     help="run on a LocalCluster sized to this machine (one worker per core)")
    rec.add_argument("--single-process", action="store_true",
                     help="run in this process without Dask (the default for jobs under "
                          f"{SINGLE_PROCESS_POINTS:,} GPS samples)")
    rec.add_argument("--partition-points", type=_positive_int, default=DEFAULT_PARTITION_POINTS,
                     metavar="N", help="GPS samples per partition (default %(default)s)")
    rec.add_argument("--window-days", type=float, default=DEFAULT_WINDOW.days,
                     help="start-time window of one partition in days (default %(default)s)")
    rec.add_argument("--retries", type=_count, default=1,
                     help="retries of a failed partition (default %(default)s)")
    rec.add_argument("--include-labelled", action="store_true",
                     help="also recompute trips labelled passenger, transit or not-me")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(handler=_recompute_command)
