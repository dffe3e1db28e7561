"""Test set-up shared by every test.

Airflow reads AIRFLOW_HOME when it is first imported, so this module gives the test session a
throwaway home (SQLite database, no example DAGs, the project's example_dags as the dags folder)
before anything imports Airflow (nothing imported here does).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_clubcollect.connection import ClientSettings
    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from airflow_provider_clubcollect.sandbox.server import SandboxServer

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = REPO_ROOT / "example_dags"
DAG_TESTS = REPO_ROOT / "tests" / "dags"

# One home per pytest process: each pytest-xdist worker (``make test`` runs two) gets its own
# SQLite database; subprocesses a test starts inherit their worker's home.
_owner = os.environ.get("PYTEST_XDIST_WORKER", "main")
if os.environ.get("CLUBCOLLECT_TEST_AIRFLOW_HOME_READY") != _owner:
    _home = tempfile.mkdtemp(prefix="clubcollect-airflow-home-")
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
    os.environ["CLUBCOLLECT_TEST_AIRFLOW_HOME_READY"] = _owner

# At exit, after every test and pytest's own last garbage collection, the interpreter collects
# once more over everything a worker loaded (Airflow, SQLAlchemy, DAGs): seconds of C time per
# xdist worker that ``make test`` waits for.  Frozen objects are left to the process's end.
atexit.register(gc.freeze)


#: A fixed "now" for selection tests, so that they do not depend on the clock.
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def modules_after_importing(*modules: str) -> list[str]:
    """Every module a fresh interpreter has loaded after importing ``modules``, as a DAG file would."""
    code = f"import sys, {', '.join(modules)}; print(' '.join(sorted(sys.modules)))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


@contextlib.contextmanager
def running_task(context: Any) -> Iterator[Any]:
    """What a task runner does around ``execute()``: ``get_current_context()`` answers ``context`` inside."""
    try:
        from airflow.sdk.execution_time.context import set_current_context
    except ImportError:  # Airflow 2.11
        from airflow.models.taskinstance import set_current_context  # type: ignore[no-redef]

    with set_current_context(context):
        yield context


def fast_backoff() -> Backoff:
    """Waits between retries of milliseconds, not seconds: tests inject these instead of sleeping."""
    from airflow_provider_clubcollect.retry import Backoff

    return Backoff(initial=0.01, maximum=0.05)


def conn_settings(
    conn_id: str, *, extra: Any = None, timeout: Any = None, max_retries: Any = None, **fields: Any
) -> ClientSettings:
    """The checked settings of a ``clubcollect`` connection built here (``fields``: host, password, port)."""
    import json

    from airflow.providers.common.compat.sdk import Connection

    from airflow_provider_clubcollect.connection import settings_from_airflow_connection

    conn = Connection(
        conn_id=conn_id, conn_type="clubcollect", extra=None if extra is None else json.dumps(extra), **fields
    )
    return settings_from_airflow_connection(conn, timeout=timeout, max_retries=max_retries)


def page_reads(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    """The requests the sandbox logged for pages of a company's tickets, in arrival order."""
    return [r for r in sandbox.requests() if "/companies/" in r["path"]]


def without_looks(reads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page reads proper: without the pager's one-ticket looks at the tail (``page_size=1``)."""
    return [r for r in reads if r["query"].get("page_size") != "1"]


def days_ago(days: float) -> str:
    """An ISO date ``days`` before :data:`NOW`."""
    return (NOW - timedelta(days=days)).isoformat()


def thread(*senders_and_ages: tuple[str, float]) -> list[dict[str, Any]]:
    """Tickets for the sandbox's control API: ``("CUSTOMER", 10), ("COMPANY", 5)`` = days before NOW."""
    return [
        {"message": f"{sender.lower()} message {n}", "sender": sender, "date": days_ago(age)}
        for n, (sender, age) in enumerate(senders_and_ages)
    ]


@pytest.fixture(autouse=True)
def _no_paging_guesses() -> Iterator[None]:
    """Each test pages without the totals earlier tests' reads left (so request counts do not
    depend on the order tests run in)."""
    from airflow_provider_clubcollect.paging import _LAST_TOTALS

    _LAST_TOTALS.clear()
    yield
    _LAST_TOTALS.clear()


@pytest.fixture
def sandbox(clubcollect_sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHandle]:
    """The sandbox, empty (never seeded first): each test adds exactly the companies and threads it needs."""
    from airflow_provider_clubcollect.sandbox.pytest_plugin import sandbox_handle

    with sandbox_handle(clubcollect_sandbox_server, monkeypatch, None) as handle:
        yield handle


@pytest.fixture
def escalation_store(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """
    Airflow Variables in memory, for ``EscalateTicketsOperator.execute()`` called outside a task run
    (Airflow 3 has no Variable store there): key to value, as the operator reads and writes them.
    Its record in real Variables, across real runs, is tested in tests/dags/test_escalate_once_per_episode.py.
    """
    from airflow_provider_clubcollect import escalation

    store: dict[str, str] = {}
    monkeypatch.setattr(escalation, "read_variable", store.get)
    monkeypatch.setattr(escalation, "write_variable", store.__setitem__)
    return store


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/dags ``dag``: they run DAGs with real Airflow (`make unit` skips them)."""
    for item in items:
        if DAG_TESTS in item.path.parents:
            item.add_marker(pytest.mark.dag)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """
    pytest-xdist's ``load`` balancing, test by test, except that the DAG tests go to one worker
    together: that worker alone pays for the Airflow database, the DAG parse and the first
    ``dag.test()``'s start-up (``--dist loadgroup`` would, but pytest 9 ignores the ids it rewrites).
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class DagTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tests/dags" if nodeid.startswith("tests/dags/") else nodeid

    return DagTestsTogether(config, log)
