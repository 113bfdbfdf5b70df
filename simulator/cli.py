"""``ubi simulate``: synthetic drivers to wire-format uploads plus truth, or policy-level rows."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from simulator.claims import simulate_policies, true_coefficients
from simulator.simulation import DEFAULT_START_DATE, generate
from simulator.wire import DEFAULT_BATCH_S, WIRE_VERSION, write, write_parquet

DESCRIPTION = """\
Simulate policyholders with known ground truth.

Trace mode (default) writes what phones and OBD dongles would upload, in the ingest wire
format (docs/WIRE_FORMAT.md), plus the truth as Parquet:

  DIR/manifest.json, DIR/phone/<device>/<trip>.bNNN.json, DIR/obd/<device>/<feed>.json,
  DIR/delivery_plan.parquet (late, out-of-order and repeated arrivals),
  DIR/truth/{drivers,trips,events,claims,coefficients,obd_feeds}.parquet

Policy-level mode (--policy-level) writes one row per policy period without traces:
exposure, classical factors, true and observed behaviour, claim counts and amounts:

  DIR/manifest.json, DIR/policies.parquet, DIR/truth/coefficients.parquet

The same seed gives byte-identical output.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``simulate``, for a stand-alone parser or a ``ubi`` subcommand."""
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--drivers", type=int, default=100, help="trace mode: drivers (default 100)")
    parser.add_argument("--days", type=int, default=7, help="trace mode: local days (default 7)")
    parser.add_argument("--start-date", type=dt.date.fromisoformat, default=DEFAULT_START_DATE,
                        help=f"trace mode: first local day (default {DEFAULT_START_DATE})")
    parser.add_argument("--imu-hz", type=int, default=25, help="phone IMU rate in Hz (default 25)")
    parser.add_argument("--no-imu", action="store_true", help="do not simulate the phone IMU")
    parser.add_argument("--batch-s", type=float, default=DEFAULT_BATCH_S,
                        help=f"seconds of recording per phone upload (default {DEFAULT_BATCH_S:.0f})")
    parser.add_argument("--policy-level", action="store_true",
                        help="write policy-period rows instead of traces")
    parser.add_argument("--policies", type=int, default=100_000,
                        help="policy-level mode: number of policies (default 100000)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    started = time.perf_counter()
    if args.policy_level:
        if args.policies < 1:
            raise SystemExit("--policies must be at least 1")
        policies = simulate_policies(args.policies, args.seed)
        (out / "truth").mkdir(parents=True, exist_ok=True)
        write_parquet(policies, out / "policies.parquet")
        write_parquet(true_coefficients(), out / "truth" / "coefficients.parquet")
        manifest = {"format": WIRE_VERSION, "mode": "policy-level", "seed": args.seed,
                    "n_policies": args.policies}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        summary = f"{args.policies} policy periods"
    else:
        if args.drivers < 1 or args.days < 1:
            raise SystemExit("--drivers and --days must be at least 1")
        result = generate(args.drivers, args.days, args.seed, imu=not args.no_imu,
                          imu_hz=args.imu_hz, start_date=args.start_date)
        write(result, out, batch_s=args.batch_s)
        summary = (f"{len(result.drivers)} drivers, {len(result.trips)} trips, "
                   f"{int(result.gps.offsets[-1])} GPS fixes")
    print(f"simulated {summary} into {out} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` are the arguments after ``ubi simulate``."""
    parser = argparse.ArgumentParser(prog="ubi simulate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
