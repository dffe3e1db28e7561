"""Escalate once per unanswered episode, through real DAG runs: the record is an Airflow Variable in
the session's database, so what one ``dag.test()`` run escalated is there for the next one."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

DAILY = "clubcollect_test_escalate_daily"
DRY_RUN = "clubcollect_test_escalate_daily_dry_run"
MAPPED = "clubcollect_test_escalate_mapped"
COMPANY_RECORD = "clubcollect.escalated.clubcollect_default.club-1"


def inv(n: int) -> str:
    return f"{n:040x}"


def ago(now: datetime, days: float) -> str:
    return (now - timedelta(days=days)).isoformat()


def variable(key: str) -> Any:
    """The Variable's JSON value as stored in the session's database, ``None`` when absent."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(Variable).where(Variable.key == key))
        return None if row is None else json.loads(row.val)


@pytest.fixture
def no_records(airflow_db: Any) -> Iterator[None]:
    """No escalation record is left from another test: each starts as a DAG that never ran."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    def clear() -> None:
        with create_session() as session:
            stale = delete(Variable).where(Variable.key.like("clubcollect.escalated.%"))
            session.execute(stale.execution_options(synchronize_session=False))

    clear()
    yield
    clear()


def assigned(sandbox: SandboxHandle) -> list[str]:
    """The invoices the sandbox received an assign_to_support POST for since its log was cleared."""
    return sorted(
        r["path"].split("/")[4]
        for r in sandbox.requests()
        if r["method"] == "POST" and "assign_to_support" in r["path"]
    )


def run(run_dag: Callable[..., tuple[str, str]], airflow: AirflowHome, dag_id: str, **conf: Any) -> tuple[Any, str]:
    state, output = run_dag(dag_id, conf or None)
    assert state == "success", (airflow.task_states(dag_id), output[-4000:])
    return airflow.xcom(dag_id, "escalate"), output


def test_a_daily_escalation_escalates_each_thread_once_per_episode(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, sandbox: SandboxHandle, no_records: None
) -> None:
    now = datetime.now(timezone.utc)
    for n in (1, 2, 3):  # waiting 10 days: escalated by the first run
        sandbox.add_invoice(inv(n), "club-1", [{"message": "?", "sender": "CUSTOMER", "date": ago(now, 10)}])
    sandbox.add_invoice(inv(4), "club-1", [{"message": "?", "sender": "CUSTOMER", "date": ago(now, 2)}])  # too fresh
    waiting = [inv(1), inv(2), inv(3)]

    # A dry run reads the record but never writes it.
    assert run(run_dag, example_airflow, DRY_RUN)[0] == waiting
    assert assigned(sandbox) == []
    assert variable(COMPANY_RECORD) is None, "a dry run wrote the record"

    # Run 1: every thread waiting too long is escalated, and remembered with its episode.
    assert run(run_dag, example_airflow, DAILY)[0] == waiting
    assert assigned(sandbox) == waiting
    record = variable(COMPANY_RECORD)
    assert sorted(record) == waiting
    assert {entry["unanswered_since"] for entry in record.values()} == {(now - timedelta(days=10)).isoformat()}

    # Run 2: the same threads still wait, in the same episode: nothing is assigned.
    sandbox.clear_requests()
    escalated, output = run(run_dag, example_airflow, DAILY)
    assert escalated == []
    assert assigned(sandbox) == [], "a thread was escalated twice for one episode"
    assert f"already escalated for their episode, not again: {inv(1)} on " in output
    assert variable(COMPANY_RECORD) == record
    # The dry run agrees: nothing would be escalated.
    assert run(run_dag, example_airflow, DRY_RUN)[0] == []

    # The company answers thread 1, and the member writes again (8 days ago: waited long enough);
    # the company answers thread 2 for good.
    sandbox.add_tickets(
        inv(1),
        [
            {"message": "We kijken ernaar", "sender": "COMPANY", "date": ago(now, 9)},
            {"message": "Nog steeds niets", "sender": "CUSTOMER", "date": ago(now, 8)},
        ],
    )
    sandbox.add_tickets(inv(2), [{"message": "Opgelost", "sender": "COMPANY", "date": ago(now, 1)}])

    # Run 3: exactly the thread waiting anew is escalated; the answered one leaves the record.
    sandbox.clear_requests()
    assert run(run_dag, example_airflow, DAILY)[0] == [inv(1)]
    assert assigned(sandbox) == [inv(1)]
    record = variable(COMPANY_RECORD)
    assert sorted(record) == [inv(1), inv(3)]
    assert record[inv(1)]["unanswered_since"] == (now - timedelta(days=8)).isoformat()

    # On purpose: escalate_again from the run's params escalates every waiting thread again.
    sandbox.clear_requests()
    assert run(run_dag, example_airflow, DAILY, escalate_again=True)[0] == [inv(1), inv(3)]
    assert assigned(sandbox) == [inv(1), inv(3)]

    # Reset: with the Variable deleted, every waiting thread is escalated once more.
    from airflow.models.variable import Variable

    Variable.delete(COMPANY_RECORD)
    sandbox.clear_requests()
    assert run(run_dag, example_airflow, DAILY)[0] == [inv(1), inv(3)]
    assert variable(COMPANY_RECORD) is not None


def test_mapped_escalations_from_ticket_dicts_keep_a_record_per_map_index(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, sandbox: SandboxHandle, no_records: None
) -> None:
    now = datetime.now(timezone.utc)
    sandbox.add_invoice(inv(1), "club-1", [{"message": "?", "sender": "CUSTOMER", "date": ago(now, 3)}])
    sandbox.add_invoice(inv(2), "club-1", [{"message": "?", "sender": "CUSTOMER", "date": ago(now, 2)}])
    sandbox.add_invoice(inv(3), "club-2", [{"message": "?", "sender": "CUSTOMER", "date": ago(now, 1)}])

    state, output = run_dag(MAPPED)
    assert state == "success", output[-4000:]
    assert example_airflow.xcom(MAPPED, "escalate", map_index=0) == [inv(1), inv(2)]
    assert example_airflow.xcom(MAPPED, "escalate", map_index=1) == [inv(3)]
    key = f"clubcollect.escalated.clubcollect_default.{MAPPED}.escalate"
    assert sorted(variable(f"{key}.0")) == [inv(1), inv(2)]
    assert sorted(variable(f"{key}.1")) == [inv(3)]
    # Judged from the tickets given: no thread was read one by one.
    assert not [r for r in sandbox.requests() if r["path"].startswith("/api/v2/invoices/") and r["method"] == "GET"]

    sandbox.clear_requests()
    state, output = run_dag(MAPPED)
    assert state == "success", output[-4000:]
    assert example_airflow.xcom(MAPPED, "escalate", map_index=0) == []
    assert example_airflow.xcom(MAPPED, "escalate", map_index=1) == []
    assert assigned(sandbox) == []
