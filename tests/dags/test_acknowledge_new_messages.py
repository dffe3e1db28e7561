"""The asset-watcher example DAG: it parses with a valid watcher, runs green with no events, and
picks what to acknowledge from real asset events (Airflow's accessor) against the sandbox."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger, UnansweredTicketsTrigger
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import EXAMPLE_DAGS

pytestmark = pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="asset watchers need Airflow 3.0+")

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

DAG_ID = "clubcollect_acknowledge_new_messages"
COMPANY = "97a4208030e13df423f3ff0479579c9f540ec07f"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(DAG_ID, EXAMPLE_DAGS / f"{DAG_ID}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[DAG_ID] = module
    from tests.dags.conftest import parse_time_variables

    with parse_time_variables():
        spec.loader.exec_module(module)
    return module


def test_the_dag_is_scheduled_on_the_watched_asset(example: ModuleType) -> None:
    from airflow.triggers.base import BaseEventTrigger

    from tests.dags.conftest import parse_dag_file

    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # before Airflow 3.2
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    dag = parse_dag_file(EXAMPLE_DAGS / f"{DAG_ID}.py")[DAG_ID]
    (asset,) = dag.timetable.asset_condition.objects
    assert asset.uri == f"clubcollect://{COMPANY}/unanswered"
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, BaseEventTrigger)
    assert isinstance(watcher.trigger, UnansweredTicketsEventTrigger)
    assert watcher.trigger.serialize()[1]["company_id"] == COMPANY
    assert watcher.trigger.poll_interval == 5
    # Airflow serializes the DAG with its watchers (what the DAG processor stores).
    serialized = DagSerialization.to_dict(dag)
    assert "UnansweredTicketsEventTrigger" in str(serialized)


def test_the_variable_names_the_watched_company(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.dags.conftest import parse_dag_file

    company = "e2e0watched".ljust(40, "0")
    monkeypatch.setenv("AIRFLOW_VAR_CLUBCOLLECT_WATCHED_COMPANY_ID", company)
    (asset,) = parse_dag_file(EXAMPLE_DAGS / f"{DAG_ID}.py")[DAG_ID].timetable.asset_condition.objects
    assert asset.uri == f"clubcollect://{company}/unanswered"
    assert asset.watchers[0].trigger.serialize()[1]["company_id"] == company


def test_a_deferral_trigger_cannot_serve_a_watcher() -> None:
    from airflow.sdk import AssetWatcher

    with pytest.raises(ValueError, match=r"must inherit `*BaseEventTrigger"):
        AssetWatcher(name="w", trigger=UnansweredTicketsTrigger(COMPANY))  # type: ignore[arg-type]


def test_dags_test_without_events_acknowledges_nothing_and_succeeds(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    state, output = run_dag(DAG_ID)

    assert state == "success", output[-4000:]
    assert example_airflow.task_states(DAG_ID) == {"invoices_to_acknowledge": "success", "acknowledge": "skipped"}
    assert example_airflow.xcom(DAG_ID, "invoices_to_acknowledge") == []
    assert [r for r in clubcollect_sandbox.requests() if r["method"] != "GET"] == []


def asset_events(example: ModuleType, polls: list[list[dict[str, Any]]]) -> Any:
    """Triggering asset events as a task receives them, one per poll, built with Airflow's own accessor."""
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    asset = example.UNANSWERED
    return TriggeringAssetEventsAccessor.build(
        AssetEventDagRunReferenceResult(
            asset={"name": asset.name, "uri": asset.uri, "extra": {}},
            # What the triggerer stores for a watcher's event (models/trigger.py, submit_event).
            extra={
                "from_trigger": True,
                "payload": {
                    "ticket_id": p[0]["ticket_id"],
                    "invoice_id": p[0]["invoice_id"],
                    "ticket": p[0],
                    "tickets": p,
                },
            },
            source_task_id=None,
            source_dag_id=None,
            source_run_id=None,
            source_map_index=None,
            source_aliases=[],
            timestamp=datetime.now(timezone.utc),
        )
        for p in polls
    )


def test_each_waiting_thread_is_chosen_once_and_answered_ones_never(
    example: ModuleType, sandbox: SandboxHandle
) -> None:
    now = datetime.now(timezone.utc)

    def at(minutes: float) -> str:
        return (now - timedelta(minutes=minutes)).isoformat()

    sandbox.add_invoice("inv-1", COMPANY, [{"message": "a", "sender": "CUSTOMER", "date": at(9)}])
    sandbox.add_tickets("inv-1", [{"message": "b", "sender": "CUSTOMER", "date": at(8)}])
    sandbox.add_invoice("inv-2", COMPANY, [{"message": "c", "sender": "CUSTOMER", "date": at(7)}])
    # inv-3's ticket was acknowledged since its event was first delivered: a redelivery is a no-op.
    sandbox.add_invoice("inv-3", COMPANY, [{"message": "d", "sender": "CUSTOMER", "date": at(6)}])
    sandbox.add_tickets("inv-3", [{"message": example.ACKNOWLEDGEMENT, "sender": "COMPANY", "date": at(1)}])
    tickets = [
        dict(t, invoice_id=invoice_id)
        for invoice_id in ("inv-1", "inv-2", "inv-3")
        for t in sandbox.invoice(invoice_id)["tickets"]
        if t["sender"] == "CUSTOMER"
    ]
    # A burst of three tickets in one poll's event, the fourth in a later poll's, and the first event delivered twice.
    events = asset_events(example, [tickets[:3], tickets[3:], tickets[:3]])

    chosen = example.invoices_to_acknowledge.function(triggering_asset_events=events)

    assert chosen == ["inv-1", "inv-2"], "one reply per waiting thread, none for the answered one"
    assert [r for r in sandbox.requests() if r["method"] != "GET"] == []
