"""Concurrent paging against the sandbox, sync (the hook's threads) and async (the trigger's tasks):
every ticket present throughout the read comes once and in order while the list shrinks and grows
between page reads; the read-ahead window; one at a time is sequential; 429 lowers the number in
flight (seen at the server); bad ``max_concurrency`` fails before any request.

The list is changed deterministically from inside the sandbox: a wrapper around the sandbox
state's page read applies a scripted change just before it serves the n-th page read."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import ClubCollectServerError, ClubCollectValidationError
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.paging import MAX_REWINDS
from airflow_provider_clubcollect.sandbox.state import format_date
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import NOW, fast_backoff, page_reads, without_looks

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
FAST = fast_backoff()
SIZE = 10
THREADS = 150  # 15 pages of 10
C = 4


def invoice_id(n: int | str) -> str:
    return f"inv-{n}"


def one_ticket(minutes_before: float) -> list[dict[str, Any]]:
    date = format_date(NOW - timedelta(minutes=minutes_before))
    return [{"message": "Waarom?", "sender": "CUSTOMER", "date": date}]


@pytest.fixture
def company(sandbox: SandboxHandle) -> list[str]:
    """150 unanswered threads of one ticket each, thread n the n-th oldest: their invoice IDs in list order."""
    state = sandbox.sandbox_state
    for n in range(THREADS):
        state.add_invoice(invoice_id(n), CO, one_ticket(10_000 - n))
    return [invoice_id(n) for n in range(THREADS)]


@pytest.fixture
def before_page_read(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Callable[[int], None]], None]:
    """Install ``change(n)``, called in the sandbox just before it serves its n-th page read (from 1)."""
    state = sandbox.sandbox_state
    serve = state.company_tickets_page
    calls = itertools.count(1)
    script: list[Callable[[int], None]] = []

    def serving(*args: Any, **kwargs: Any) -> Any:
        number = next(calls)
        for change in script:
            change(number)
        return serve(*args, **kwargs)

    monkeypatch.setattr(state, "company_tickets_page", serving)
    return script.append


def read_sync(max_concurrency: int = C) -> list[str]:
    with ClubCollectHook(backoff=FAST) as hook:
        tickets = hook.get_company_tickets(CO, "unanswered", page_size=SIZE, max_concurrency=max_concurrency)
    return [t["invoice_id"] for t in tickets]


def read_async(max_concurrency: int = C) -> list[str]:
    async def read() -> list[dict[str, Any]]:
        hook = ClubCollectHook(backoff=FAST)
        return await hook.aget_company_tickets(CO, "unanswered", SIZE, max_concurrency=max_concurrency)

    return [t["invoice_id"] for t in asyncio.run(read())]


READERS = pytest.mark.parametrize("read", [read_sync, read_async], ids=["sync", "async"])


def assert_complete(got: list[str], present_throughout: list[str]) -> None:
    assert len(got) == len(set(got)), "a ticket was returned twice"
    kept = [i for i in got if i in set(present_throughout)]
    assert kept == present_throughout, "a ticket present throughout was skipped, or came out of order"


def archive(sandbox: SandboxHandle, *numbers: int) -> None:
    for n in numbers:
        sandbox.sandbox_state.apply_action(invoice_id(n), "archive")


def add(sandbox: SandboxHandle, name: str, minutes_before: float) -> None:
    sandbox.sandbox_state.add_invoice(invoice_id(name), CO, one_ticket(minutes_before))


@READERS
def test_shrink_before_the_current_page(
    read: Callable[[], list[str]], sandbox: SandboxHandle, company: list[str], before_page_read: Any
) -> None:
    # Threads near the front leave the list twice while later pages are being read: every later
    # ticket moves up, onto pages that may have been read already.
    before_page_read(lambda n: n == 4 and archive(sandbox, 1, 2, 3, 4, 5))
    before_page_read(lambda n: n == 9 and archive(sandbox, 30, 31, 32))

    got = read()

    gone = {invoice_id(n) for n in (1, 2, 3, 4, 5, 30, 31, 32)}
    assert_complete(got, [i for i in company if i not in gone])
    assert len(page_reads(sandbox)) > 15, "the pages that may have shifted were not read again"


@READERS
def test_growth_before_the_current_page(
    read: Callable[[], list[str]], sandbox: SandboxHandle, company: list[str], before_page_read: Any
) -> None:
    # Old threads join the list (a customer wrote on an answered thread) in front of pages read
    # already and of pages read out of order: tickets move down, from one page onto the next.
    before_page_read(lambda n: n == 4 and [add(sandbox, f"old-{k}", 20_000 + k) for k in range(7)])
    before_page_read(lambda n: n == 8 and [add(sandbox, f"mid-{k}", 10_000 - 50.5) for k in range(3)])

    got = read()

    assert_complete(got, company)
    assert [i for i in got if i.startswith("inv-mid")], "the threads joining ahead of the unread pages are read"
    assert len(page_reads(sandbox)) > 15


@READERS
def test_growth_at_the_end(
    read: Callable[[], list[str]], sandbox: SandboxHandle, company: list[str], before_page_read: Any
) -> None:
    before_page_read(lambda n: n == 5 and [add(sandbox, f"new-{k}", 5 - k) for k in range(12)])

    got = read()

    assert got == company + [invoice_id(f"new-{k}") for k in range(12)]


@READERS
def test_shrink_and_growth_several_times(
    read: Callable[[], list[str]], sandbox: SandboxHandle, company: list[str], before_page_read: Any
) -> None:
    before_page_read(lambda n: n == 3 and [add(sandbox, f"old-{k}", 20_000 + k) for k in range(4)])
    before_page_read(lambda n: n == 6 and archive(sandbox, 0, 50, 51))
    before_page_read(lambda n: n == 9 and add(sandbox, "new", 1))
    before_page_read(lambda n: n == 12 and archive(sandbox, 100, 101, 102, 103))
    before_page_read(lambda n: n == 15 and [add(sandbox, f"mid-{k}", 10_000 - 120.5) for k in range(15)])

    got = read()

    gone = {invoice_id(n) for n in (0, 50, 51, 100, 101, 102, 103)}
    assert_complete(got, [i for i in company if i not in gone])
    assert got[-1] == invoice_id("new")


@READERS
def test_a_list_changing_on_every_read_fails_clearly(
    read: Callable[[], list[str]], sandbox: SandboxHandle, company: list[str], before_page_read: Any
) -> None:
    before_page_read(lambda n: add(sandbox, f"new-{n}", 1 / n))

    with pytest.raises(ClubCollectServerError, match=rf"kept changing while it was read \({MAX_REWINDS} restarts\)"):
        read()


@READERS
def test_one_at_a_time_is_sequential(
    read: Callable[..., list[str]], sandbox: SandboxHandle, company: list[str]
) -> None:
    got = read(max_concurrency=1)

    assert got == company
    reads = page_reads(sandbox)
    assert [int(r["query"]["page_number"]) for r in without_looks(reads)] == [1, *range(1, 16)]
    assert max(r["in_flight"] for r in reads) <= 2, "one page at a time, and at most one look beside it"


@READERS
def test_in_flight_at_the_server_stays_within_max_concurrency(
    read: Callable[..., list[str]], sandbox: SandboxHandle, company: list[str]
) -> None:
    # Latency long enough that pages sent together overlap at the server even on a busy machine.
    sandbox.set_faults(latency_ms=200)

    assert read(max_concurrency=3) == company

    reads = page_reads(sandbox)
    assert reads[0]["query"]["page_number"] == "1"
    assert reads[0]["in_flight"] == 1, "page 1 is read alone: it gives the total"
    assert 1 < max(r["in_flight"] for r in reads) <= 3 + 1, "3 pages, and a look at the tail beside them"


@READERS
def test_a_429_halves_the_requests_in_flight(
    read: Callable[..., list[str]], sandbox: SandboxHandle, company: list[str]
) -> None:
    # Page 1 is read alone, so the 429 deterministically lands on it; then 14 pages remain.
    sandbox.set_faults(latency_ms=100, script=[{"fault": "rate_limit", "retry_after": 0}])

    assert read(max_concurrency=8) == company

    reads = page_reads(sandbox)
    assert reads[0]["status"] == 429
    # Halved to 4, then one step up per 4 successes: the first round after the 429 is 4 wide.
    assert max(r["in_flight"] for r in reads[2:6]) <= 4
    assert max(r["in_flight"] for r in reads) < 8

    sandbox.clear_requests()
    sandbox.set_faults(latency_ms=300)  # 5 of 8 pages sent together meet at the server even on a busy machine
    assert read(max_concurrency=8) == company
    assert max(r["in_flight"] for r in page_reads(sandbox)) > 4, "without a 429, more are in flight"


def test_reads_no_further_than_the_window_ahead(sandbox: SandboxHandle) -> None:
    state = sandbox.sandbox_state
    for n in range(200):
        state.add_invoice(invoice_id(n), CO, one_ticket(10_000 - n))
    with ClubCollectHook(backoff=FAST) as hook:
        tickets = hook.iter_company_tickets(CO, "unanswered", page_size=5, max_concurrency=2)
        assert page_reads(sandbox) == [], "nothing is read before the first ticket is asked for"
        first = [next(tickets)["invoice_id"] for _ in range(12)]  # into page 3
        time.sleep(0.5)  # let whatever is in flight arrive: the count below must not depend on timing
        read_ahead = len(without_looks(page_reads(sandbox)))
        rest = [t["invoice_id"] for t in tickets]

    # Page 1 for the total, then pages 1 to 3 and the window of 4 beyond.
    assert read_ahead <= 1 + 3 + 2 * 2, f"read {read_ahead} pages while the consumer was on page 3 (window 4)"
    assert first + rest == [invoice_id(n) for n in range(200)]
    assert sorted(int(r["query"]["page_number"]) for r in without_looks(page_reads(sandbox))) == [1, *range(1, 41)]


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "8", None])
def test_bad_max_concurrency_fails_before_any_request(sandbox: SandboxHandle, bad: Any) -> None:
    from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator
    from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
    from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger, UnansweredTicketsTrigger

    message = rf"max_concurrency must be an integer of at least 1, got {bad!r}"
    hook = ClubCollectHook()
    calls = [
        lambda: hook.iter_company_tickets(CO, "unanswered", max_concurrency=bad),
        lambda: hook.get_company_tickets(CO, "unanswered", max_concurrency=bad),
        lambda: FetchCompanyTicketsOperator(task_id="f", company_id=CO, max_concurrency=bad),
        lambda: UnansweredTicketsSensor(task_id="s", company_id=CO, max_concurrency=bad),
        lambda: UnansweredTicketsTrigger(CO, max_concurrency=bad),
    ]
    if AIRFLOW_V_3_0_PLUS:  # before, the event trigger refuses to be built at all
        calls.append(lambda: UnansweredTicketsEventTrigger(CO, max_concurrency=bad))
    for call in calls:
        with pytest.raises(ClubCollectValidationError, match=message):
            call()
    assert sandbox.requests() == []
