"""File-based pricing commands: ``price calibrate | validate | reprice | replay``.

``main(argv)`` takes the arguments after ``price`` (e.g. ``["replay", "--records", f]``)
and returns the process exit code: 0 on success, 1 when a replay finds a difference,
2 on bad input. Results go to stdout as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pricing.audit import audit_records, read_records, replay, write_records
from pricing.breakdown import price_with_breakdown
from pricing.glm import calibrate
from pricing.plan import DEFAULT_PLAN_PATH, PlanError, load_plan
from pricing.rating import RatingInputError
from pricing.validate import validate


def read_table(path: str | Path) -> pd.DataFrame:
    """A policy-period table from Parquet (.parquet) or CSV (.csv)."""
    source = Path(path)
    if source.suffix == ".parquet":
        return pd.read_parquet(source)
    if source.suffix == ".csv":
        return pd.read_csv(source)
    raise ValueError(f"{source}: expected a .parquet or .csv file")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="price", description="Rating plans: calibrate, validate, reprice, replay.")
    commands = parser.add_subparsers(dest="command", required=True)

    calibrate_cmd = commands.add_parser("calibrate", help="fit a new plan version on claims data")
    calibrate_cmd.add_argument("--data", required=True, help="policy periods with claim_count and claim_amount")
    calibrate_cmd.add_argument("--out", required=True, help="new plan file (never overwritten)")
    calibrate_cmd.add_argument("--template", default=str(DEFAULT_PLAN_PATH), help="plan to start from")
    calibrate_cmd.add_argument("--method", choices=["frequency_severity", "tweedie"], default="frequency_severity")
    calibrate_cmd.add_argument("--target-loss-ratio", type=float, default=0.7)
    calibrate_cmd.add_argument("--rebin", type=int, default=None, help="re-derive behaviour bins at n quantiles")

    validate_cmd = commands.add_parser("validate", help="Gini, lift, O/E, deviance and fairness on held-out data")
    validate_cmd.add_argument("--plan", required=True)
    validate_cmd.add_argument("--data", required=True)

    reprice_cmd = commands.add_parser("reprice", help="price policy periods and write audit records")
    reprice_cmd.add_argument("--plan", required=True)
    reprice_cmd.add_argument("--data", required=True)
    reprice_cmd.add_argument("--records", required=True, help="audit records file to write")

    replay_cmd = commands.add_parser("replay", help="recompute stored premiums; fail on any cent of difference")
    replay_cmd.add_argument("--records", required=True)
    return parser


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "calibrate":
            result = calibrate(read_table(args.data), load_plan(args.template), method=args.method,
                               target_loss_ratio=args.target_loss_ratio, rebin=args.rebin)
            result.plan.save(args.out)
            fitted = {"frequency": result.frequency, "severity": result.severity, "pure_premium": result.pure_premium}
            _emit({
                "coefficients": {
                    name: [{"term": str(term), "coef": float(model.coef_[term]), "std_error": float(model.std_errors_[term])}
                           for term in model.coef_.index]
                    for name, model in fitted.items() if model is not None
                },
                "plan": str(args.out), "plan_sha256": result.plan.sha256, "version": result.plan.version,
                "parent_sha256": result.plan.parent_sha256, "rows_used": result.n_rows_used,
                "rows_without_telematics": result.n_rows_without_telematics,
                "credibility_k_km": result.plan.credibility.k_km,
            })
            return 0
        if args.command == "validate":
            _emit(validate(read_table(args.data), load_plan(args.plan)).to_dict())
            return 0
        if args.command == "reprice":
            plan = load_plan(args.plan)
            policies = read_table(args.data)
            explained = price_with_breakdown(policies, plan)
            write_records(args.records, [plan], audit_records(policies, plan, explained))
            _emit({"records": str(args.records), "policies": len(policies), "plan_sha256": plan.sha256,
                   "total_premium_cents": int(explained["premium_cents"].sum())})
            return 0
        report = replay(read_records(args.records))
        _emit(report.to_dict())
        return 0 if report.ok else 1
    except (PlanError, RatingInputError, ValueError, FileExistsError, FileNotFoundError) as error:
        sys.stderr.write(f"price {args.command}: {error}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
