"""Real Airflow for the DAG tests: one migrated AIRFLOW_HOME for the session.

Example DAGs run in this process with ``dag.test()`` (a second each); the few tests whose point
is a separate process (deferral to the triggerer, reschedule, task retries with the task state
store) run ``airflow dags test`` against a copy of it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dev.airflow_runner import AirflowHome
from tests.conftest import EXAMPLE_DAGS

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.dag_processing.dagbag import DagBag

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

TEST_DAGS = Path(__file__).parent / "dag_files"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's AIRFLOW_HOME (tests/conftest.py), its SQLite database created once, in-process."""
    from airflow.utils.db import initdb

    initdb()
    home = Path(os.environ["AIRFLOW_HOME"])
    assert (home / "airflow.db").is_file(), "tests/conftest.py points Airflow at AIRFLOW_HOME/airflow.db"
    return home


@pytest.fixture(scope="session")
def example_airflow(airflow_db: Path) -> AirflowHome:
    """The session's Airflow home seen as example_dags/'s: run results are read from its database."""
    return AirflowHome(airflow_db, EXAMPLE_DAGS)


@pytest.fixture(scope="session")
def test_dags_airflow(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """
    A home for `airflow dags test` subprocesses running the test-only DAGs: a copy of the migrated
    database (SQLite's backup API, milliseconds) rather than a second migration, and not the file
    itself, which this process keeps open.
    """
    home = AirflowHome(tmp_path_factory.mktemp("airflow-test-dags"), TEST_DAGS)
    with sqlite3.connect(airflow_db / "airflow.db") as source, sqlite3.connect(home.database) as copy:
        source.backup(copy)
    return home


@pytest.fixture(scope="session")
def example_dags(airflow_db: Path) -> DagBag:
    """Every DAG in example_dags/, parsed once."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def run_dag(example_dags: DagBag, capfd: pytest.CaptureFixture[str]) -> Callable[..., tuple[str, str]]:
    """
    Run an example DAG in this process (``dag.test()``) against the connection in the environment.

    :return: a function of ``dag_id`` and optional ``conf`` giving the run's state and everything
        the run printed (for checks that the key is nowhere).
    """

    def run(dag_id: str, conf: dict[str, Any] | None = None) -> tuple[str, str]:
        capfd.readouterr()
        dag_run = example_dags.dags[dag_id].test(run_conf=conf)
        out, err = capfd.readouterr()
        return str(dag_run.state), out + err

    return run


def conn_env(sandbox: SandboxHandle) -> dict[str, str]:
    """The environment a subprocess needs to reach the sandbox as ``clubcollect_default``."""
    return {sandbox.conn_env_var: sandbox.conn_uri_json}
