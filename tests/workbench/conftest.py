"""The service test server and credentials, shared with tests/service."""

from tests.service.conftest import client, server, settings, tokens  # noqa: F401
