"""Fixtures for the sandbox's own tests: one server per session, reset to empty before each test."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_clubcollect.sandbox.client import SandboxClient

# The plugin's fixtures, also when pytest runs without the plugin (no entry point installed, no
# -p): the tests that use them then still run; test_sandbox_pytest_plugin checks the loading.
from airflow_provider_clubcollect.sandbox.pytest_plugin import (  # noqa: F401
    clubcollect_sandbox,
    clubcollect_sandbox_server,
)
from airflow_provider_clubcollect.sandbox.server import SandboxServer

if TYPE_CHECKING:
    from collections.abc import Iterator

#: A fixed "now" for seed data, so that dates are reproducible.
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


class Api:
    """
    A raw HTTP client of the sandbox's Tickets API, sending what the provider sends by default.

    :param server: the sandbox.
    """

    def __init__(self, server: SandboxServer) -> None:
        self.base_url = server.base_url
        self.api_key = server.api_key
        self.session = requests.Session()

    def headers(self, **overrides: str | None) -> dict[str, str]:
        """
        The default headers with some replaced (``None`` removes one).

        :param overrides: header name (``_`` for ``-``) to value.
        """
        headers: dict[str, str | None] = {
            "Authorization": f"ApiKey {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "airflow-provider-clubcollect/tests",
        }
        headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
        return {name: value for name, value in headers.items() if value is not None}

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """
        Send a request to ``{base_url}/{path}``.

        :param method: the HTTP method.
        :param path: relative to the base URL, e.g. ``v2/invoices/x/tickets``.
        :param headers: the headers; :meth:`headers` when ``None``.
        :param kwargs: passed to :meth:`requests.Session.request`.
        """
        kwargs.setdefault("timeout", 10)
        return self.session.request(
            method, f"{self.base_url}/{path}", headers=self.headers() if headers is None else headers, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """
        GET a path.

        :param path: relative to the base URL.
        :param kwargs: as for :meth:`request`.
        """
        response: requests.Response = self.request("GET", path, **kwargs)
        return response

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """
        POST to a path.

        :param path: relative to the base URL.
        :param kwargs: as for :meth:`request`.
        """
        response: requests.Response = self.request("POST", path, **kwargs)
        return response


@pytest.fixture
def now() -> datetime:
    """A fixed "now" for seed data and ticket dates."""
    return NOW


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One sandbox for the session's sandbox tests."""
    with SandboxServer(seed=None) as server:
        yield server


@pytest.fixture
def server(sandbox_server: SandboxServer) -> SandboxServer:
    """
    The session's sandbox server, emptied (data, counters, request log, faults).

    Named ``server``, not ``sandbox``: elsewhere ``sandbox`` is the client handle of tests/conftest.py.
    """
    sandbox_server.state.reset()
    return sandbox_server


@pytest.fixture
def api(server: SandboxServer) -> Iterator[Api]:
    """A raw client of the API, with a fresh connection pool."""
    client = Api(server)
    yield client
    client.session.close()


@pytest.fixture
def control(server: SandboxServer) -> Iterator[SandboxClient]:
    """A client of the control API."""
    with SandboxClient(server.control_url) as client:
        yield client
