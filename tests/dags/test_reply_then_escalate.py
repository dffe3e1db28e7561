"""The reply-then-escalate recipe (example_dags/clubcollect_reply_then_escalate.py) with real Airflow,
on a day with work and on a day with nothing to remind: the escalation runs on both."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from tests.dags.test_example_dags import assert_key_nowhere

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

DAG_ID = "clubcollect_reply_then_escalate"


def waiting(days: float) -> list[dict[str, str]]:
    date = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()
    return [{"message": f"Waiting {days} days", "sender": "CUSTOMER", "date": date}]


def test_a_day_with_work_reminds_the_window_and_escalates_the_rest(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    sandbox = clubcollect_sandbox
    sandbox.reset(seed=None)
    company = "club-reply-work"
    for invoice_id, days in (("inv-1d", 1), ("inv-3d", 3), ("inv-4d", 4.5), ("inv-6d", 6), ("inv-9d", 9)):
        sandbox.add_invoice(invoice_id, company, waiting(days))

    state, output = run_dag(DAG_ID, {"company_id": company})

    assert state == "success", (example_airflow.task_states(DAG_ID), output[-4000:])
    assert example_airflow.xcom(DAG_ID, "waiting_2_to_5_days") == ["inv-3d", "inv-4d"]
    assert example_airflow.xcom(DAG_ID, "escalate") == ["inv-6d", "inv-9d"]
    invoices = sandbox.state()["invoices"]
    assert {i for i, inv in invoices.items() if inv["tickets_created"]} == {"inv-3d", "inv-4d"}
    assert all(invoices[i]["tickets_created"] == 1 for i in ("inv-3d", "inv-4d"))
    assert {i for i, inv in invoices.items() if inv["assigned_to_support"]} == {"inv-6d", "inv-9d"}
    assert "Chosen threads:" in output
    assert_key_nowhere(example_airflow, sandbox, output)


def test_a_day_with_nothing_to_remind_still_escalates(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    sandbox = clubcollect_sandbox
    sandbox.reset(seed=None)
    company = "club-reply-quiet"
    sandbox.add_invoice("inv-1d", company, waiting(1))
    sandbox.add_invoice("inv-8d", company, waiting(8))

    state, output = run_dag(DAG_ID, {"company_id": company})

    assert state == "success", (example_airflow.task_states(DAG_ID), output[-4000:])
    states = example_airflow.task_states(DAG_ID)
    assert states["waiting_2_to_5_days"] == "success"
    assert states["escalate"] == "success", states
    assert example_airflow.xcom(DAG_ID, "waiting_2_to_5_days") == []
    assert example_airflow.xcom(DAG_ID, "escalate") == ["inv-8d"]
    invoices = sandbox.state()["invoices"]
    assert not any(inv["tickets_created"] for inv in invoices.values())
    assert invoices["inv-8d"]["assigned_to_support"] is True


def test_a_day_with_nothing_at_all_ends_green(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    sandbox = clubcollect_sandbox
    sandbox.reset(seed=None)
    company = "club-reply-empty"
    sandbox.add_invoice("inv-1d", company, waiting(1))

    state, output = run_dag(DAG_ID, {"company_id": company})

    assert state == "success", (example_airflow.task_states(DAG_ID), output[-4000:])
    assert example_airflow.task_states(DAG_ID)["escalate"] == "success"
    assert example_airflow.xcom(DAG_ID, "escalate") == []
    assert [r["method"] for r in sandbox.requests()] == ["GET", "GET"]
