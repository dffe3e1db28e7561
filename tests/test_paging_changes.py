"""Issue 25: nothing skipped when a company's list changes while it is read, over HTTP.

Seeded property tests: the sandbox changes the unanswered list at random moments of a concurrent
read (``change_list``: just before its n-th list request), threads leaving (answered, archived),
joining at the end, coming back with their old tickets at their old dates, growing, in mixes
that keep the total or change it.  A ticket present for the whole read comes back exactly once,
and no ticket twice: through the hook, ``UnansweredTicketsTrigger`` and
``UnansweredTicketsEventTrigger`` (the triggers on their view, the tickets awaiting an answer).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.sandbox.state import format_date
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger, UnansweredTicketsTrigger
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import NOW, fast_backoff

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
FAST = fast_backoff()


def at(minutes_before: float) -> str:
    return format_date(NOW - timedelta(minutes=minutes_before))


def company(sandbox: SandboxHandle, unanswered: int, answered: int, spare: int) -> None:
    """``unanswered`` one-ticket threads ``u<n>`` (ticket ``tu<n>``), ``answered`` threads ``a<n>``
    dated among them, and ``spare`` invoices ``e<n>`` without tickets (threads yet to begin)."""
    state = sandbox.sandbox_state
    span = unanswered + answered
    for n in range(unanswered):
        state.add_invoice(
            f"u{n}", CO, [{"ticket_id": f"tu{n}", "message": "?", "sender": "CUSTOMER", "date": at(2 * span - 2 * n)}]
        )
    for n in range(answered):
        minutes = 2 * span - 2 * n * unanswered / max(answered, 1) - 1
        state.add_invoice(
            f"a{n}",
            CO,
            [
                {"message": "?", "sender": "CUSTOMER", "date": at(minutes)},
                {"message": "!", "sender": "COMPANY", "date": at(minutes - 0.5)},
            ],
        )
    for n in range(spare):
        state.add_invoice(f"e{n}", CO, [])


def schedule(
    sandbox: SandboxHandle, rng: random.Random, unanswered: int, answered: int, spare: int, reads: int
) -> set[str]:
    """Schedule one to three random changes at random list requests; the unanswered threads that leave."""
    u = [f"u{n}" for n in range(unanswered)]
    a = [f"a{n}" for n in range(answered)]
    e = [f"e{n}" for n in range(spare)]
    rng.shuffle(u)
    rng.shuffle(a)
    rng.shuffle(e)
    left: set[str] = set()

    def take(pool: list[str], count: int) -> list[str]:
        taken, pool[:] = pool[:count], pool[count:]
        return taken

    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["leave", "join", "back", "grow", "swap", "swap-back", "swap-mid"])
        count = rng.randint(1, 30)
        leave = take(u, {"leave": count, "swap": count, "swap-back": count, "swap-mid": 3 * count}.get(kind, 0))
        left.update(leave)
        split = rng.randint(0, len(leave))
        write = take(e, count) if kind in ("join", "swap") else []
        write += take(a, count) if kind in ("back", "swap-back", "swap-mid") else []
        write += rng.sample(u, min(count, len(u))) if kind == "grow" else []  # they stay in the list
        sandbox.change_list(rng.randint(1, reads), answer=leave[:split], archive=leave[split:], write=write)
    return left


def check(got: list[dict[str, Any]], unanswered: int, left: set[str]) -> None:
    counts = Counter(t["ticket_id"] for t in got)
    assert [i for i, n in counts.items() if n > 1] == [], "a ticket came twice"
    throughout = {f"tu{n}" for n in range(unanswered) if f"u{n}" not in left}
    assert sorted(throughout - set(counts)) == [], "a ticket present for the whole read was skipped"


def read_hook(page_size: int, concurrency: int) -> list[dict[str, Any]]:
    with ClubCollectHook(backoff=FAST) as hook:
        return hook.get_company_tickets(CO, "unanswered", page_size=page_size, max_concurrency=concurrency)


def read_trigger(concurrency: int) -> list[dict[str, Any]]:
    trigger = UnansweredTicketsTrigger(CO, max_concurrency=concurrency, backoff=FAST)

    async def poll() -> list[dict[str, Any]]:
        async with ClubCollectHook(backoff=FAST) as hook:
            return await trigger.select(await hook.aget_company_tickets(CO, "unanswered", max_concurrency=concurrency))

    return asyncio.run(poll())


def read_event_trigger(concurrency: int) -> list[dict[str, Any]]:
    """The events of the watcher's first poll."""
    watcher = UnansweredTicketsEventTrigger(CO, max_concurrency=concurrency, backoff=FAST)

    async def first_poll() -> list[dict[str, Any]]:
        stream = watcher.open_shared_stream(watcher.serialize()[1])
        try:
            poll = await anext(stream)
        finally:
            await stream.aclose()

        async def once() -> Any:
            yield poll

        events = [event.payload async for event in watcher.filter_shared_stream(once())]
        return [dict(ticket) for payload in events for ticket in payload["tickets"]]

    return asyncio.run(first_poll())


@pytest.mark.parametrize("seed", range(40))
def test_hook_returns_every_ticket_present_throughout_once(sandbox: SandboxHandle, seed: int) -> None:
    rng = random.Random(seed)
    unanswered, answered, spare = rng.randint(150, 400), rng.randint(20, 60), 100
    page_size, concurrency = rng.choice([(10, 4), (10, 8), (25, 2), (7, 1), (100, 8)])
    company(sandbox, unanswered, answered, spare)
    left = schedule(sandbox, rng, unanswered, answered, spare, reads=(unanswered + answered) // page_size + 4)

    check(read_hook(page_size, concurrency), unanswered, left)


EVENTS = pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="UnansweredTicketsEventTrigger needs Airflow 3.0+")
TRIGGERS = [
    pytest.param(read_trigger, id="UnansweredTicketsTrigger"),
    pytest.param(read_event_trigger, id="UnansweredTicketsEventTrigger", marks=EVENTS),
]


@pytest.mark.parametrize("read", TRIGGERS)
@pytest.mark.parametrize("seed", range(15))
def test_triggers_report_every_ticket_awaiting_throughout_once(
    sandbox: SandboxHandle, seed: int, read: Callable[[int], list[dict[str, Any]]]
) -> None:
    rng = random.Random(1000 + seed)
    unanswered, answered, spare = rng.randint(600, 1000), rng.randint(50, 150), 100
    concurrency = rng.choice([2, 4, 8])
    company(sandbox, unanswered, answered, spare)
    left = schedule(sandbox, rng, unanswered, answered, spare, reads=(unanswered + answered) // 100 + 4)

    got = read(concurrency)

    check(got, unanswered, left)
    assert {t["invoice_id"] for t in got} <= {f"{p}{n}" for p in "uae" for n in range(unanswered)}


READERS = [
    pytest.param(lambda: read_hook(100, 8), id="hook"),
    pytest.param(lambda: read_trigger(8), id="UnansweredTicketsTrigger"),
    pytest.param(lambda: read_event_trigger(8), id="UnansweredTicketsEventTrigger", marks=EVENTS),
]


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("moment", [2, 3, 8, 12])
def test_the_issue_case_total_unchanged(
    sandbox: SandboxHandle, moment: int, read: Callable[[], list[dict[str, Any]]]
) -> None:
    """1,000 one-ticket threads at the default concurrency; at one list request the 120 oldest are
    answered and 120 new threads arrive, so the total stays 1,000."""
    company(sandbox, 1000, 0, 120)
    sandbox.change_list(moment, answer=[f"u{n}" for n in range(120)], write=[f"e{n}" for n in range(120)])

    got = read()

    check(got, 1000, {f"u{n}" for n in range(120)})
    reads = [r for r in sandbox.requests() if "/companies/" in r["path"]]
    assert len(reads) > moment, "the change came in the middle of the read"


def test_change_list_applies_just_before_the_nth_list_request(sandbox: SandboxHandle) -> None:
    company(sandbox, 3, 1, 1)
    sandbox.change_list(2, answer=["u0"], archive=["u1"], write=["a0", "e0"])

    with ClubCollectHook(backoff=FAST) as hook:
        before = hook.get_company_tickets_page(CO, "unanswered")
        after = hook.get_company_tickets_page(CO, "unanswered")

    assert [t["invoice_id"] for t in before["tickets"]] == ["u0", "u1", "u2"], "the first request: no change yet"
    # a0 came back with its old tickets at their old dates and a new one at the end; e0 began.
    assert [t["invoice_id"] for t in after["tickets"]] == ["a0", "a0", "u2", "a0", "e0"]
    assert sandbox.invoice("u0")["status"] == "answered"
    assert sandbox.invoice("u1")["status"] == "archived"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"after_reads": 0}, 422, "after_reads must be an integer of at least 1, got 0"),
        ({"after_reads": True}, 422, "after_reads must be an integer of at least 1, got True"),
        ({"answer": "u0"}, 422, "answer must be a list of invoice IDs, got 'u0'"),
        ({"write": ["nope"]}, 404, "no invoice 'nope'"),
    ],
)
def test_change_list_refuses_bad_input(sandbox: SandboxHandle, body: dict[str, Any], status: int, message: str) -> None:
    from airflow_provider_clubcollect.sandbox.client import SandboxControlError

    company(sandbox, 1, 0, 0)
    with pytest.raises(SandboxControlError, match=message) as caught:
        sandbox._call("POST", "/list_changes", body)
    assert caught.value.status_code == status
