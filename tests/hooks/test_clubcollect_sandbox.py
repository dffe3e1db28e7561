"""ClubCollectHook against the sandbox: the real wire format, thread transitions, paging edges
and every fault mode as the hook sees it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectNotFoundError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
)
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook, _newest_posted
from tests.conftest import fast_backoff, thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
FAST = fast_backoff()


@pytest.fixture
def hook(sandbox: SandboxHandle) -> Iterator[ClubCollectHook]:
    with ClubCollectHook(backoff=FAST) as hook:
        yield hook


def company_of(sandbox: SandboxHandle, threads: int, tickets_per_thread: int = 1) -> None:
    for n in range(threads):
        sandbox.add_invoice(
            f"{n:040x}", CO, thread(*[("CUSTOMER", 1000 - n - k / 10) for k in range(tickets_per_thread)])
        )


def test_every_call_and_the_headers_the_server_saw(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))

    assert [t["sender"] for t in hook.get_invoice_tickets("inv-1")] == ["CUSTOMER"]
    created = hook.create_ticket("inv-1", "We hebben uw bericht ontvangen")
    assert created["sender"] == "COMPANY"
    assert [t["invoice_id"] for t in hook.get_company_tickets(CO, "answered")] == ["inv-1", "inv-1"]
    hook.archive_tickets("inv-1")
    hook.assign_tickets_to_support("inv-1")
    assert hook.get_company_tickets_page(CO, "archived")["page"]["total_entries"] == 2

    state = sandbox.invoice("inv-1")
    assert (state["status"], state["assigned_to_support"], state["tickets_created"]) == ("archived", True, 1)
    for request in sandbox.requests():
        assert request["authorized"] is True
        assert request["api_key_in_query"] is False
        assert request["user_agent"].startswith("airflow-provider-clubcollect/")
        assert request["content_type"] == "application/json"
        assert request["accept"] == "application/json"


def test_thread_transitions_through_the_hook(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    def status() -> str:
        for name in ("unanswered", "answered", "archived"):
            if hook.get_company_tickets(CO, name):
                return name
        return "none"

    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    assert status() == "unanswered"
    hook.create_ticket("inv-1", "Graag betalen voor de 30e")
    assert status() == "answered"
    hook.archive_tickets("inv-1")
    assert status() == "archived"
    # Dated after the company's reply, which the sandbox dated with the real clock.
    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()
    sandbox.add_tickets("inv-1", [{"message": "Nee", "sender": "CUSTOMER", "date": later}])
    assert status() == "unanswered", "a new customer ticket reopens an archived thread"
    hook.archive_tickets("inv-1")
    hook.create_ticket("inv-1", "Tot ziens")
    assert status() == "answered", "a new company ticket reopens it as answered"


@pytest.mark.parametrize(("threads", "pages"), [(0, 1), (1, 1), (100, 1), (101, 2 + 3), (253, 3 + 3)])
def test_paging_edges(hook: ClubCollectHook, sandbox: SandboxHandle, threads: int, pages: int) -> None:
    sandbox.add_company(CO)
    company_of(sandbox, threads)

    tickets = hook.get_company_tickets(CO, "unanswered")

    assert [t["invoice_id"] for t in tickets] == [f"{n:040x}" for n in range(threads)]
    # More than one page: also page 1 first for the total, and two looks at the tail.
    assert len([r for r in sandbox.requests() if "/companies/" in r["path"]]) == pages


def test_page_past_the_end_is_empty(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    company_of(sandbox, 5)

    page = hook.get_company_tickets_page(CO, "unanswered", page_number=3, page_size=5)

    assert page["tickets"] == []
    assert page["page"] == {"page_number": 3, "page_size": 5, "total_entries": 5, "total_pages": 1}


def test_documented_errors(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    # (422 invalid_message needs a message the hook refuses before sending: the hook's mapping of
    # 422 is covered in test_clubcollect_http.py; the sandbox's in tests/sandbox.)
    cases = [
        (lambda: hook.get_invoice_tickets("nope"), ClubCollectNotFoundError, 404, "invalid_invoice_id"),
        (lambda: hook.create_ticket("nope", "hi"), ClubCollectNotFoundError, 404, "invalid_invoice_id"),
        (lambda: hook.archive_tickets("nope"), ClubCollectNotFoundError, 404, "invalid_invoice_id"),
        (lambda: hook.assign_tickets_to_support("nope"), ClubCollectNotFoundError, 404, "invalid_invoice_id"),
        (lambda: hook.get_company_tickets("nope", "answered"), ClubCollectNotFoundError, 404, "not_found"),
        (lambda: hook.get_company_tickets_page(CO, "answered"), ClubCollectNotFoundError, 404, "not_found"),
    ]
    for call, error, status, code in cases:
        with pytest.raises(error) as info:
            call()
        assert (info.value.status_code, info.value.error_code) == (status, code)


def test_wrong_key_is_auth_error(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": "not-the-key", "host": sandbox.base_url}),
    )
    hook = ClubCollectHook(backoff=FAST)
    with pytest.raises(ClubCollectAuthError) as info:
        hook.get_invoice_tickets("inv-1")
    assert info.value.status_code == 401
    assert hook.test_connection()[0] is False


def test_test_connection_against_the_sandbox(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    assert {r["method"] for r in sandbox.requests()} == {"GET"}


@pytest.mark.parametrize(
    "fault",
    [
        {"fault": "error", "status": 500},
        {"fault": "error", "status": 503},
        {"fault": "rate_limit", "retry_after": 0.2},
        {"fault": "rate_limit", "retry_after": None},
        {"fault": "drop"},
        {"fault": "not_json", "status": 502},
        {"fault": "delay", "seconds": 0.2},
    ],
)
def test_reads_recover_from_each_fault(hook: ClubCollectHook, sandbox: SandboxHandle, fault: dict) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[fault, fault])

    assert len(hook.get_invoice_tickets("inv-1")) == 1
    assert sandbox.requests()[-1]["status"] == 200


def test_idempotent_action_applied_then_dropped_is_retried_safely(
    hook: ClubCollectHook, sandbox: SandboxHandle
) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[{"fault": "apply_then_drop", "method": "POST"}])

    hook.archive_tickets("inv-1")

    state = sandbox.invoice("inv-1")
    assert state["status"] == "archived"
    assert state["actions"]["archive"] == 2, "sent twice, applied with the same effect"


def test_create_applied_then_dropped_is_not_posted_twice(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[{"fault": "apply_then_drop", "method": "POST"}])

    ticket = hook.create_ticket("inv-1", "Eén keer")

    assert sandbox.invoice("inv-1")["tickets_created"] == 1
    assert ticket["message"] == "Eén keer"


class DictStore:
    """The task state store's interface (``get``/``set``), in memory: Airflow's needs a running task."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        assert value is not None
        json.dumps(value)  # what Airflow stores must be JSON
        self.values[key] = value


def test_task_retry_returns_the_recorded_ticket_not_someone_elses(
    hook: ClubCollectHook, sandbox: SandboxHandle
) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    store = DictStore()
    ours = hook.create_ticket("inv-1", "We bellen u", task_state_store=store)
    # The task fails after posting; before its retry a colleague posts the very same text.
    sandbox.add_tickets("inv-1", [{"message": "We bellen u", "sender": "COMPANY", "date": datetime.now(timezone.utc)}])
    sandbox.clear_requests()

    again = hook.create_ticket("inv-1", "We bellen u", task_state_store=store)

    assert again == ours
    assert sandbox.requests() == [], "answered from the record: no read, no post"
    # Without a store the thread read is all there is, and it takes the colleague's for ours.
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    guessed = _newest_posted(hook.get_invoice_tickets("inv-1"), "We bellen u", since)
    assert guessed is not None
    assert guessed["ticket_id"] != ours["ticket_id"]


def test_task_retry_after_a_lost_answer_reads_the_thread_since_the_intent(
    hook: ClubCollectHook, sandbox: SandboxHandle
) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    store = DictStore()
    # Try 1: the POST is applied, its answer lost, and the read that would find it fails.
    sandbox.set_faults(
        script=[
            {"fault": "apply_then_drop", "method": "POST"},
            *[{"fault": "error", "status": 500, "method": "GET"}] * 6,
        ]
    )
    with pytest.raises(ClubCollectServerError):
        hook.create_ticket("inv-1", "Eén keer", task_state_store=store)
    (record,) = store.values.values()
    assert record["ticket"] is None
    assert record["intent_at"]
    sandbox.clear_faults()

    ticket = hook.create_ticket("inv-1", "Eén keer", task_state_store=store)

    assert sandbox.invoice("inv-1")["tickets_created"] == 1
    assert ticket["ticket_id"] == sandbox.invoice("inv-1")["tickets"][-1]["ticket_id"]
    assert store.values == {next(iter(store.values)): {"intent_at": record["intent_at"], "ticket": ticket}}


def test_a_refused_create_forgets_its_intent(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    store = DictStore()
    with pytest.raises(ClubCollectNotFoundError):
        hook.create_ticket("inv-missing", "Hallo", task_state_store=store)
    assert list(store.values.values()) == [{}], "nothing was created: a retry posts without looking"


def test_a_create_refused_by_429_on_every_post_forgets_its_intent(
    hook: ClubCollectHook, sandbox: SandboxHandle
) -> None:
    """Every POST answered 429: nothing was created, so the task's retry posts ours, not a look-alike."""
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    store = DictStore()
    sandbox.set_faults(rate_limit_rate=1.0, retry_after=0)
    with pytest.raises(ClubCollectRateLimitError):
        hook.create_ticket("inv-1", "Eén keer", task_state_store=store)
    assert list(store.values.values()) == [{}]
    sandbox.clear_faults()
    # Before the task's retry a colleague posts the very same text.
    sandbox.add_tickets("inv-1", [{"message": "Eén keer", "sender": "COMPANY", "date": datetime.now(timezone.utc)}])
    sandbox.clear_requests()

    ours = hook.create_ticket("inv-1", "Eén keer", task_state_store=store)

    assert [r["method"] for r in sandbox.requests()] == ["POST"]
    assert [t["message"] for t in sandbox.invoice("inv-1")["tickets"]].count("Eén keer") == 2
    assert ours["ticket_id"] == sandbox.invoice("inv-1")["tickets"][-1]["ticket_id"]


def test_firewall_html_403_is_auth_error(hook: ClubCollectHook, sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[{"fault": "html", "status": 403}])

    with pytest.raises(ClubCollectAuthError) as info:
        hook.get_invoice_tickets("inv-1")
    assert info.value.error_code is None


def test_persistent_faults_fail_loudly_after_the_retry_budget(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(drop_rate=1.0)
    hook = ClubCollectHook(max_retries=3, backoff=FAST)

    with pytest.raises(ClubCollectServerError, match=r"connection lost.*after 4 attempts"):
        hook.get_invoice_tickets("inv-1")
    assert len(sandbox.requests()) == 4


def test_random_faults_every_read_complete(sandbox: SandboxHandle) -> None:
    """A taste of the resilience suite: 30% 5xx and 20% 429 and still every ticket, once."""
    company_of(sandbox, 250)
    sandbox.set_faults(error_rate=0.3, rate_limit_rate=0.2, retry_after=0, random_seed=7)
    hook = ClubCollectHook(max_retries=12, backoff=FAST)

    tickets = hook.get_company_tickets(CO, "unanswered")

    assert [t["invoice_id"] for t in tickets] == [f"{n:040x}" for n in range(250)]


def test_create_that_the_server_applies_after_the_timeout_is_not_posted_twice(sandbox: SandboxHandle) -> None:
    """The POST times out at 1 s; the server applies it at 1.5 s; the hook waits a timeout more (to 2 s),
    finds it, stops.  Half a second on either side, so that a busy machine cannot swap the events."""
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    sandbox.set_faults(script=[{"fault": "delay", "seconds": 1.5, "method": "POST"}])

    ticket = ClubCollectHook(timeout=1.0, backoff=FAST).create_ticket("inv-1", "Laat")

    state = sandbox.invoice("inv-1")
    assert state["tickets_created"] == 1, "posted twice"
    assert ticket["ticket_id"] == state["tickets"][-1]["ticket_id"]
    assert [r["method"] for r in sandbox.requests()] == ["POST", "GET"]


@pytest.mark.parametrize("bad_key", ["SEC\nRETKEY", "SEC RETKEY", "SECRÉTKEY", "SEC\tRET"])
def test_a_key_that_cannot_be_a_header_is_refused_without_quoting_it(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, bad_key: str
) -> None:
    from airflow_provider_clubcollect.exceptions import ClubCollectValidationError

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": bad_key, "host": sandbox.base_url}),
    )
    with pytest.raises(ClubCollectValidationError, match="no API key an HTTP header can carry") as info:
        ClubCollectHook().get_invoice_tickets("inv-1")
    for text in (str(info.value), repr(info.value)):
        assert "RET" not in text
    assert sandbox.requests() == []


@pytest.mark.parametrize("intent_at", ["0001-01-01T00:00:00+00:00", "not a date", 42])
def test_a_hand_edited_record_looks_at_the_whole_thread_and_never_posts_twice(
    hook: ClubCollectHook, sandbox: SandboxHandle, intent_at: Any
) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 3)))
    store = DictStore()
    posted = hook.create_ticket("inv-1", "Eén keer", task_state_store=store)
    (key,) = store.values
    store.values[key] = {"intent_at": intent_at, "ticket": None}  # edited by hand: no ticket, odd date
    sandbox.clear_requests()

    again = hook.create_ticket("inv-1", "Eén keer", task_state_store=store)

    assert again["ticket_id"] == posted["ticket_id"]
    assert [r["method"] for r in sandbox.requests()] == ["GET"]


def test_a_read_in_flight_keeps_its_client_when_the_connection_changes(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read started on the old client finishes on it; the old client closes after that read, not before."""
    import asyncio

    from airflow_provider_clubcollect.hooks import clubcollect

    monkeypatch.setattr(clubcollect, "CONNECTION_TTL", 0.0)
    company_of(sandbox, 3)
    sandbox.set_faults(latency_ms=400)
    changed = {**json.loads(sandbox.conn_uri_json), "extra": {"timeout": 29}}

    async def main() -> tuple[list[Any], list[Any]]:
        async with ClubCollectHook(backoff=FAST) as first, ClubCollectHook(backoff=FAST) as second:
            slow = asyncio.ensure_future(first.aget_company_tickets(CO, "unanswered"))
            while not sandbox.requests():  # the first read is on the wire (held there 400 ms)
                await asyncio.sleep(0.01)
            monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(changed))
            return await asyncio.gather(slow, second.aget_company_tickets(CO, "unanswered"))

    old, new = asyncio.run(main())

    assert [t["invoice_id"] for t in old] == [t["invoice_id"] for t in new] == [f"{n:040x}" for n in range(3)]
    assert len(sandbox.requests()) == 2, "one request each: the first read was not cut off and retried"
