"""`ubi db up` and friends on the real machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from telematics.store import provision

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]


def test_db_up_twice_is_harmless() -> None:
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "telematics.cli", "db", "up"],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "migrations applied now" in proc.stdout
    status = subprocess.run([sys.executable, "-m", "telematics.cli", "db", "status"],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    assert status.returncode == 0
    assert "timescaledb" in status.stdout


def test_external_server_without_timescaledb_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's stock PostgreSQL on 5432 has no timescaledb preloaded: a real server.
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    with pytest.raises(provision.ProvisionError) as info:
        provision.check_timescaledb(url)
    assert "timescaledb" in str(info.value)
    assert "UBI_DATABASE_URL" in str(info.value) or "shared_preload_libraries" in str(info.value)


def test_mirror_comes_from_the_systems_apt_sources() -> None:
    uri = provision.system_mirror_uri()
    assert uri.startswith(("http://", "https://", "file:", "mirror+"))
    text = "".join(p.read_text() for p in Path("/etc/apt").rglob("*.sources")) + "".join(
        p.read_text() for p in Path("/etc/apt").rglob("*.list") if p.is_file())
    assert uri in text


def test_every_command_has_help() -> None:
    from telematics.cli import build_parser

    parser = build_parser()
    for argv in (["--help"], ["db", "--help"], ["db", "up", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 0
