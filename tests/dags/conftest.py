from __future__ import annotations

from pathlib import Path

import pytest

from dev.airflow_runner import AirflowHome
from tests.conftest import EXAMPLE_DAGS

TEST_DAGS = Path(__file__).parent / "dag_files"


@pytest.fixture(scope="session")
def example_airflow(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """A migrated AIRFLOW_HOME whose dags folder is example_dags/."""
    home = AirflowHome(tmp_path_factory.mktemp("airflow-examples"), EXAMPLE_DAGS)
    home.migrate()
    return home


@pytest.fixture(scope="session")
def test_dags_airflow(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """A migrated AIRFLOW_HOME whose dags folder holds the test-only DAGs."""
    home = AirflowHome(tmp_path_factory.mktemp("airflow-test-dags"), TEST_DAGS)
    home.migrate()
    return home


def conn_env(sandbox: object) -> dict[str, str]:
    return {"AIRFLOW_CONN_CLUBCOLLECT_DEFAULT": sandbox.conn_uri_json}  # type: ignore[attr-defined]
