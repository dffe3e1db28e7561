"""pytest plugin (entry point ``pytest11``, name ``clubcollect``): a ClubCollect sandbox for DAG tests.

Usage in a test::

    def test_my_dag(clubcollect_sandbox):
        clubcollect_sandbox.add_invoice("inv-1", "club-1", [ticket("Ik wil niet betalen", "CUSTOMER", now)])
        ...  # anything using the connection "clubcollect_default" now talks to the sandbox

pytest loads this module for every test session of anyone who has the provider installed,
before any ``conftest.py`` runs: it must import nothing heavy at module level, and never
``airflow`` (importing Airflow reads ``AIRFLOW_HOME`` before a conftest can set it).  Everything
is imported inside the fixtures.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from airflow_provider_clubcollect.sandbox.server import SandboxServer

__all__ = ["clubcollect_sandbox"]

#: The name pytest registers this plugin under through its entry point (group ``pytest11``).
ENTRY_POINT_NAME = "clubcollect"
#: The seed every test starts from.
DEFAULT_SEED = 0


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """
    Keep pytest from loading this module twice.

    Loaded with ``-p airflow_provider_clubcollect.sandbox.pytest_plugin`` while the entry point
    is also installed, pytest would register the same module again under the entry point's name
    and stop with "Plugin already registered under a different name".  pytest calls this hook
    as soon as the module is registered, before it loads entry points, so blocking the entry
    point's name there makes ``-p`` and the entry point interchangeable.

    :param pluginmanager: pytest's plugin manager.
    """
    if pluginmanager.get_plugin(ENTRY_POINT_NAME) is None:
        pluginmanager.set_blocked(ENTRY_POINT_NAME)


@pytest.fixture(scope="session")
def clubcollect_sandbox_server() -> Iterator[SandboxServer]:
    """
    One sandbox for the whole test session, on a free loopback port, started on first use.

    Tests normally use :func:`clubcollect_sandbox`, which resets it before each test.

    .. seealso:: :ref:`sandbox`
    """
    from airflow_provider_clubcollect.sandbox.server import SandboxServer

    server = SandboxServer(host="127.0.0.1", port=0, seed=DEFAULT_SEED)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clubcollect_sandbox(
    clubcollect_sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxHandle]:
    """
    The session's sandbox, reset to the default seed data, with the connection
    ``clubcollect_default`` pointed at it (``AIRFLOW_CONN_CLUBCOLLECT_DEFAULT``) for this test.

    Faults and the request log start empty and are cleared again after the test.

    .. seealso:: :ref:`sandbox`
    """
    with sandbox_handle(clubcollect_sandbox_server, monkeypatch, DEFAULT_SEED) as handle:
        yield handle


@contextlib.contextmanager
def sandbox_handle(server: SandboxServer, monkeypatch: pytest.MonkeyPatch, seed: int | None) -> Iterator[SandboxHandle]:
    """The server reset to ``seed`` (empty when ``None``), with ``clubcollect_default`` pointed at it."""
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

    # Reset in-process rather than over HTTP: same effect, no round trip.
    server.state.reset(seed=seed)
    handle = SandboxHandle(server)
    monkeypatch.setenv(handle.conn_env_var, handle.conn_uri_json)
    try:
        yield handle
    finally:
        server.state.clear_faults()
        server.state.clear_requests()
        handle.close()
