"""Test set-up shared by every test.

Airflow reads AIRFLOW_HOME when it is first imported, so this module gives the test session a
throwaway home (SQLite database, no example DAGs, the project's example_dags as the dags folder)
before anything imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = REPO_ROOT / "example_dags"

if not os.environ.get("CLUBCOLLECT_TEST_AIRFLOW_HOME_READY"):
    _home = tempfile.mkdtemp(prefix="clubcollect-airflow-home-")
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
    os.environ["CLUBCOLLECT_TEST_AIRFLOW_HOME_READY"] = "1"
