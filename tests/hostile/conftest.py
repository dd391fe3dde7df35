"""Fixtures for hostile-input tests: raw-socket access to real servers."""

from __future__ import annotations

import pytest

from tests.conftest import Server, ServerFactory
from tests.hostile.wire import Wire


@pytest.fixture(scope="session")
def postgres_server(server_factory: ServerFactory) -> Server:
    """The service on PostgreSQL, for HTTP-layer tests that need only one backend."""
    return server_factory("postgres")


@pytest.fixture
def wire(api_server: Server) -> Wire:
    """Raw requests to the service on each backend, each followed by a survival check."""
    return Wire(api_server)


@pytest.fixture
def pg_wire(postgres_server: Server) -> Wire:
    """Raw requests to the service on PostgreSQL, each followed by a survival check."""
    return Wire(postgres_server)
