"""The `ubi` command line: database, simulation, service, pricing and the demo, by job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _db_up(args: argparse.Namespace) -> int:
    from telematics.store.provision import up

    up()
    return 0


def _db_down(args: argparse.Namespace) -> int:
    import os

    from telematics.store.provision import local_cluster, say, stop_cluster

    if os.environ.get("UBI_DATABASE_URL"):
        say("UBI_DATABASE_URL names an external server: nothing of ours to stop")
        return 0
    cluster = local_cluster()
    if stop_cluster(cluster):
        say(f"stopped the private cluster in {cluster.data_dir}")
    else:
        say("the private cluster is not running")
    return 0


def _db_status(args: argparse.Namespace) -> int:
    from telematics.store.provision import status

    info = status()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0 if info.get("running", "yes") == "yes" else 1


def _db_migrate(args: argparse.Namespace) -> int:
    from telematics.store.migrate import migrate
    from telematics.store.provision import database_url, say

    applied = migrate(database_url())
    say(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from telematics.store.provision import say

    say(f"serving the API on http://{args.host}:{args.port} (OpenAPI at /docs)")
    uvicorn.run("telematics.service.app:create_app", factory=True, host=args.host,
                port=args.port, log_level=args.log_level, access_log=False,
                workers=args.workers)
    return 0


def _token_create(args: argparse.Namespace) -> int:
    import psycopg

    from telematics.store.access import create_staff_token
    from telematics.store.provision import database_url

    with psycopg.connect(database_url()) as conn:
        token = create_staff_token(conn, args.name, args.scope)
    print(token)
    return 0


def _positive_days(text: str) -> int:
    days = int(text)
    if days < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 day, got {days}")
    return days


def _maintenance(args: argparse.Namespace) -> int:
    from datetime import datetime

    from telematics.maintenance import RetentionPolicy, run_maintenance
    from telematics.store.provision import database_url

    now = datetime.fromisoformat(args.now) if args.now else None
    if now is not None and now.tzinfo is None:
        print("ubi: --now needs a time zone, e.g. 2026-11-23T00:00:00+00:00", file=sys.stderr)
        return 2
    raw_days = args.raw_days or RetentionPolicy.from_env().raw_days
    report = run_maintenance(database_url(), now=now, retention=RetentionPolicy(
        raw_days=raw_days, legal_years_after_end=args.legal_years))
    print(json.dumps(report, indent=2))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from simulator.cli import run

    return int(run(args))


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from telematics.demo import DemoOptions, print_summary, run_demo

    summary = run_demo(DemoOptions(drivers=args.drivers, days=args.days,
                                   policies=args.policies, seed=args.seed, imu=args.imu,
                                   clients=args.clients, fresh=args.fresh, out=Path(args.out)))
    print_summary(summary, "http://127.0.0.1:8000/workbench")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ubi",
        description="Pay-as-you-live motor insurance: telematics ingest, features and pricing.",
    )
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)

    db = jobs.add_parser("db", help="provision, migrate and inspect the TimescaleDB store",
                         description="Provision, migrate and inspect the project's TimescaleDB.")
    db_cmds = db.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: list[tuple[str, str, Handler]] = [
        ("up", "make a migrated TimescaleDB available (builds and starts a private one if "
               "UBI_DATABASE_URL is unset); safe to run again", _db_up),
        ("down", "stop the project's private PostgreSQL cluster", _db_down),
        ("status", "report server version, extension version, port and data folder", _db_status),
        ("migrate", "apply pending numbered SQL migrations (a no-op when up to date)",
         _db_migrate),
    ]
    for name, text, handler in commands:
        sub = db_cmds.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(handler=handler)

    serve = jobs.add_parser("serve", help="run the HTTP API (uploads, reads, review)",
                            description="Run the FastAPI service with uvicorn against the "
                                        "project's database.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (default 1; one per core for heavy upload load)")
    serve.set_defaults(handler=_serve)

    tokens = jobs.add_parser("tokens", help="issue staff tokens for underwriters and admins",
                             description="Issue bearer tokens for staff endpoints.")
    token_cmds = tokens.add_subparsers(dest="command", metavar="COMMAND", required=True)
    create = token_cmds.add_parser("create", help="create a token and print it once",
                                   description="Create a staff token; it is printed once and "
                                               "stored only as a hash.")
    create.add_argument("--name", required=True, help="who the token is for")
    create.add_argument("--scope", action="append", choices=["underwriter", "admin"],
                        required=True, help="a scope to grant (repeat for several)")
    create.set_defaults(handler=_token_create)

    maint = jobs.add_parser("maintenance", help="apply retention: drop old raw samples, expire "
                                                "idempotency records, erase ended policies",
                            description="Retention and housekeeping; safe to run at any time "
                                        "(schedule it daily).")
    maint.add_argument("--raw-days", type=_positive_days, default=None,
                       help="keep raw GPS/IMU/OBD samples this many days (default: "
                            "UBI_RETENTION_DAYS, the window uploads are checked against, 90 "
                            "if unset)")
    maint.add_argument("--legal-years", type=int, default=7,
                       help="years after a policy ends before its data is erased (default 7)")
    maint.add_argument("--now", help="act as if it were this time (ISO 8601 with zone)")
    maint.set_defaults(handler=_maintenance)

    from simulator.cli import DESCRIPTION as SIMULATE_DESCRIPTION
    from simulator.cli import add_arguments as simulate_arguments

    simulate = jobs.add_parser("simulate", help="generate synthetic drivers, uploads and truth",
                               description=SIMULATE_DESCRIPTION,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    simulate_arguments(simulate)
    simulate.set_defaults(handler=_simulate)

    from telematics.jobs import features as features_job
    from telematics.jobs import price as price_job

    price_job.register(jobs)
    features_job.register(jobs)

    demo = jobs.add_parser(
        "demo", help="run the platform end to end on synthetic data",
        description="Simulate drivers, upload every trip through the real service, score, "
                    "calibrate a plan on simulated claims, reprice every policy, compare with "
                    "the simulator's truth and write a report (reports/demo/). The database "
                    "holds one demo data set at a time (ids 'demo-...'; options and API keys "
                    "in .ubi/demo/). Run again with the same --drivers, --days, --seed and "
                    "--imu, on any later day, and it re-uses that data set: the same "
                    "simulated days, posted again, which the service answers as retries or "
                    "finds already stored, so nothing counts twice. Other options, a data "
                    "set older than the raw samples' retention (UBI_RETENTION_DAYS, 90 by "
                    "default) or a database without its devices replace the demo's data "
                    "with a new data set ending today; --fresh always does. Progress bars "
                    "go to stderr, the summary to stdout.")
    demo.add_argument("--drivers", type=int, default=100, help="traced drivers (default 100)")
    demo.add_argument("--days", type=int, default=7, help="days of driving (default 7)")
    demo.add_argument("--policies", type=int, default=50_000,
                      help="policy-level rows to calibrate on (default 50000)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument("--imu", action="store_true",
                      help="also simulate and upload the phones' 25 Hz IMU (much more data)")
    demo.add_argument("--clients", type=int, default=8, help="concurrent upload clients")
    demo.add_argument("--fresh", action="store_true",
                      help="remove the demo's data first and simulate the days up to today")
    demo.add_argument("--out", default="reports/demo", help="report folder")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from telematics.store.provision import ProvisionError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ProvisionError as exc:
        print(f"ubi: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
