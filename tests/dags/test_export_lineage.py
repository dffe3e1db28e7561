"""Lineage of exports: the asset event and the OpenLineage datasets of a real export run."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import EXAMPLE_DAGS
from tests.dags.test_example_dags import EXAMPLE_COMPANIES, assert_key_nowhere, company_tickets

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

DAG_ID = "clubcollect_export_to_storage"
ALIAS = "clubcollect_export.clubcollect_export_to_storage.export"


def _sql(query: str) -> str:
    # Airflow 2.11 names its tables and columns for datasets, Airflow 3 for assets.
    return query if AIRFLOW_V_3_0_PLUS else query.replace("asset", "dataset")


def _asset_events(airflow: AirflowHome) -> list[tuple[str, dict[str, object], list[str]]]:
    """(asset URI, event extra, names of the aliases it came through) of each event of the newest run."""
    with sqlite3.connect(airflow.database) as db:
        rows = db.execute(
            _sql(
                "SELECT e.id, a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                "WHERE e.source_dag_id = ? AND e.source_run_id = "
                "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1) ORDER BY e.id"
            ),
            (DAG_ID, DAG_ID),
        ).fetchall()
        return [
            (
                uri,
                json.loads(extra),
                [
                    name
                    for (name,) in db.execute(
                        _sql(
                            "SELECT al.name FROM asset_alias_asset_event x JOIN asset_alias al ON al.id = x.alias_id "
                            "WHERE x.event_id = ?"
                        ),
                        (event_id,),
                    )
                ],
            )
            for event_id, uri, extra in rows
        ]


@pytest.fixture
def openlineage_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Airflow's OpenLineage listener, for this test, writing its events to a file (JSON lines)."""
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider needs Python 3.11+")
    from airflow.listeners.listener import get_listener_manager
    from airflow.providers.common.compat.sdk import get_listener_manager as get_task_listener_manager
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener

    path = tmp_path / "openlineage.jsonl"
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "file", "log_file_path": str(path), "append": True})
    )
    # The provider registers its listener when Airflow loads plugins, and only if it is configured
    # then; this session loaded them unconfigured, so register one for this test, with both the
    # scheduler side's manager (DAG runs) and the task runner's (task instances).
    # (Run alone, the plugins load during the run, configured: then the provider's own listener is there.)
    listener = OpenLineageListener()
    # Airflow 2.11 has one manager for both.
    unique = {id(manager): manager for manager in (get_listener_manager(), get_task_listener_manager())}
    managers = [
        manager
        for manager in unique.values()
        if not any(isinstance(plugin, OpenLineageListener) for plugin in manager.pm.get_plugins())
    ]
    for manager in managers:
        manager.add_listener(listener)
    yield path
    for manager in managers:
        manager.pm.unregister(listener)


def test_export_emits_an_asset_event_and_openlineage_datasets(
    run_dag: Callable[..., tuple[str, str]],
    example_dags: dict[str, Any],
    example_airflow: AirflowHome,
    clubcollect_sandbox: SandboxHandle,
    openlineage_file: Path,
    tmp_path: Path,
) -> None:
    company = EXAMPLE_COMPANIES[2]
    expected = company_tickets(clubcollect_sandbox, company, "unanswered")

    if not AIRFLOW_V_3_0_PLUS:
        # Airflow 2.11's dag.test() records events only for aliases the DAG processor has written.
        example_dags[DAG_ID].sync_to_db()
    state, output = run_dag(DAG_ID, conf={"export_root": (tmp_path / "exports").as_uri()})

    assert state == "success", output[-4000:]
    assert_key_nowhere(example_airflow, clubcollect_sandbox, output)
    result = example_airflow.xcom(DAG_ID, "export")
    assert result["count"] == len(expected) > 0
    assert result["path"].startswith((tmp_path / "exports" / company).as_uri() + "/unanswered-")
    (exported,) = (tmp_path / "exports" / company).iterdir()
    assert exported.as_uri() == result["path"]
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(t["ticket_id"] for t in lines) == sorted(t["ticket_id"] for t in expected)
    assert [t["date"] for t in lines] == sorted(t["date"] for t in lines), "oldest first"

    # The asset event: the file's URI, the company, status and count in its extra, through the alias.
    assert _asset_events(example_airflow) == [
        (result["path"], {"company_id": company, "status": "unanswered", "count": len(expected)}, [ALIAS])
    ]

    # OpenLineage (file transport): the company's ticket list in, the file out, with its row count.
    events = [json.loads(line) for line in openlineage_file.read_text().splitlines()]
    complete_events = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.export"]
    assert len(complete_events) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    (complete,) = complete_events
    host = clubcollect_sandbox.base_url.split("://", 1)[1].split("/", 1)[0]
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        (f"clubcollect://{host}", f"companies/{company}/tickets/unanswered")
    ]
    (output,) = complete["outputs"]
    assert (output["namespace"], "/" + output["name"]) == ("file", result["path"].removeprefix("file://"))
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == len(expected)
    assert clubcollect_sandbox.api_key not in openlineage_file.read_text()


def test_the_variable_sets_the_default_export_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.dags.conftest import parse_dag_file

    monkeypatch.setenv("AIRFLOW_VAR_CLUBCOLLECT_EXPORT_ROOT", "file:///srv/exports")
    assert parse_dag_file(EXAMPLE_DAGS / f"{DAG_ID}.py")[DAG_ID].params["export_root"] == "file:///srv/exports"
