"""Every example DAG, the deferrable sensor, reschedule mode and task retries, run with real Airflow
against the sandbox in this process: ``dag.test()``, which is what `airflow dags test` runs.
Assertions read the sandbox's end state and the run's XCom in the session's database."""

from __future__ import annotations

import ast
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_clubcollect.selection import select_threads
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS
from tests.conftest import EXAMPLE_DAGS, page_reads

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

EXAMPLE_COMPANIES = [
    "97a4208030e13df423f3ff0479579c9f540ec07f",
    "9555b2fcac1eafcf9a5f77a6fcb9182c0bbe3152",
    "3c74fb2e20441803427404b9607810fd3e949b9d",
    "6f946b943e8c341e6b7c904b61c811924144f485",
]


def company_tickets(sandbox: SandboxHandle, company_id: str, status: str) -> list[dict]:
    state = sandbox.state()["invoices"]
    return [
        dict(t, invoice_id=invoice_id)
        for invoice_id, invoice in sorted(state.items())
        if invoice["company_id"] == company_id and invoice["status"] == status
        for t in invoice["tickets"]
    ]


#: Example DAGs with a test of their own below or in a sibling module; every other file in
#: example_dags/ runs in test_every_other_example_dag_runs_green.
TESTED_ONE_BY_ONE = {
    "clubcollect_archive_stale",
    "clubcollect_auto_escalate",
    "clubcollect_export_tickets",
    "clubcollect_fan_out",
    "clubcollect_reply_with_hook",
    "clubcollect_answer_invoice",
    "clubcollect_acknowledge_new_messages",
    "clubcollect_export_to_storage",  # tests/dags/test_export_lineage.py
    "clubcollect_reply_then_escalate",  # tests/dags/test_reply_then_escalate.py
}


def run_ok(run_dag: Callable[..., tuple[str, str]], airflow: AirflowHome, sandbox: SandboxHandle, dag_id: str) -> None:
    # The first request meets a gateway that quotes the Authorization header in a 503: retried,
    # and the key must still appear nowhere.
    sandbox.set_faults(echo_authorization=True, script=[{"fault": "error", "status": 503}])
    state, output = run_dag(dag_id)
    assert state == "success", (airflow.task_states(dag_id), output[-4000:])
    assert any(r["status"] == 503 for r in sandbox.requests()), "the run met the scripted 503"
    assert_key_nowhere(airflow, sandbox, output)


def assert_key_nowhere(airflow: AirflowHome, sandbox: SandboxHandle, output: str) -> None:
    """The key is in no output, no file Airflow wrote and no URL the sandbox received.

    The files are the run's database (XCom, rendered fields, serialized triggers and trigger
    events as next_kwargs, task instance notes) and the task log files.
    """
    from tests.test_secrets import key_fragments, key_nowhere

    key_nowhere(sandbox, output)
    fragments = [fragment.encode() for fragment in key_fragments(sandbox.api_key)]
    for path in airflow.home.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(fragment in content for fragment in fragments), f"the API key reached {path}"


def run_until_polled(
    run_dag: Callable[..., tuple[str, str]],
    sandbox: SandboxHandle,
    dag_id: str,
    *,
    polls: int,
    then: Callable[[], None],
) -> tuple[str, str]:
    """Run the DAG; once the company list was read ``polls`` times, ``then`` runs (in a watcher thread)."""
    failures: list[BaseException] = []
    finished = threading.Event()

    def watch() -> None:
        try:
            while len(page_reads(sandbox)) < polls:
                if finished.wait(0.1):
                    raise AssertionError(f"the run ended before the sensor polled {polls} times")
            then()
        except BaseException as error:
            failures.append(error)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        state, output = run_dag(dag_id)
    finally:
        finished.set()
        watcher.join(timeout=10)
    assert not failures, failures
    return state, output


def test_seed_companies_match_the_example_dags(clubcollect_sandbox: SandboxHandle) -> None:
    assert [c["company_id"] for c in clubcollect_sandbox.companies()] == EXAMPLE_COMPANIES


def test_archive_stale(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    company = EXAMPLE_COMPANIES[0]
    before = company_tickets(clubcollect_sandbox, company, "answered")
    # The run's data_interval_end is "now" within the run; a minute of slack covers the gap.
    expected = select_threads(before, timedelta(days=30), datetime.now(timezone.utc))
    assert expected, "the seed data should hold stale answered threads"

    run_ok(run_dag, example_airflow, clubcollect_sandbox, "clubcollect_archive_stale")

    archived = example_airflow.xcom("clubcollect_archive_stale", "archive_stale_answered")
    assert archived == expected
    state = clubcollect_sandbox.state()["invoices"]
    assert sorted(i for i, inv in state.items() if inv["actions"]["archive"]) == expected
    assert all(state[i]["status"] == "archived" for i in expected)


def test_auto_escalate(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    company = EXAMPLE_COMPANIES[1]
    expected = select_threads(
        company_tickets(clubcollect_sandbox, company, "unanswered"),
        timedelta(days=7),
        datetime.now(timezone.utc),
        unanswered=True,
    )
    assert expected

    run_ok(run_dag, example_airflow, clubcollect_sandbox, "clubcollect_auto_escalate")

    waiting = example_airflow.xcom("clubcollect_auto_escalate", "wait_for_unanswered")
    assert sorted({t["invoice_id"] for t in waiting}) == expected
    assert all(t["sender"] == "CUSTOMER" for t in waiting)
    assert example_airflow.xcom("clubcollect_auto_escalate", "assign_to_support") == expected
    state = clubcollect_sandbox.state()["invoices"]
    assert sorted(i for i, inv in state.items() if inv["assigned_to_support"]) == expected


def test_export_tickets(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    company = EXAMPLE_COMPANIES[2]
    expected = sorted(
        company_tickets(clubcollect_sandbox, company, "unanswered"), key=lambda t: (t["date"], t["ticket_id"])
    )

    run_ok(run_dag, example_airflow, clubcollect_sandbox, "clubcollect_export_tickets")

    fetched = example_airflow.xcom("clubcollect_export_tickets", "fetch_unanswered")
    assert sorted(t["ticket_id"] for t in fetched) == sorted(t["ticket_id"] for t in expected)
    assert [t["date"] for t in fetched] == sorted(t["date"] for t in fetched)
    summary = example_airflow.xcom("clubcollect_export_tickets", "summarize")
    assert summary["tickets"] == len(expected)
    assert summary["threads"] == len({t["invoice_id"] for t in expected})
    assert summary["oldest_date"] == fetched[0]["date"]
    assert {r["method"] for r in clubcollect_sandbox.requests()} == {"GET"}


def test_fan_out_maps_over_companies(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    run_ok(run_dag, example_airflow, clubcollect_sandbox, "clubcollect_fan_out")

    states = example_airflow.task_states("clubcollect_fan_out")
    assert {k: v for k, v in states.items() if k.startswith("fetch_unanswered")} == {
        f"fetch_unanswered[{i}]": "success" for i in range(len(EXAMPLE_COMPANIES))
    }
    for index, company in enumerate(EXAMPLE_COMPANIES):
        mapped = example_airflow.xcom("clubcollect_fan_out", "fetch_unanswered", map_index=index)
        assert sorted(t["ticket_id"] for t in mapped) == sorted(
            t["ticket_id"] for t in company_tickets(clubcollect_sandbox, company, "unanswered")
        )
    totals = example_airflow.xcom("clubcollect_fan_out", "totals")
    assert totals == {c: len(company_tickets(clubcollect_sandbox, c, "unanswered")) for c in EXAMPLE_COMPANIES}


def test_reply_with_hook(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    company = EXAMPLE_COMPANIES[3]
    unanswered_before = {t["invoice_id"] for t in company_tickets(clubcollect_sandbox, company, "unanswered")}

    run_ok(run_dag, example_airflow, clubcollect_sandbox, "clubcollect_reply_with_hook")

    result = example_airflow.xcom("clubcollect_reply_with_hook", "reply_and_archive")
    invoice = clubcollect_sandbox.invoice(result["invoice_id"])
    assert result["invoice_id"] in unanswered_before
    assert invoice["status"] == "archived"
    assert invoice["tickets_created"] == 1
    assert invoice["tickets"][-1]["ticket_id"] == result["reply_ticket_id"]
    assert invoice["tickets"][-1]["sender"] == "COMPANY"

    # A second run answers the thread waiting longest now: another one, and the first not again.
    run_ok(run_dag, example_airflow, clubcollect_sandbox, "clubcollect_reply_with_hook")
    second = example_airflow.xcom("clubcollect_reply_with_hook", "reply_and_archive")
    assert second["invoice_id"] in unanswered_before - {result["invoice_id"]}
    state = clubcollect_sandbox.state()["invoices"]
    assert {i: v["tickets_created"] for i, v in state.items() if v["tickets_created"]} == {
        result["invoice_id"]: 1,
        second["invoice_id"]: 1,
    }


def test_deferrable_sensor_resumes_when_tickets_arrive(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    sandbox = clubcollect_sandbox
    sandbox.reset(seed=None)
    now = datetime.now(timezone.utc)
    sandbox.add_invoice(
        "inv-1",
        "club-1",
        [
            {"message": "Ik wil niet betalen", "sender": "CUSTOMER", "date": (now - timedelta(days=3)).isoformat()},
            {"message": "Graag betalen", "sender": "COMPANY", "date": (now - timedelta(days=2)).isoformat()},
        ],
    )
    dag_id = "clubcollect_test_deferred_wait"

    def member_writes() -> None:
        assert sandbox.state()["invoices"]["inv-1"]["assigned_to_support"] is False
        sandbox.add_tickets("inv-1", [{"message": "Nog steeds niet", "sender": "CUSTOMER", "date": now.isoformat()}])

    # The sensor's own first poke, then at least two polls by the trigger.
    state, output = run_until_polled(run_dag, sandbox, dag_id, polls=3, then=member_writes)
    assert state == "success", output[-4000:]
    assert "running trigger in line" in output, "the sensor deferred to its trigger"
    assert_key_nowhere(example_airflow, sandbox, output)
    waiting = example_airflow.xcom(dag_id, "wait")
    assert [t["message"] for t in waiting] == ["Nog steeds niet"]
    assert example_airflow.xcom(dag_id, "escalate") == ["inv-1"]
    assert sandbox.state()["invoices"]["inv-1"]["assigned_to_support"] is True
    posts = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/api/v2/invoices/inv-1/tickets/actions/assign_to_support"]


@pytest.mark.parametrize("dag_file", sorted(p.name for p in EXAMPLE_DAGS.glob("*.py")))
def test_every_example_dag_opens_with_a_docstring(dag_file: str) -> None:
    doc = ast.get_docstring(ast.parse((EXAMPLE_DAGS / dag_file).read_text()))
    assert doc
    assert "airflow dags test" in doc


def test_every_example_dag_with_its_own_test_exists() -> None:
    assert {p.stem for p in EXAMPLE_DAGS.glob("*.py")} >= TESTED_ONE_BY_ONE


@pytest.mark.parametrize(
    "dag_file", sorted(p.name for p in EXAMPLE_DAGS.glob("*.py") if p.stem not in TESTED_ONE_BY_ONE)
)
def test_every_other_example_dag_runs_green(
    dag_file: str,
    example_dags: dict[str, DAG],
    run_dag: Callable[..., tuple[str, str]],
    example_airflow: AirflowHome,
    clubcollect_sandbox: SandboxHandle,
) -> None:
    """A new example file joins here: each of its DAGs runs green on the seed data."""
    from tests.dags.conftest import too_new_example_dags

    if Path(dag_file).stem in too_new_example_dags():
        pytest.skip(f"{dag_file} needs Airflow {too_new_example_dags()[Path(dag_file).stem]}")
    dags = [dag for dag in example_dags.values() if Path(dag.fileloc) == EXAMPLE_DAGS / dag_file]
    assert dags, f"{dag_file} holds no DAG"
    for dag in dags:
        # Human-in-the-loop operators are Airflow 3.1+ (too_new_example_dags skips their example before).
        asks = {task.task_id for task in dag.tasks if type(task).__name__.startswith("HITL")}
        if asks:
            # No one answers here: with every thread archived nothing waits, and the run must end
            # without asking (`make e2e` answers the questions).
            for invoice_id in clubcollect_sandbox.state()["invoices"]:
                clubcollect_sandbox.sandbox_state.apply_action(invoice_id, "archive")
        state, output = run_dag(dag.dag_id)
        states = example_airflow.task_states(dag.dag_id)
        assert state == "success", (states, output[-4000:])
        assert all(states[task_id] == "skipped" for task_id in asks), states
        assert_key_nowhere(example_airflow, clubcollect_sandbox, output)


def test_reschedule_mode_frees_the_slot_and_succeeds_when_tickets_arrive(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    sandbox = clubcollect_sandbox
    sandbox.reset(seed=None)
    sandbox.add_invoice(
        "inv-1", "club-1", [{"message": "Betaald", "sender": "COMPANY", "date": "2026-01-01T00:00:00+00:00"}]
    )
    dag_id = "clubcollect_test_reschedule"

    def member_writes() -> None:
        now = datetime.now(timezone.utc).isoformat()
        sandbox.add_tickets("inv-1", [{"message": "Toch niet", "sender": "CUSTOMER", "date": now}])

    # Airflow 3.0's dag.test() ends a run after a task's second reschedule (the scheduler does
    # not): there the member writes after the first poke.
    polls = 1 if AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS else 2
    state, output = run_until_polled(run_dag, sandbox, dag_id, polls=polls, then=member_writes)
    assert state == "success", output[-4000:]
    assert example_airflow.reschedules(dag_id, "wait") >= polls, "the sensor gave its slot back between pokes"
    assert [t["message"] for t in example_airflow.xcom(dag_id, "wait")] == ["Toch niet"]


def test_never_twice_across_airflow_task_retries(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, no_retries_sandbox: SandboxHandle
) -> None:
    # Real Airflow (`dag.test()` runs retries and gives each try the task state store).
    sandbox = no_retries_sandbox
    old = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat()
    for invoice_id in ("inv-hook", "inv-operator"):
        sandbox.add_invoice(invoice_id, "club-1", [{"message": "Waarom?", "sender": "CUSTOMER", "date": old}])
    # The operator's first POST is applied but its answer lost, and the read that would find it
    # fails: try 1 fails with the intent recorded, and only the task's retry can find the ticket.
    sandbox.set_faults(
        script=[
            {"fault": "apply_then_drop", "method": "POST", "path_regex": "inv-operator"},
            {"fault": "error", "status": 500, "method": "GET", "path_regex": "inv-operator"},
        ]
    )
    dag_id = "clubcollect_test_retried_reply"

    state, output = run_dag(dag_id)

    assert state == "success", output[-4000:]
    assert example_airflow.task_states(dag_id) == {"reply_then_fail": "success", "create": "success"}
    for invoice_id, task_id in (("inv-hook", "reply_then_fail"), ("inv-operator", "create")):
        invoice = sandbox.invoice(invoice_id)
        assert invoice["tickets_created"] == 1, f"{task_id}: posted {invoice['tickets_created']} times"
        assert example_airflow.xcom(dag_id, task_id)["ticket_id"] == invoice["tickets"][-1]["ticket_id"]
    for invoice_id in ("inv-hook", "inv-operator"):  # both retries found their earlier try's ticket
        assert f"An earlier try of this task posted this message on invoice '{invoice_id}'" in output
