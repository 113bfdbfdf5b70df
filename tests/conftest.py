"""Shared fixtures: fresh, migrated TimescaleDB databases on the project's server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url


@pytest.fixture(scope="session")
def db_url() -> Iterator[str]:
    """The test session's database (shared by the tests that do not need their own)."""
    with scratch_database(database_url(), "ubi_test") as url:
        yield url


@pytest.fixture(scope="module")
def own_db_url() -> Iterator[str]:
    """A database of the test module's own, for tests that publish plans or otherwise
    change what the whole database sees (the plan in force)."""
    with scratch_database(database_url(), "ubi_test") as url:
        yield url
