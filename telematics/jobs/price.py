"""`ubi price ...`: calibrate, publish, reprice, replay and validate against the database.

Every command prints one JSON document on stdout and returns 0 on success, 1 when a
replay finds a difference, 2 on bad input (the message on stderr names the field).
Every command connects as the pricing role ubi_pricing, which cannot read raw samples.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from pricing.plan import DEFAULT_PLAN_PATH, Plan, PlanError, load_plan
from pricing.rating import RatingInputError

DESCRIPTION = """\
Rating on the database: calibrate a plan on claims, publish it (plans are immutable and
versioned as <plan_id>-v<version>), reprice a period into stored premiums with their
breakdowns and audit records, replay stored premiums to the cent, validate a plan.
"""

_BATCH_POLICIES = 5_000


def _url(args: argparse.Namespace) -> str:
    """The pricing side's connection: --database-url as the role ubi_pricing, else
    `UBI_PRICING_DATABASE_URL` or the main database as that role."""
    from telematics.store.provision import as_pricing_role, pricing_database_url

    if args.database_url:
        return as_pricing_role(str(args.database_url))
    return pricing_database_url()


def _connect(args: argparse.Namespace) -> psycopg.Connection[Any]:
    from telematics.store.privacy import connect_pricing

    return connect_pricing(_url(args))


def _emit(document: dict[str, Any]) -> None:
    from telematics.rating import json_dump

    sys.stdout.write(json_dump(document) + "\n")


def _read_table(path: str) -> pd.DataFrame:
    from pricing.cli import read_table
    from telematics.rating import from_simulator_layout, is_simulator_layout

    frame = read_table(path)
    return from_simulator_layout(frame) if is_simulator_layout(frame) else frame


def _plan_argument(conn: psycopg.Connection[Any] | None, text: str) -> Plan:
    """A published plan key, or a plan file (a path ending in .json)."""
    if text.endswith(".json"):
        return load_plan(text)
    if conn is None:
        raise PlanError(f"version: {text!r} is not a .json file and no database is open")
    from telematics.rating import load_published_plan

    return load_published_plan(conn, text)


def _periods(texts: Sequence[str]) -> list[tuple[date, date]]:
    from telematics.rating import month_period

    return [month_period(text) for text in texts]


def _policies(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.startswith("@"):
        ids = [line.strip() for line in Path(text[1:]).read_text(encoding="utf-8").splitlines()]
    else:
        ids = [part.strip() for part in text.split(",")]
    ids = [i for i in ids if i]
    if not ids:
        raise RatingInputError("--policies: no policy id given")
    return ids


def _claims_from_db(conn: psycopg.Connection[Any], plan: Plan, periods: list[tuple[date, date]]) -> pd.DataFrame:
    """Calibration rows from the database: each period's rating inputs plus the claims that
    occurred in it (count and total amount)."""
    from telematics.rating import rating_inputs

    frames = []
    for start, end in periods:
        frame = rating_inputs(conn, start, end, plan=plan)
        claims = conn.execute(
            "SELECT c.policy_id, count(*), sum(c.amount)::float8 FROM claims c JOIN policies p USING (policy_id)"
            " WHERE c.occurred_at >= (%s::date::timestamp AT TIME ZONE p.time_zone)"
            " AND c.occurred_at < (%s::date::timestamp AT TIME ZONE p.time_zone) GROUP BY c.policy_id",
            (start, end)).fetchall()
        by_policy = pd.DataFrame(claims, columns=["policy_id", "claim_count", "claim_amount"])
        frame = frame.merge(by_policy, on="policy_id", how="left")
        frame["claim_count"] = frame["claim_count"].fillna(0).astype("int64")
        frame["claim_amount"] = frame["claim_amount"].fillna(0.0)
        frames.append(frame.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"]))
    return pd.concat(frames, ignore_index=True)


def _calibrate(args: argparse.Namespace) -> int:
    from pricing.glm import calibrate
    from telematics.rating import fit_template, publish_plan

    if args.data is None and not args.from_db:
        raise RatingInputError("--data/--from-db: give a policy-level file, --from-db, or both")
    conn = _connect(args) if (args.from_db or args.publish or not args.template.endswith(".json")) else None
    try:
        template = _plan_argument(conn, args.template)
        parts = []
        if args.data is not None:
            parts.append(_read_table(args.data))
        if args.from_db:
            assert conn is not None
            if not args.period:
                raise RatingInputError("--period: --from-db needs at least one --period YYYY-MM")
            parts.append(_claims_from_db(conn, template, _periods(args.period)))
        data = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        fitted_template, dropped = fit_template(template, data, relevel=args.relevel)
        result = calibrate(data, fitted_template, method=args.method, target_loss_ratio=args.target_loss_ratio,
                           rebin=args.rebin)
        result.plan.save(args.out)
        published = None
        if args.publish:
            assert conn is not None
            published = publish_plan(conn, result.plan, actor="ubi price calibrate")
            conn.commit()
    finally:
        if conn is not None:
            conn.close()
    _emit({"plan": str(args.out), "plan_sha256": result.plan.sha256, "version": result.plan.version,
           "published": published, "rows_used": result.n_rows_used,
           "rows_without_telematics": result.n_rows_without_telematics,
           "behaviours_not_in_data": dropped, "credibility_k_km": result.plan.credibility.k_km,
           "base_rate_per_year": str(result.plan.base_rate_per_year)})
    return 0


def _publish(args: argparse.Namespace) -> int:
    from telematics.rating import publish_plan

    plan = load_plan(args.plan_file)
    with _connect(args) as conn:
        key = publish_plan(conn, plan, actor="ubi price publish")
    _emit({"published": key, "sha256": plan.sha256, "parent_sha256": plan.parent_sha256})
    return 0


def _reprice(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from telematics.rating import (
        coaching_targets,
        finish_run,
        plan_in_force,
        plan_key,
        policies_in_force,
        reprice_partition,
        reprice_period,
    )
    from telematics.store.privacy import connect_pricing

    start, end = _periods([args.period])[0]
    url = _url(args)
    requested = _policies(args.policies)
    with connect_pricing(url) as conn:
        plan = _plan_argument(conn, args.plan) if args.plan else plan_in_force(conn)
        key = plan_key(plan)
        if requested is None and args.batch_size <= 0:
            written = reprice_period(conn, plan, start, end, actor="ubi price reprice")
            conn.commit()
            _emit({"plan_version": key, "period_start": start.isoformat(), "period_end": end.isoformat(),
                   "premiums_written": written})
            return 0
        ids = requested if requested is not None else policies_in_force(conn, start, end)
        from telematics.rating import publish_plan

        publish_plan(conn, plan, actor="ubi price reprice")
        if requested is None:
            # Every batch coaches towards the whole portfolio's medians, stored once.
            coaching_targets(conn, plan, start, end)
        conn.commit()
    size = args.batch_size if args.batch_size > 0 else len(ids)
    if args.scheduler or args.workers:
        from telematics.jobs.partitions import reprice_on_dask

        report = reprice_on_dask(url, key, start, end, scheduler=args.scheduler,
                                 n_workers=args.workers or 2, partition_size=max(size, 1),
                                 policy_ids=requested)
        if not report.ok:
            print(report.failure_report(), file=sys.stderr)
            return 1
        _emit({"plan_version": key, "period_start": start.isoformat(),
               "period_end": end.isoformat(), "premiums_written": sum(report.results.values()),
               "policies_requested": len(ids), "ran_on": report.mode,
               "dashboard": report.dashboard})
        return 0
    written = 0
    with tqdm(total=len(ids), unit="policy", desc=f"reprice {key} {args.period}", disable=None,
              file=sys.stderr) as bar:
        for first in range(0, len(ids), max(size, 1)):
            batch = ids[first:first + size]
            written += reprice_partition(url, key, start, end, batch)
            bar.update(len(batch))
    if requested is None:
        with connect_pricing(url) as conn:
            finish_run(conn, plan, start, end)
    _emit({"plan_version": key, "period_start": start.isoformat(), "period_end": end.isoformat(),
           "premiums_written": written, "policies_requested": len(ids)})
    return 0


def _replay(args: argparse.Namespace) -> int:
    from telematics.rating import replay_stored

    start = end = None
    if args.period:
        start, end = _periods([args.period])[0]
    with _connect(args) as conn:
        result = replay_stored(conn, period_start=start, period_end=end, plan_version=args.plan, kind=args.kind)
    _emit(result.to_dict())
    for row in result.problems.head(50).to_dict("records"):
        sys.stderr.write(f"price replay: premium {row['premium_id']} of policy {row['policy_id']}: "
                         f"{row['field']} stored {row['stored']} != replayed {row['replayed']}\n")
    return 0 if result.ok else 1


def _validate(args: argparse.Namespace) -> int:
    from pricing.validate import validate

    data = _read_table(args.data)
    if args.plan.endswith(".json"):
        plan = load_plan(args.plan)
    else:
        with _connect(args) as conn:
            plan = _plan_argument(conn, args.plan)
    _emit(validate(data, plan).to_dict())
    return 0


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from telematics.rating import PricingError
        from telematics.store.privacy import PricingRoleError

        try:
            return int(handler(args))
        except (PlanError, RatingInputError, PricingError, PricingRoleError, FileExistsError,
                FileNotFoundError) as error:
            sys.stderr.write(f"ubi price {args.command}: {error}\n")
            return 2
        except ValueError as error:
            sys.stderr.write(f"ubi price {args.command}: {error}\n")
            return 2
    return run


def register(jobs: Any) -> None:
    """Add the `price` job and its commands to the `ubi` parser."""
    price = jobs.add_parser("price", help="calibrate, reprice, replay and validate premiums",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = price.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, text: str, handler: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("--database-url", help="database to use, connected to as the role ubi_pricing (default: "
                                                "UBI_PRICING_DATABASE_URL, else UBI_DATABASE_URL or the local "
                                                "cluster as ubi_pricing)")
        sub.set_defaults(handler=_run(handler))
        return sub

    calibrate = command("calibrate", "fit a new plan version on claims from a policy-level file and/or the "
                                     "database, write it to --out and optionally publish it", _calibrate)
    calibrate.add_argument("--data", help="policy periods with claim_count and claim_amount (.parquet or .csv), "
                                          "in the rating input layout or as `ubi simulate --policy-level` writes")
    calibrate.add_argument("--from-db", action="store_true",
                           help="add the database's policy periods (--period) with their claims")
    calibrate.add_argument("--period", action="append", default=[], help="a month YYYY-MM for --from-db (repeat)")
    calibrate.add_argument("--out", required=True, help="the new plan file (never overwritten)")
    calibrate.add_argument("--template", default=str(DEFAULT_PLAN_PATH),
                           help="plan to start from: a .json file or a published version (default: the default plan)")
    calibrate.add_argument("--method", choices=["frequency_severity", "tweedie"], default="frequency_severity")
    calibrate.add_argument("--target-loss-ratio", type=float, default=0.7, help="default 0.7")
    calibrate.add_argument("--rebin", type=int, default=None, help="re-derive behaviour bins at n quantiles")
    calibrate.add_argument("--relevel", action="store_true",
                           help="take each a priori factor's levels from the data (e.g. the simulator's regions)")
    calibrate.add_argument("--publish", action="store_true", help="also publish the new plan into the database")

    publish = command("publish", "publish a plan file into the database (a no-op if already published; "
                                 "a different plan under a taken version is refused)", _publish)
    publish.add_argument("plan_file", metavar="PLAN.json")

    reprice = command("reprice", "price every policy in force in a month (or some) and store premiums, "
                                 "breakdowns and audit records; re-running replaces", _reprice)
    reprice.add_argument("--plan", help="published version (e.g. default-v1) or a .json file (published first); "
                                        "default: the plan in force")
    reprice.add_argument("--period", required=True, help="the month YYYY-MM")
    reprice.add_argument("--policies", help="comma-separated policy ids, or @FILE with one id per line")
    reprice.add_argument("--batch-size", type=int, default=_BATCH_POLICIES,
                         help=f"policies per transaction (default {_BATCH_POLICIES}; 0 = all in one)")
    reprice.add_argument("--scheduler", help="run the batches on this Dask scheduler (tcp://host:port)")
    reprice.add_argument("--workers", type=int,
                         help="run the batches on a local Dask cluster of this many workers")

    replay = command("replay", "recompute stored premiums from their stored inputs and plan; exit 1 on any "
                               "cent of difference and name the premium", _replay)
    replay.add_argument("--period", help="only premiums within this month YYYY-MM")
    replay.add_argument("--plan", help="only premiums of this published version")
    replay.add_argument("--kind", choices=["period", "provisional"], help="only this kind of premium")

    validate = command("validate", "Gini, lift, O/E, deviance and fairness of a plan on held-out claims", _validate)
    validate.add_argument("--plan", required=True, help="published version or a .json plan file")
    validate.add_argument("--data", required=True, help="policy periods with claim_count and claim_amount")
