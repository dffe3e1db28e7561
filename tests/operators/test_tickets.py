"""The operators against the sandbox over HTTP: end states on the server and return values."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError
from airflow_provider_clubcollect.operators.tickets import (
    ArchiveTicketsOperator,
    CreateTicketOperator,
    EscalateTicketsOperator,
    FetchCompanyTicketsOperator,
    FetchInvoiceTicketsOperator,
)
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS
from airflow_provider_clubcollect.wire import ID_RULE
from tests.conftest import NOW, running_task, thread

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"


def inv(n: int) -> str:
    return f"{n:040x}"


def posts(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["method"] == "POST"]


# --- fetch -------------------------------------------------------------------------------------------


def test_fetch_company_tickets_reads_every_page_oldest_first(sandbox: SandboxHandle) -> None:
    for n in range(85):  # 85 threads x 3 tickets = 255 tickets: three pages of 100
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 300 - n), ("COMPANY", 200 - n), ("CUSTOMER", 100 - n)))

    tickets = FetchCompanyTicketsOperator(task_id="t", company_id=CO).execute({})

    assert len(tickets) == 255
    assert len({t["ticket_id"] for t in tickets}) == 255
    assert [t["date"] for t in tickets] == sorted(t["date"] for t in tickets)
    assert json.loads(json.dumps(tickets)) == tickets, "XCom values are plain JSON"
    pages = [r["query"].get("page_number") for r in sandbox.requests() if r["query"].get("page_size") == "100"]
    # Page 1 alone (it gives the total), then pages 1 to 3 together (after a look at the tail).
    assert (pages[0], sorted(pages)) == ("1", ["1", "1", "2", "3"])


def test_fetch_company_tickets_streams_to_output_path(sandbox: SandboxHandle, tmp_path: Path) -> None:
    for n in range(40):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 50 - n)))
    target = tmp_path / "exports" / "tickets.jsonl"

    result = FetchCompanyTicketsOperator(
        task_id="t", company_id=CO, page_size=15, output_path=f"file://{target}"
    ).execute({})

    assert result == {"path": f"file://{target}", "count": 40}
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [t["invoice_id"] for t in lines] == [inv(n) for n in range(40)]


def test_fetch_company_tickets_writes_a_page_at_a_time(
    sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    for n in range(40):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 50 - n)))
    writes: list[int] = []
    real_open = ObjectStoragePath.open

    def counting_open(self: Any, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        real_write = handle.write
        handle.write = lambda text: writes.append(text.count("\n")) or real_write(text)
        return handle

    monkeypatch.setattr(ObjectStoragePath, "open", counting_open)
    target = tmp_path / "tickets.jsonl"

    FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size=15, output_path=f"file://{target}").execute({})

    assert writes == [15, 15, 10], "one write per page"
    assert len(target.read_text().splitlines()) == 40


def test_fetch_company_tickets_removes_a_partial_export_on_failure(sandbox: SandboxHandle, tmp_path: Path) -> None:
    for n in range(40):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 50 - n)))
    target = tmp_path / "tickets.jsonl"
    operator = FetchCompanyTicketsOperator(
        task_id="t", company_id=CO, page_size=15, output_path=f"file://{target}", max_concurrency=1
    )
    # The key is revoked after the first page was written: page 2 is answered 401 (never retried).
    sandbox.set_faults(
        script=[
            {"fault": "delay", "seconds": 0, "path_regex": "/companies/"},
            {"fault": "error", "status": 401, "path_regex": "/companies/"},
        ]
    )

    with pytest.raises(ClubCollectError, match="HTTP 401"):
        operator.execute({})
    assert not target.exists(), "a partial export was left behind"
    assert len(sandbox.requests()) == 2


def test_fetch_invoice_tickets(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 3), ("COMPANY", 2)))

    tickets = FetchInvoiceTicketsOperator(task_id="t", invoice_id=inv(1)).execute({})

    assert [t["sender"] for t in tickets] == ["CUSTOMER", "COMPANY"]


def test_fetch_validates_before_any_request(sandbox: SandboxHandle) -> None:
    with pytest.raises(ClubCollectValidationError, match="Unknown ticket status 'closed'"):
        FetchCompanyTicketsOperator(task_id="t", company_id=CO, status="closed")
    with pytest.raises(ClubCollectValidationError, match="page_size must be an integer from 1 to 100, got 500"):
        FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size=500)
    templated = FetchCompanyTicketsOperator(task_id="t", company_id=CO, status="{{ params.status }}")
    templated.status = "closed"  # as rendered
    with pytest.raises(ClubCollectValidationError, match="closed"):
        templated.execute({})
    assert sandbox.requests() == []


# --- create: never twice ---------------------------------------------------------------------------------


def test_create_ticket(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 3)))

    ticket = CreateTicketOperator(task_id="t", invoice_id=inv(1), message="We will call you").execute({})

    assert (ticket["sender"], ticket["message"]) == ("COMPANY", "We will call you")
    state = sandbox.invoice(inv(1))
    assert state["status"] == "answered"
    assert state["tickets_created"] == 1


def test_create_ticket_after_post_applied_and_response_dropped_posts_once(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[{"fault": "apply_then_drop", "method": "POST"}])

    ticket = CreateTicketOperator(task_id="t", invoice_id=inv(1), message="Betaal voor de 30e").execute({})

    state = sandbox.invoice(inv(1))
    assert state["tickets_created"] == 1, "the message was posted twice"
    assert [t["message"] for t in state["tickets"]].count("Betaal voor de 30e") == 1
    assert ticket["ticket_id"] == state["tickets"][-1]["ticket_id"]
    assert [r["method"] for r in sandbox.requests()] == ["POST", "GET"]


def test_create_ticket_after_dropped_connection_not_applied_posts_again(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[{"fault": "drop", "method": "POST"}])

    CreateTicketOperator(task_id="t", invoice_id=inv(1), message="Hello").execute({})

    assert sandbox.invoice(inv(1))["tickets_created"] == 1
    assert [r["method"] for r in sandbox.requests()] == ["POST", "GET", "POST"]


def test_create_ticket_task_retry_does_not_post_twice(sandbox: SandboxHandle) -> None:
    """Try 1 posted but died before recording success; try 2 finds the message and stops."""
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 3)))
    from datetime import datetime, timezone

    run_started = datetime.now(timezone.utc) - timedelta(minutes=1)
    CreateTicketOperator(task_id="t", invoice_id=inv(1), message="Reply").execute({})
    context: Any = {"ti": SimpleNamespace(try_number=2), "dag_run": SimpleNamespace(start_date=run_started)}

    with running_task(context):
        ticket = CreateTicketOperator(task_id="t", invoice_id=inv(1), message="Reply").execute(context)

    state = sandbox.invoice(inv(1))
    assert state["tickets_created"] == 1
    assert ticket["ticket_id"] == state["tickets"][-1]["ticket_id"]


def test_create_ticket_refuses_empty_message_at_parse_time() -> None:
    with pytest.raises(ClubCollectValidationError, match="message must be a non-empty string"):
        CreateTicketOperator(task_id="t", invoice_id=inv(1), message="  ")


# --- archive ---------------------------------------------------------------------------------------------


def stale_and_fresh(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 90), ("COMPANY", 45)))  # answered, stale
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 40), ("COMPANY", 31)))  # answered, stale
    sandbox.add_invoice(inv(3), CO, thread(("CUSTOMER", 40), ("COMPANY", 29)))  # answered, fresh
    sandbox.add_invoice(inv(4), CO, thread(("CUSTOMER", 60)))  # unanswered: other status
    sandbox.add_invoice(inv(5), "club-2", thread(("CUSTOMER", 90), ("COMPANY", 80)))  # other company


def test_archive_stale_answered_threads_of_a_company(sandbox: SandboxHandle) -> None:
    stale_and_fresh(sandbox)

    archived = ArchiveTicketsOperator(
        task_id="t", company_id=CO, inactive_for=timedelta(days=30), reference_time=NOW.isoformat()
    ).execute({})

    assert archived == [inv(1), inv(2)]
    state = sandbox.state()["invoices"]
    assert {i: state[i]["status"] for i in state} == {
        inv(1): "archived",
        inv(2): "archived",
        inv(3): "answered",
        inv(4): "unanswered",
        inv(5): "answered",
    }
    reads = [r for r in sandbox.requests() if r["method"] == "GET"]
    first_post = next(i for i, r in enumerate(sandbox.requests()) if r["method"] == "POST")
    assert all(i < first_post for i, r in enumerate(sandbox.requests()) if r in reads), "pages read first"


@pytest.mark.parametrize("rendered", ["", "None", "  "])
def test_reference_time_rendered_to_nothing_means_the_runs_run_after(sandbox: SandboxHandle, rendered: str) -> None:
    # A run triggered without a logical date (Airflow 3's default) has no data_interval_end;
    # a reference_time template that renders to nothing then means the run's run_after.
    stale_and_fresh(sandbox)

    def archive(run_after: datetime) -> list[str]:
        context: Any = {"dag_run": SimpleNamespace(run_after=run_after)}
        return ArchiveTicketsOperator(
            task_id="t", company_id=CO, inactive_for=timedelta(days=30), reference_time=rendered, dry_run=True
        ).execute(context)

    # inv(3) has been idle 29 days at NOW (so also at the real current time, months later: it
    # would be chosen if "now" were the clock), and 31 days two days after NOW.
    assert archive(NOW) == [inv(1), inv(2)]
    assert archive(NOW + timedelta(days=2)) == [inv(1), inv(2), inv(3)]


def test_archive_dry_run_changes_nothing(sandbox: SandboxHandle) -> None:
    stale_and_fresh(sandbox)

    would = ArchiveTicketsOperator(
        task_id="t", company_id=CO, inactive_for=timedelta(days=30), reference_time=NOW, dry_run=True
    ).execute({})

    assert would == [inv(1), inv(2)]
    assert posts(sandbox) == []
    assert all(not i["archived"] for i in sandbox.state()["invoices"].values())


def test_archive_empty_selection_sends_no_action(sandbox: SandboxHandle) -> None:
    stale_and_fresh(sandbox)

    archived = ArchiveTicketsOperator(
        task_id="t", company_id=CO, inactive_for=timedelta(days=365), reference_time=NOW
    ).execute({})

    assert archived == []
    assert posts(sandbox) == []


def test_archive_partial_failure_archives_the_rest_and_names_the_failure(sandbox: SandboxHandle) -> None:
    for n in range(1, 11):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))
    ids = [inv(n) for n in range(1, 11)] + ["no-such-invoice"]

    with pytest.raises(ClubCollectError) as info:
        ArchiveTicketsOperator(task_id="t", invoice_ids=ids, max_concurrency=4).execute({})

    message = str(info.value)
    assert "Bulk archive: 10 of 11 invoices done, 1 failed. Failed: " in message
    assert "404 invalid_invoice_id: no-such-invoice (no-such-invoice: " in message
    state = sandbox.state()["invoices"]
    assert all(state[inv(n)]["archived"] for n in range(1, 11))


def test_archive_takes_ticket_dicts_and_deduplicates(sandbox: SandboxHandle) -> None:
    for n in (1, 2):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))
    tickets = FetchCompanyTicketsOperator(task_id="f", company_id=CO, status="answered").execute({})
    assert len(tickets) == 4

    archived = ArchiveTicketsOperator(task_id="t", invoice_ids=tickets).execute({})

    assert archived == [inv(1), inv(2)]
    assert sorted(r["path"] for r in posts(sandbox)) == [
        f"/api/v2/invoices/{inv(n)}/tickets/actions/archive" for n in (1, 2)
    ]


def test_archive_is_safe_to_rerun(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))
    for _ in range(2):
        assert ArchiveTicketsOperator(task_id="t", invoice_ids=[inv(1)]).execute({}) == [inv(1)]
    assert sandbox.invoice(inv(1))["status"] == "archived"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "takes either invoice_ids or company_id, not neither"),
        ({"invoice_ids": ["a"], "company_id": CO}, "not both"),
        ({"company_id": CO}, "inactive_for must be a timedelta of zero or more, got None"),
        ({"company_id": CO, "inactive_for": 30}, "got 30"),
        ({"company_id": CO, "inactive_for": timedelta(days=1), "status": "archived"}, "archived threads are archived"),
        ({"company_id": CO, "inactive_for": timedelta(days=1), "status": "open"}, "Unknown ticket status 'open'"),
        ({"invoice_ids": ["a"], "max_concurrency": 0}, "max_concurrency must be an integer of at least 1, got 0"),
    ],
)
def test_archive_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        ArchiveTicketsOperator(task_id="t", **kwargs)


@pytest.mark.parametrize(
    ("invoice_ids", "match"),
    [
        ("abc", "must be a list of invoice ID strings or of ticket dicts, got str"),
        ({"path": "file:///x", "count": 3}, "got dict"),
        ([{"ticket_id": "x"}], "a ticket dict without 'invoice_id'"),
        (["ok", "a/b"], re.escape(f"{ID_RULE}, got 'a/b'")),
        (["ok", ""], "must not be empty"),
    ],
)
def test_archive_bad_invoice_ids_fail_before_any_request(sandbox: SandboxHandle, invoice_ids: Any, match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        ArchiveTicketsOperator(task_id="t", invoice_ids=invoice_ids).execute({})
    assert sandbox.requests() == []


# --- escalate --------------------------------------------------------------------------------------------


def test_escalate_threads_unanswered_too_long(sandbox: SandboxHandle, escalation_store: dict[str, str]) -> None:
    # Unanswered since 10 days (the oldest customer ticket after the last company reply).
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 30), ("COMPANY", 20), ("CUSTOMER", 10), ("CUSTOMER", 1)))
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 3)))  # unanswered for 3 days only
    sandbox.add_invoice(inv(3), CO, thread(("CUSTOMER", 30), ("COMPANY", 29)))  # answered

    escalated = EscalateTicketsOperator(
        task_id="t", company_id=CO, unanswered_for=timedelta(days=7), reference_time=NOW
    ).execute({})

    assert escalated == [inv(1)]
    state = sandbox.state()["invoices"]
    assert [i for i in sorted(state) if state[i]["assigned_to_support"]] == [inv(1)]


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2.11 reads Variables from its database in any process")
def test_escalate_outside_a_task_run_escalates_and_remembers_nothing(sandbox: SandboxHandle) -> None:
    """execute() called directly (a script, a user's unit test) has no Variables on Airflow 3: it still works."""
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))

    def escalate() -> list[str]:
        return EscalateTicketsOperator(  # type: ignore[no-any-return]
            task_id="t", company_id=CO, unanswered_for=timedelta(days=7), reference_time=NOW
        ).execute({})

    assert escalate() == [inv(1)]
    assert escalate() == [inv(1)], "nothing remembered outside a task run"


def test_escalate_dry_run_and_given_ids(sandbox: SandboxHandle, escalation_store: dict[str, str]) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 30)))
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 30)))

    assert EscalateTicketsOperator(task_id="t", invoice_ids=[inv(2), inv(1), inv(2)], dry_run=True).execute({}) == [
        inv(1),
        inv(2),
    ]
    assert posts(sandbox) == []
    assert EscalateTicketsOperator(task_id="t", invoice_ids=[[inv(2)], [inv(1)]]).execute({}) == [inv(1), inv(2)]
    assert all(i["assigned_to_support"] for i in sandbox.state()["invoices"].values())


# --- escalate once per unanswered episode ---------------------------------------------------------------
# Here the record lives in memory (escalation_store); tests/dags/test_escalate_once_per_episode.py keeps it in
# a real Airflow Variable across real DAG runs.

RECORD = "clubcollect.escalated.clubcollect_default.club-1"


def escalate(**kwargs: Any) -> list[str]:
    """One run of a daily escalation: the company's threads waiting more than 7 days (or ``invoice_ids``)."""
    kwargs.setdefault("task_id", "t")
    if "invoice_ids" not in kwargs:
        kwargs = {"company_id": CO, "unanswered_for": timedelta(days=7), "reference_time": NOW, **kwargs}
    return EscalateTicketsOperator(**kwargs).execute({})


def assigned(sandbox: SandboxHandle) -> list[str]:
    """The invoices assigned to support since the sandbox's request log was last cleared."""
    return sorted(r["path"].split("/")[4] for r in posts(sandbox) if r["path"].endswith("/assign_to_support"))


def thread_reads(sandbox: SandboxHandle) -> list[str]:
    """The invoices whose thread was read one by one (GET /invoices/<id>/tickets)."""
    return sorted(
        r["path"].split("/")[4] for r in sandbox.requests() if r["method"] == "GET" and "/invoices/" in r["path"]
    )


def test_escalate_once_per_episode_then_again_when_waiting_anew(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    for n in (1, 2, 3):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 10)))

    assert escalate() == [inv(1), inv(2), inv(3)]
    record = json.loads(escalation_store[RECORD])
    assert record[inv(1)]["unanswered_since"] == (NOW - timedelta(days=10)).isoformat()

    sandbox.clear_requests()
    assert escalate() == []
    assert assigned(sandbox) == []
    assert escalate(dry_run=True) == []

    # Thread 1 is answered and its member writes again (waiting 8 days now); thread 2 is answered.
    sandbox.add_tickets(inv(1), thread(("COMPANY", 9), ("CUSTOMER", 8)))
    sandbox.add_tickets(inv(2), thread(("COMPANY", 1)))
    sandbox.clear_requests()
    assert escalate(dry_run=True) == [inv(1)]
    assert json.loads(escalation_store[RECORD]) == record, "a dry run wrote the record"
    assert escalate() == [inv(1)]
    assert assigned(sandbox) == [inv(1)]
    record = json.loads(escalation_store[RECORD])
    assert sorted(record) == [inv(1), inv(3)], "the answered thread is forgotten, the rest kept"
    assert record[inv(1)]["unanswered_since"] == (NOW - timedelta(days=8)).isoformat()

    sandbox.clear_requests()
    assert escalate(escalate_again=True) == [inv(1), inv(3)]
    assert escalate(escalate_again="True") == [inv(1), inv(3)], "as '{{ params.escalate_again }}' renders"
    assert assigned(sandbox) == [inv(1), inv(1), inv(3), inv(3)]


def test_escalate_dry_run_on_a_new_record_writes_nothing(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))

    assert escalate(dry_run=True) == [inv(1)]
    assert escalate(dry_run=True, invoice_ids=[inv(1)]) == [inv(1)]
    assert escalation_store == {}
    assert posts(sandbox) == []


def test_escalate_bare_ids_reads_each_thread_once_a_run(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 20), ("COMPANY", 15), ("CUSTOMER", 5)))

    assert escalate(invoice_ids=[inv(2), inv(1)]) == [inv(1), inv(2)]
    assert thread_reads(sandbox) == [inv(1), inv(2)]
    (key,) = escalation_store
    assert key == "clubcollect.escalated.clubcollect_default.no_dag.t"  # in a task: the DAG's ID
    assert json.loads(escalation_store[key])[inv(2)]["unanswered_since"] == (NOW - timedelta(days=5)).isoformat()

    sandbox.clear_requests()
    assert escalate(invoice_ids=[inv(1), inv(2)]) == []
    assert thread_reads(sandbox) == [inv(1), inv(2)]
    assert assigned(sandbox) == []


def test_escalate_ticket_dicts_are_judged_from_the_tickets_given(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 10)))

    def fetched() -> list[Any]:
        return FetchCompanyTicketsOperator(task_id="fetch", company_id=CO).execute({})

    assert escalate(invoice_ids=fetched()) == [inv(1), inv(2)]
    sandbox.add_tickets(inv(2), thread(("COMPANY", 3), ("CUSTOMER", 2)))
    sandbox.clear_requests()
    assert escalate(invoice_ids=fetched()) == [inv(2)]
    assert thread_reads(sandbox) == [], "no thread was read one by one"


def test_escalate_given_thread_waiting_for_no_answer_is_escalated_and_not_remembered(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10), ("COMPANY", 9)))

    assert escalate(invoice_ids=[inv(1)]) == [inv(1)]
    assert escalation_store == {}, "nothing to remember: the thread waits for no answer"
    assert escalate(invoice_ids=[inv(1)]) == [inv(1)]


@pytest.mark.parametrize("company", [True, False], ids=["company", "invoice_ids"])
def test_escalate_assigns_nothing_when_the_record_cannot_be_read(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, company: bool
) -> None:
    from airflow_provider_clubcollect import escalation

    def unreachable(key: str) -> str:
        raise ConnectionError("API server unreachable")

    monkeypatch.setattr(escalation, "read_variable", unreachable)
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))

    with pytest.raises(ClubCollectError, match=r"Could not read the record .*Nothing was assigned to support"):
        escalate() if company else escalate(invoice_ids=[inv(1)])
    assert posts(sandbox) == []


def test_escalate_assigns_nothing_when_the_record_is_not_one(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))
    escalation_store[RECORD] = '["not", "a", "record"]'

    with pytest.raises(ClubCollectError, match=r"is not a record of escalated threads.*Delete the Variable"):
        escalate()
    assert posts(sandbox) == []


def test_escalate_names_what_it_assigned_but_could_not_record(
    sandbox: SandboxHandle, escalation_store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_clubcollect import escalation

    def read_only(key: str, value: str) -> None:
        raise PermissionError("read-only database")

    monkeypatch.setattr(escalation, "write_variable", read_only)
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))

    with pytest.raises(ClubCollectError, match=rf"Could not write the record .*Not remembered as escalated: {inv(1)}"):
        escalate()
    assert assigned(sandbox) == [inv(1)]


def test_escalate_remembers_what_succeeded_when_some_fail(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    for n in (1, 2):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 10)))
    sandbox.set_faults(script=[{"fault": "error", "status": 404, "method": "POST", "path_regex": inv(2)}])

    with pytest.raises(ClubCollectError, match=rf"Bulk assign to support: 1 of 2 invoices done, 1 failed.*{inv(2)}"):
        escalate()
    assert sorted(json.loads(escalation_store[RECORD])) == [inv(1)]
    sandbox.clear_requests()
    assert escalate() == [inv(2)], "the failed one is tried again, the other not"


def test_escalate_remembers_what_it_assigned_before_the_key_was_refused(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    for n in (1, 2, 3):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 10)))
    sandbox.set_faults(script=[{"fault": "error", "status": 401, "method": "POST", "path_regex": inv(2)}])

    with pytest.raises(ClubCollectError, match="refused the API key"):
        escalate(max_concurrency=1)
    state = sandbox.state()["invoices"]
    assert [i for i in sorted(state) if state[i]["assigned_to_support"]] == [inv(1)]
    assert sorted(json.loads(escalation_store[RECORD])) == [inv(1)]


def test_escalate_does_not_assign_a_thread_it_could_not_read(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))

    with pytest.raises(
        ClubCollectError, match=rf"1 of 2 .*reading its thread: {inv(9)} \({inv(9)}: 404 invalid_invoice_id"
    ):
        escalate(invoice_ids=[inv(1), inv(9)])
    assert assigned(sandbox) == [inv(1)]


def test_escalate_keeps_what_another_task_recorded_meanwhile(
    sandbox: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 10)))
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 10)))
    escalation_store[RECORD] = json.dumps({inv(2): {"unanswered_since": (NOW - timedelta(days=10)).isoformat()}})
    sibling = {"unanswered_since": (NOW - timedelta(days=30)).isoformat()}

    class Concurrent(EscalateTicketsOperator):
        def _act(self, invoice_id: str) -> None:
            super()._act(invoice_id)
            # Another DAG escalating the same company saves while this task assigns.
            escalation_store[RECORD] = json.dumps({**json.loads(escalation_store[RECORD]), inv(7): sibling})

    assert Concurrent(task_id="t", company_id=CO, unanswered_for=timedelta(days=7), reference_time=NOW).execute({}) == [
        inv(1)
    ]
    assert sorted(json.loads(escalation_store[RECORD])) == [inv(1), inv(2), inv(7)]


def test_escalation_record_keys() -> None:
    from airflow_provider_clubcollect.escalation import MAX_KEY_LENGTH

    def key(context: dict[str, Any] | None = None, **kwargs: Any) -> str:
        return EscalateTicketsOperator(task_id="t", **kwargs)._record_key(context or {})

    def ti(map_index: int) -> dict[str, Any]:
        return {"ti": SimpleNamespace(dag_id="daily", task_id="escalate", map_index=map_index)}

    by_company = {"company_id": CO, "unanswered_for": timedelta(days=7)}
    assert key(**by_company) == "clubcollect.escalated.clubcollect_default.club-1"
    assert key(**by_company, clubcollect_conn_id="prod") == "clubcollect.escalated.prod.club-1"
    assert key(ti(-1), invoice_ids=["i"]) == "clubcollect.escalated.clubcollect_default.daily.escalate"
    assert key(ti(3), invoice_ids=["i"]) == "clubcollect.escalated.clubcollect_default.daily.escalate.3"
    assert key(ti(3), invoice_ids=["i"], escalation_record="shared.record") == "shared.record"
    # IDs a URL path cannot carry are replaced, with a digest that keeps two IDs apart.
    odd = [key(company_id=c, unanswered_for=timedelta(0)) for c in ("club 1", "club?1", "club#1")]
    assert all(k.startswith("clubcollect.escalated.clubcollect_default.club_1-") for k in odd)
    assert len(set(odd)) == 3
    long = [key(company_id=c * 300, unanswered_for=timedelta(0)) for c in "ab"]
    assert all(len(k) == MAX_KEY_LENGTH for k in long)
    assert long[0] != long[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"escalate_again": "maybe"}, "escalate_again must be True or False"),
        ({"escalate_again": 1}, "escalate_again must be True or False"),
        ({"escalation_record": "a/b"}, "escalation_record must be an Airflow Variable key"),
        ({"escalation_record": "x" * 251}, "at most 250 characters"),
    ],
)
def test_escalate_bad_record_arguments_fail_at_parse_time(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        EscalateTicketsOperator(task_id="t", invoice_ids=["i"], **kwargs)


def test_bulk_action_retries_through_5xx_and_429(sandbox: SandboxHandle, escalation_store: dict[str, str]) -> None:
    for n in range(1, 6):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 9)))
    sandbox.set_faults(
        script=[
            {"fault": "error", "status": 503, "method": "POST"},
            {"fault": "rate_limit", "retry_after": 0, "method": "POST"},
            {"fault": "drop", "method": "POST"},
        ]
    )

    assert EscalateTicketsOperator(task_id="t", invoice_ids=[inv(n) for n in range(1, 6)]).execute({}) == [
        inv(n) for n in range(1, 6)
    ]
    assert all(i["assigned_to_support"] for i in sandbox.state()["invoices"].values())


# --- backoff for the requests; retry_policy is Airflow's, for the task ------------------------------------

needs_airflow_3_3 = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="task retry policies (retry_policy=) arrived in Airflow 3.3"
)


def an_airflow_task_retry_policy() -> Any:
    from airflow.providers.common.compat.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(rules=[RetryRule(exception=ClubCollectValidationError, action=RetryAction.FAIL)])


def test_backoff_tunes_requests(sandbox: SandboxHandle) -> None:
    from airflow_provider_clubcollect.retry import Backoff

    ours = Backoff(initial=0.001)

    tuned = ArchiveTicketsOperator(task_id="a", invoice_ids=["i"], backoff=ours)
    from_dict = ArchiveTicketsOperator(task_id="b", invoice_ids=["i"], backoff={"initial": 2.0})

    assert (tuned.backoff, tuned.hook.backoff) == (ours, ours)
    assert tuned.hook.settings.max_retries == 5, "the count is the connection's"
    assert from_dict.hook.backoff == Backoff(initial=2.0)
    assert ArchiveTicketsOperator(task_id="c", invoice_ids=["i"]).hook.backoff == Backoff()


@needs_airflow_3_3
def test_retry_policy_goes_to_airflow_untouched(sandbox: SandboxHandle) -> None:
    from airflow_provider_clubcollect.retry import Backoff

    theirs = an_airflow_task_retry_policy()

    task = ArchiveTicketsOperator(task_id="a", invoice_ids=["i"], backoff=Backoff(initial=0.001), retry_policy=theirs)

    assert task.retry_policy is theirs
    assert task.hook.backoff == Backoff(initial=0.001)


def test_default_args_partial_and_expand_reach_every_operator_and_the_sensor() -> None:
    """Airflow applies default_args, and checks partial() and expand(), through each class's own
    __init__: the connection, the back-off and Airflow's retry_policy must be named there, not only in the base."""
    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_clubcollect.retry import Backoff

    ours = Backoff(initial=0.001)
    defaults: dict[str, Any] = {"clubcollect_conn_id": "from_defaults", "backoff": ours}
    if AIRFLOW_V_3_3_PLUS:
        defaults["retry_policy"] = theirs = an_airflow_task_retry_policy()
    with DAG("defaults", schedule=None, default_args=defaults):
        built = [
            FetchInvoiceTicketsOperator(task_id="fetch_invoice", invoice_id="inv"),
            FetchCompanyTicketsOperator(task_id="fetch_company", company_id=CO),
            CreateTicketOperator(task_id="create", invoice_id="inv", message="Hallo"),
            ArchiveTicketsOperator(task_id="archive", invoice_ids=["inv"]),
            EscalateTicketsOperator(task_id="escalate", invoice_ids=["inv"]),
            UnansweredTicketsSensor(task_id="sensor", company_id=CO),
        ]
        partial = FetchInvoiceTicketsOperator.partial(task_id="mapped", clubcollect_conn_id="cc", backoff=ours).expand(
            invoice_id=["a", "b"]
        )
        by_conn = FetchInvoiceTicketsOperator.partial(task_id="by_conn", invoice_id="a").expand(
            clubcollect_conn_id=["cc1", "cc2"]
        )

    for task in built:
        assert (task.clubcollect_conn_id, task.backoff) == ("from_defaults", ours), task.task_id
        if AIRFLOW_V_3_3_PLUS:
            assert task.retry_policy is theirs, task.task_id
    assert (partial.partial_kwargs["clubcollect_conn_id"], partial.partial_kwargs["backoff"]) == ("cc", ours)
    assert by_conn.expand_input.value == {"clubcollect_conn_id": ["cc1", "cc2"]}
