"""The `ubi` command line: every command documents itself; `ubi simulate` is wired in."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from telematics.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser,
              path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_command_says_what_it_does() -> None:
    commands = list(_commands(build_parser()))
    assert {("db", "up"), ("simulate",), ("serve",), ("price",), ("demo",)} <= {
        p for p, _ in commands}
    for path, parser in commands:
        text = parser.format_help()
        assert parser.description, f"ubi {' '.join(path)} has no description"
        assert "usage: ubi" in text


def test_simulate_policy_level_through_ubi(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    assert main(["simulate", "--policy-level", "--policies", "2000", "--seed", "3",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "policy-level" and manifest["n_policies"] == 2000
    assert len(pd.read_parquet(out / "policies.parquet")) == 2000


def test_counts_and_days_are_checked_where_they_are_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, option in ((["features", "recompute", "--since", "2026-10-01T00:00Z", "--until",
                           "2026-10-02T00:00Z", "--retries", "-1"], "--retries"),
                         (["maintenance", "--raw-days", "0"], "--raw-days")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert f"argument {option}" in capsys.readouterr().err
