"""The provider under seeded random faults from the sandbox: complete reads, complete bulk actions,
one ticket per create, bounded retries that honour ``Retry-After``, and loud failures once the
retry budget is spent.

Faults (``FAULTS``): 30 % of API requests answer 500/503, 20 % answer 429 (half of them with a
``Retry-After`` of 0, a small number or an HTTP date in the past), 5 % drop the connection; half
of the drops and 5xx answers to a POST strike after the sandbox applied it.  The sandbox draws
them from a seeded generator and every test here sends its requests one at a time, so a run
meets the same faults every time.  Back-offs are injected tiny (``TINY``): no test sleeps long.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from airflow_provider_clubcollect.exceptions import (
    ClubCollectError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
)
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.operators.tickets import (
    ArchiveTicketsOperator,
    CreateTicketOperator,
    EscalateTicketsOperator,
    FetchCompanyTicketsOperator,
)
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger
from airflow_provider_clubcollect.wire import parse_retry_after
from tests.conftest import NOW, running_task, thread

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
PAST_HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
FAULTS: dict[str, Any] = {
    "error_rate": 0.30,
    "rate_limit_rate": 0.20,
    "drop_rate": 0.05,
    "retry_after_choices": [None, None, None, 0, 0.01, PAST_HTTP_DATE],
    "post_after_apply_share": 0.5,
    "random_seed": 7,
}
#: Retries per call under FAULTS: 55 % of attempts fail, so 21 attempts all fail about once in 300,000 calls.
BUDGET = 20


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """The tiny back-off, noting every wait it decides (retry number, Retry-After, wait)."""

    waits: ClassVar[list[tuple[int, str | None, float]]] = []

    def wait_seconds(self, retry_number: int, retry_after: str | None = None) -> float:
        wait = super().wait_seconds(retry_number, retry_after)
        self.waits.append((retry_number, retry_after, wait))
        return wait


TINY = RecordingBackoff(initial=0.001, maximum=0.004, retry_after_max=0.05)


def use_budget(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, max_retries: int = BUDGET) -> None:
    conn = {"conn_type": "clubcollect", "password": sandbox.api_key, "host": sandbox.base_url}
    conn["extra"] = {"max_retries": max_retries}  # type: ignore[assignment]
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(conn))


@pytest.fixture
def faulty(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> SandboxHandle:
    """The emptied sandbox, a retry budget of BUDGET, and a clean record of waits."""
    use_budget(sandbox, monkeypatch)
    RecordingBackoff.waits.clear()
    return sandbox


def retries_stayed_within_bounds(*, many: bool = True) -> None:
    """Every wait came before a retry within the budget, and took what ``Retry-After`` asked."""
    assert all(1 <= number <= BUDGET for number, _, _ in RecordingBackoff.waits)
    honoured = [(header, wait) for _, header, wait in RecordingBackoff.waits if header is not None]
    if many:
        assert {header for header, _ in honoured} >= {"0", "0.01", PAST_HTTP_DATE}, "the faults should send all"
    for header, wait in honoured:
        assert wait == min(parse_retry_after(header) or 0.0, TINY.retry_after_max), (header, wait)


def seed_unanswered(sandbox: SandboxHandle, count: int) -> list[dict[str, Any]]:
    """``count`` CUSTOMER tickets on threads of two, with distinct dates; returns the true list."""
    state = sandbox.sandbox_state
    state.add_company(CO)
    for n in range(0, count, 2):
        tickets = [
            {"message": f"m{k}", "sender": "CUSTOMER", "date": (NOW - timedelta(minutes=count - k)).isoformat()}
            for k in range(n, min(n + 2, count))
        ]
        state.add_invoice(f"inv-{n:05d}", CO, tickets)
    truth = state.company_tickets(CO, "unanswered")
    assert truth is not None
    assert len(truth) == count
    return truth


# --- reads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 100, 101, 2_500])
def test_paging_returns_every_ticket_once_sync(faulty: SandboxHandle, count: int) -> None:
    truth = seed_unanswered(faulty, count)
    faulty.set_faults(**FAULTS)

    with ClubCollectHook(backoff=TINY) as hook:
        got = hook.get_company_tickets(CO, "unanswered")

    assert got == truth
    retries_stayed_within_bounds(many=count == 2_500)


@pytest.mark.parametrize("count", [0, 1, 100, 101, 2_500])
def test_paging_returns_every_ticket_once_async(faulty: SandboxHandle, count: int) -> None:
    truth = seed_unanswered(faulty, count)
    faulty.set_faults(**FAULTS)
    trigger = UnansweredTicketsTrigger(CO, reference_time=NOW.isoformat())

    async def poll() -> list[dict[str, Any]]:
        async with ClubCollectHook(backoff=TINY) as hook:
            return await trigger.select(await hook.aget_company_tickets(CO, "unanswered"))

    got = asyncio.run(poll())

    # Every ticket is a CUSTOMER ticket of an unanswered thread: all of them await an answer.
    assert got == truth
    retries_stayed_within_bounds(many=count == 2_500)


def test_fetch_operator_reads_everything_under_faults(faulty: SandboxHandle) -> None:
    truth = seed_unanswered(faulty, 101)
    faulty.set_faults(**FAULTS)

    assert FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size=7, backoff=TINY).execute({}) == truth


# --- bulk actions ------------------------------------------------------------------------------------------


def test_archive_reaches_every_invoice_and_returns_the_true_set(faulty: SandboxHandle) -> None:
    ids = [f"inv-{n:03d}" for n in range(100)]
    for invoice_id in ids:
        faulty.sandbox_state.add_invoice(invoice_id, CO, thread(("CUSTOMER", 60), ("COMPANY", 45)))
    faulty.set_faults(**FAULTS)

    archived = ArchiveTicketsOperator(
        task_id="t",
        company_id=CO,
        inactive_for=timedelta(days=30),
        reference_time=NOW,
        max_concurrency=1,
        backoff=TINY,
    ).execute({})

    state = faulty.sandbox_state.snapshot()["invoices"]
    assert archived == ids
    assert sorted(i for i, invoice in state.items() if invoice["archived"]) == ids
    retries_stayed_within_bounds()


def test_escalate_reaches_every_invoice_and_returns_the_true_set(
    faulty: SandboxHandle, escalation_store: dict[str, str]
) -> None:
    ids = [f"inv-{n:03d}" for n in range(100)]
    for invoice_id in ids:
        faulty.sandbox_state.add_invoice(invoice_id, CO, thread(("CUSTOMER", 10)))
    faulty.set_faults(**FAULTS)

    escalated = EscalateTicketsOperator(
        task_id="t", invoice_ids=list(reversed(ids)), max_concurrency=1, backoff=TINY
    ).execute({})

    state = faulty.sandbox_state.snapshot()["invoices"]
    assert escalated == ids
    assert sorted(i for i, invoice in state.items() if invoice["assigned_to_support"]) == ids


# --- creates: exactly one ticket each -----------------------------------------------------------------------


def created_once(sandbox: SandboxHandle, invoice_id: str, ticket: dict[str, Any], message: str) -> None:
    invoice = sandbox.sandbox_state.invoice(invoice_id)
    assert invoice["tickets_created"] == 1, f"{invoice_id}: {invoice['tickets_created']} tickets created"
    assert [t["message"] for t in invoice["tickets"]].count(message) == 1
    assert ticket["ticket_id"] == invoice["tickets"][-1]["ticket_id"]


def test_hook_creates_exactly_one_ticket_each(faulty: SandboxHandle) -> None:
    for n in range(60):
        faulty.sandbox_state.add_invoice(f"inv-{n}", CO, thread(("CUSTOMER", 1)))
    faulty.set_faults(**FAULTS)

    with ClubCollectHook(backoff=TINY) as hook:
        created = {f"inv-{n}": hook.create_ticket(f"inv-{n}", f"Reply {n}") for n in range(60)}

    for n in range(60):
        created_once(faulty, f"inv-{n}", created[f"inv-{n}"], f"Reply {n}")
    log = faulty.requests()
    assert {r["fault"] for r in log} >= {"apply_then_drop", "apply_then_error", "drop", "error", "rate_limit"}


def test_operator_creates_exactly_one_ticket_each(faulty: SandboxHandle) -> None:
    for n in range(30):
        faulty.sandbox_state.add_invoice(f"inv-{n}", CO, thread(("CUSTOMER", 1)))
    faulty.set_faults(**FAULTS)

    for n in range(30):
        ticket = CreateTicketOperator(task_id="t", invoice_id=f"inv-{n}", message=f"Reply {n}", backoff=TINY).execute(
            {}
        )
        created_once(faulty, f"inv-{n}", ticket, f"Reply {n}")


def test_create_across_airflow_task_retries_makes_one_ticket(
    faulty: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget of one retry makes tries fail; Airflow's next try must not post again."""
    use_budget(faulty, monkeypatch, max_retries=1)
    for n in range(30):
        faulty.sandbox_state.add_invoice(f"inv-{n}", CO, thread(("CUSTOMER", 1)))
    faulty.set_faults(**FAULTS)
    run = SimpleNamespace(run_after=datetime.now(timezone.utc), start_date=datetime.now(timezone.utc))
    failed_tries = 0

    for n in range(30):
        for try_number in range(1, 20):
            operator = CreateTicketOperator(task_id="t", invoice_id=f"inv-{n}", message=f"Reply {n}", backoff=TINY)
            try:
                with running_task({"ti": SimpleNamespace(try_number=try_number), "dag_run": run}) as context:
                    ticket = operator.execute(context)
                break
            except ClubCollectError:
                failed_tries += 1
        created_once(faulty, f"inv-{n}", ticket, f"Reply {n}")
    assert failed_tries > 0, "the faults should have failed some tries"


# --- beyond the budget: loud, exact failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "error", "last"),
    [
        ({"error_rate": 1.0}, ClubCollectServerError, r"HTTP 50[03]"),
        ({"rate_limit_rate": 1.0, "retry_after": 0}, ClubCollectRateLimitError, r"HTTP 429"),
        ({"drop_rate": 1.0}, ClubCollectServerError, r"connection lost"),
    ],
)
def test_spent_budget_names_call_attempts_and_last_status(
    faulty: SandboxHandle, monkeypatch: pytest.MonkeyPatch, faults: dict[str, Any], error: type, last: str
) -> None:
    use_budget(faulty, monkeypatch, max_retries=2)
    faulty.sandbox_state.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    faulty.set_faults(**faults)

    with pytest.raises(error, match=rf"Could not fetch tickets of invoice 'inv-1': {last}.* after 3 attempts"):
        ClubCollectHook(backoff=TINY).get_invoice_tickets("inv-1")
    assert len(faulty.requests()) == 3


def test_spent_budget_on_create_names_the_last_status(faulty: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    use_budget(faulty, monkeypatch, max_retries=2)
    faulty.sandbox_state.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    faulty.set_faults(script=[{"fault": "error", "status": 503, "method": "POST"}] * 3)

    with pytest.raises(ClubCollectServerError) as info:
        ClubCollectHook(backoff=TINY).create_ticket("inv-1", "Hello")
    assert str(info.value) == (
        "Could not create a ticket on invoice 'inv-1': the answer was lost 3 times in 3 attempts (the last got "
        "HTTP 503) and the ticket is not on the invoice."
    )
    assert faulty.sandbox_state.invoice("inv-1")["tickets_created"] == 0
    assert [r["method"] for r in faulty.requests()] == ["POST", "GET"] * 3


@pytest.mark.parametrize("max_retries", [0, 2, 5])
def test_one_create_sends_at_most_max_retries_plus_one_posts(
    faulty: SandboxHandle, monkeypatch: pytest.MonkeyPatch, max_retries: int
) -> None:
    # Refusals (429: not applied, retried inside the request) and lost answers (a drop after sending:
    # maybe applied, so the thread is read before posting again) take turns: one budget covers both.
    use_budget(faulty, monkeypatch, max_retries=max_retries)
    faulty.sandbox_state.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    turns = [{"fault": "rate_limit", "method": "POST"}, {"fault": "drop", "method": "POST"}]
    faulty.set_faults(script=turns * 20)

    with pytest.raises(ClubCollectError, match=r"Could not create a ticket on invoice 'inv-1'"):
        ClubCollectHook(backoff=TINY).create_ticket("inv-1", "Hello")
    posts = [r for r in faulty.requests() if r["method"] == "POST"]
    assert len(posts) == max_retries + 1
    assert faulty.sandbox_state.invoice("inv-1")["tickets_created"] == 0


def test_spent_budget_in_the_trigger_is_an_error_event(faulty: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    use_budget(faulty, monkeypatch, max_retries=2)
    faulty.sandbox_state.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    faulty.set_faults(error_rate=1.0)

    async def first() -> dict[str, Any]:
        async for event in UnansweredTicketsTrigger(CO, backoff=TINY).run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(first())
    assert event["status"] == "error"
    assert event["error_class"] == "ClubCollectServerError"
    assert "Could not fetch page 1 of unanswered tickets of company 'club-1': HTTP 50" in event["message"]
    assert "after 3 attempts" in event["message"]


def test_bulk_beyond_the_budget_names_each_failure_and_reports_nothing_undone_as_done(
    faulty: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_budget(faulty, monkeypatch, max_retries=1)
    ids = [f"inv-{n:02d}" for n in range(40)]
    for invoice_id in ids:
        faulty.sandbox_state.add_invoice(invoice_id, CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))
    faulty.set_faults(**{**FAULTS, "error_rate": 0.45, "rate_limit_rate": 0.0})

    with ClubCollectHook(backoff=TINY) as hook:
        result = hook.for_each_invoice(hook.archive_tickets, ids, max_concurrency=1, verb="archive")

    archived = {i for i, invoice in faulty.sandbox_state.snapshot()["invoices"].items() if invoice["archived"]}
    assert result.failed, "the faults should outlast a budget of one retry"
    assert set(result.done) <= archived, "an invoice was reported archived but is not"
    assert set(result.done) | set(result.failed) == set(ids)
    with pytest.raises(ClubCollectError) as info:
        result.raise_for_failures()
    message = str(info.value)
    assert f"archive: {len(result.done)} of 40 invoices done, {len(result.failed)} failed" in message
    for invoice_id in result.failed:
        assert invoice_id in message
