"""Lineage of exports: the outlet an export is emitted through, its event, and the OpenLineage facets."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

# Airflow 3's task runner: how a task's outlet events reach Airflow.  On Airflow 2.11 the export's
# Dataset event is checked by a real run instead (tests/dags/test_export_lineage.py).
pytest.importorskip("airflow.sdk.execution_time.context", reason="Airflow 3's task runner")
from airflow.providers.common.compat.sdk import DAG, Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.sdk.execution_time.task_runner import _serialize_outlet_events

from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator
from tests.conftest import thread

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"


def seed(sandbox: SandboxHandle) -> None:
    for n in range(3):
        sandbox.add_invoice(f"{n:040x}", CO, thread(("CUSTOMER", 9 - n)))


def export(sandbox: SandboxHandle, output_path: str, **kwargs: Any) -> tuple[FetchCompanyTicketsOperator, list[Any]]:
    """Run the operator with Airflow's own outlet-event accessors; return what a task run sends Airflow."""
    seed(sandbox)
    with DAG("lineage_dag", schedule=None):
        operator = FetchCompanyTicketsOperator(task_id="export", company_id=CO, output_path=output_path, **kwargs)
    events = OutletEventAccessors()
    operator.execute({"outlet_events": events})  # type: ignore[typeddict-item]
    return operator, list(_serialize_outlet_events(events))


def test_a_fixed_path_is_the_outlet_asset_and_its_event_carries_the_export(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    path = (tmp_path / "tickets.jsonl").as_uri()
    operator, sent = export(sandbox, path)

    assert operator.outlets == [Asset(path)]
    assert operator.export_alias is None
    assert sent == [
        {"dest_asset_key": {"name": path, "uri": path}, "extra": {"company_id": CO, "status": "unanswered", "count": 3}}
    ]


def test_a_templated_path_is_emitted_through_an_alias_named_after_the_task(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    seed(sandbox)
    with DAG("exports", schedule=None):
        templated = FetchCompanyTicketsOperator(
            task_id="export", company_id=CO, output_path=str(tmp_path) + "/{{ ds }}.jsonl", outlets=[Asset("s3://b/k")]
        )
    assert templated.export_alias == "clubcollect_export.exports.export"
    assert templated.outlets == [Asset("s3://b/k"), AssetAlias("clubcollect_export.exports.export")]

    # What the task run sends once the template is rendered: an event for the file, through the alias.
    templated.output_path = (tmp_path / "2026-06-01.jsonl").as_uri()
    events = OutletEventAccessors()
    templated.execute({"outlet_events": events})  # type: ignore[typeddict-item]
    (sent,) = _serialize_outlet_events(events)
    assert sent["source_alias_name"] == "clubcollect_export.exports.export"
    assert sent["dest_asset_key"] == {"name": templated.output_path, "uri": templated.output_path}
    assert sent["extra"] == {"company_id": CO, "status": "unanswered", "count": 3}


def test_without_output_path_there_is_no_outlet() -> None:
    assert FetchCompanyTicketsOperator(task_id="t", company_id=CO).outlets == []


def test_openlineage_facets_name_the_ticket_list_and_the_file(sandbox: SandboxHandle, tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider needs Python 3.11+")
    path = tmp_path / "tickets.jsonl"
    operator, _ = export(sandbox, path.as_uri())

    lineage = operator.get_openlineage_facets_on_complete(None)

    host = sandbox.base_url.split("://", 1)[1].split("/", 1)[0]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (f"clubcollect://{host}", f"companies/{CO}/tickets/unanswered")
    ]
    (output,) = lineage.outputs
    assert (output.namespace, "/" + output.name) == ("file", str(path))
    assert output.outputFacets["outputStatistics"].rowCount == 3
    assert sandbox.api_key not in json.dumps([repr(d) for d in [*lineage.inputs, *lineage.outputs]])


def test_openlineage_facets_of_a_fetch_to_xcom_have_only_the_input(sandbox: SandboxHandle) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider needs Python 3.11+")
    sandbox.add_invoice(f"{1:040x}", CO, thread(("CUSTOMER", 2)))
    operator = FetchCompanyTicketsOperator(task_id="t", company_id=CO, status="unanswered")
    operator.execute({})

    lineage = operator.get_openlineage_facets_on_complete(None)

    assert [d.name for d in lineage.inputs] == [f"companies/{CO}/tickets/unanswered"]
    assert lineage.outputs == []
