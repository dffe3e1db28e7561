"""Real Airflow for the DAG tests: one migrated AIRFLOW_HOME for the session.

DAGs run in this process with ``dag.test()``, a second or two each after the first.  That is what
`airflow dags test` runs too (in its own process, which adds some ten seconds of start-up and
nothing else): tasks in-process, deferred tasks' triggers in line, reschedules and task retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS
from dev.airflow_runner import AirflowHome
from tests.conftest import EXAMPLE_DAGS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle


TEST_DAGS = Path(__file__).parent / "dag_files"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """
    The session's AIRFLOW_HOME (tests/conftest.py), its SQLite database created once, in-process,
    with both DAG folders as bundles: ``dag.test()`` runs only DAGs a bundle holds.
    """
    from airflow.utils.db import initdb

    from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS

    bundles = [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (("dags-folder", EXAMPLE_DAGS), ("test-dags", TEST_DAGS))
    ]
    # Airflow reads its configuration from the environment at each look-up; the home is the
    # session's own, so the setting is left in place.  Airflow 2.11 has no bundles: dag.test() runs any DAG.
    if AIRFLOW_V_3_0_PLUS:
        os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(bundles)
    initdb()
    home = Path(os.environ["AIRFLOW_HOME"])
    assert (home / "airflow.db").is_file(), "tests/conftest.py points Airflow at AIRFLOW_HOME/airflow.db"
    return home


@pytest.fixture(scope="session")
def example_airflow(airflow_db: Path) -> AirflowHome:
    """The session's Airflow home: in-process runs are read back from its database."""
    return AirflowHome(airflow_db, EXAMPLE_DAGS)


@pytest.fixture(scope="session")
def example_dags(airflow_db: Path) -> dict[str, DAG]:
    """Every DAG in example_dags/ and tests/dags/dag_files/ that this Airflow can run, by ID, parsed once."""
    dags = {}
    for path in sorted([*EXAMPLE_DAGS.glob("*.py"), *TEST_DAGS.glob("*.py")]):
        if path.stem not in too_new_example_dags():
            dags.update(parse_dag_file(path))
    return dags


def parse_dag_file(path: Path) -> dict[str, DAG]:
    """The DAGs of one file, parsed as the DAG processor does; fails on an import error."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # before Airflow 3.2
        from airflow.models.dagbag import DagBag

    with parse_time_variables():
        bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}
    return dict(bag.dags)


@contextlib.contextmanager
def parse_time_variables() -> Iterator[None]:
    """
    Airflow 3.0 answers a parse-time ``Variable.get`` (two examples make one) through the DAG
    processor's supervisor only, and an in-process parse has none: the documented defaults come
    from the environment then, where Airflow reads Variables first.  3.1 and later need nothing.
    """
    unset = set() if AIRFLOW_V_3_1_PLUS or not AIRFLOW_V_3_0_PLUS else PARSE_TIME_VARIABLES.keys() - os.environ.keys()
    os.environ.update({name: PARSE_TIME_VARIABLES[name] for name in unset})
    try:
        yield
    finally:
        for name in unset:
            del os.environ[name]


#: The Variables the examples read when parsed, with their documented defaults.
PARSE_TIME_VARIABLES = {
    "AIRFLOW_VAR_CLUBCOLLECT_WATCHED_COMPANY_ID": "97a4208030e13df423f3ff0479579c9f540ec07f",
    "AIRFLOW_VAR_CLUBCOLLECT_EXPORT_ROOT": "file:///tmp/clubcollect-exports",
}


def too_new_example_dags() -> dict[str, str]:
    """Example DAG files this Airflow cannot run, with the Airflow version each needs (docs/compatibility.rst)."""
    from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS

    needs = {}
    if not AIRFLOW_V_3_0_PLUS:
        needs["clubcollect_acknowledge_new_messages"] = "3.0 (asset watchers)"
        needs["clubcollect_process_export"] = "3.0 (triggering_asset_events; 2.11 names them for datasets)"
        needs["clubcollect_test_budget"] = "3.0 (asset watchers)"
    if not AIRFLOW_V_3_1_PLUS:
        needs["clubcollect_review_before_escalation"] = "3.1 (human-in-the-loop operators)"
    return needs


@pytest.fixture
def no_retries_sandbox(clubcollect_sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> SandboxHandle:
    """
    The sandbox, emptied, also as the connection ``clubcollect_no_retries`` (``max_retries`` 0):
    one failed request fails the task's try, so that Airflow's task retries take over.
    """
    clubcollect_sandbox.reset(seed=None)
    no_retries = {**json.loads(clubcollect_sandbox.conn_uri_json), "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_NO_RETRIES", json.dumps(no_retries))
    return clubcollect_sandbox


@pytest.fixture
def run_dag(
    example_dags: dict[str, DAG], capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Callable[..., tuple[str, str]]:
    """
    Run a DAG in this process (``dag.test()``: task retries included, each try with the task
    state store) against the connection in the environment.

    :return: a function of ``dag_id`` and optional ``conf`` giving the run's state and everything
        the run printed (for checks that the key is nowhere).
    """

    def run(dag_id: str, conf: dict[str, Any] | None = None) -> tuple[str, str]:
        capfd.readouterr()
        caplog.clear()
        # dag.test()'s own lines ("[DAG TEST] running trigger in line"): Airflow 2.11 logs them below its level.
        caplog.set_level(logging.INFO, logger="airflow.models.dag")
        dag_run = example_dags[dag_id].test(run_conf=conf)
        out, err = capfd.readouterr()
        # The tasks' logs reach the file descriptors; dag.test()'s own reach the logging records.
        output = out + err + caplog.text
        if AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS:
            # Airflow 3.0 logs, at DEBUG, each secret it asks its supervisor to mask (its own
            # mask_secret(conn.password) included): docs/compatibility.rst says to keep INFO there.
            output = "\n".join(line for line in output.splitlines() if "msg=MaskSecret(" not in line)
        return str(dag_run.state), output

    return run
