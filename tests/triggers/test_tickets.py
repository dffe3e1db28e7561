"""UnansweredTicketsTrigger under a real event loop against the sandbox (no mocked HTTP)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import NOW, thread

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"


async def first_event(trigger: UnansweredTicketsTrigger, timeout: float = 30) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(run(), timeout)


def test_fires_with_the_tickets_awaiting_an_answer(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 30), ("COMPANY", 20), ("CUSTOMER", 10), ("CUSTOMER", 2)))
    sandbox.add_invoice("inv-2", CO, thread(("CUSTOMER", 5)))
    sandbox.add_invoice("inv-3", CO, thread(("CUSTOMER", 5), ("COMPANY", 4)))

    event = asyncio.run(
        first_event(UnansweredTicketsTrigger(CO, min_tickets=3, reference_time=NOW.isoformat(), poke_interval=0.1))
    )

    assert event["status"] == "success"
    assert [(t["invoice_id"], t["message"]) for t in event["tickets"]] == [
        ("inv-1", "customer message 2"),
        ("inv-2", "customer message 0"),
        ("inv-1", "customer message 3"),
    ]
    assert {r["method"] for r in sandbox.requests()} == {"GET"}, "a trigger only reads"


def test_waits_until_tickets_arrive(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))
    polled = threading.Event()

    def member_answers_later() -> None:
        # After at least two polls saw nothing, a member writes.
        while sum(1 for r in sandbox.requests() if "/companies/" in r["path"]) < 2:
            polled.wait(0.05)
        sandbox.add_tickets("inv-1", thread(("CUSTOMER", 0)))

    writer = threading.Thread(target=member_answers_later)
    writer.start()
    event = asyncio.run(first_event(UnansweredTicketsTrigger(CO, poke_interval=0.2)))
    writer.join()

    assert event["status"] == "success"
    assert [t["message"] for t in event["tickets"]] == ["customer message 0"]
    assert sum(1 for r in sandbox.requests() if "/companies/" in r["path"]) >= 3


def test_unanswered_for_filters_threads(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-old", CO, thread(("CUSTOMER", 10)))
    sandbox.add_invoice("inv-new", CO, thread(("CUSTOMER", 1)))
    trigger = UnansweredTicketsTrigger(
        CO, unanswered_for_seconds=timedelta(days=7).total_seconds(), reference_time=NOW.isoformat()
    )

    event = asyncio.run(first_event(trigger))

    assert [t["invoice_id"] for t in event["tickets"]] == ["inv-old"]


def test_error_event_for_unknown_company(sandbox: SandboxHandle) -> None:
    event = asyncio.run(first_event(UnansweredTicketsTrigger("no-such-company")))

    assert event["status"] == "error"
    assert event["error_class"] == "ClubCollectNotFoundError"
    assert (event["status_code"], event["error_code"]) == (404, "not_found")
    assert "no-such-company" in event["message"]
    json.dumps(event)


def test_error_event_for_bad_key(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": "wrong", "host": sandbox.base_url}),
    )

    event = asyncio.run(first_event(UnansweredTicketsTrigger(CO)))

    assert (event["status"], event["error_class"], event["status_code"]) == ("error", "ClubCollectAuthError", 401)


def test_retries_through_faults_like_the_hook(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    sandbox.set_faults(
        script=[
            {"fault": "error", "status": 503},
            {"fault": "rate_limit", "retry_after": 0.1},
            {"fault": "drop"},
            {"fault": "rate_limit", "retry_after": None},
        ]
    )

    # Tiny back-offs instead of the default half second and up: the retries are what counts.
    fast = {"initial": 0.001, "maximum": 0.005}
    event = asyncio.run(first_event(UnansweredTicketsTrigger(CO, backoff=fast)))

    assert event["status"] == "success"
    statuses = [r["status"] for r in sandbox.requests()]
    assert statuses == [503, 429, None, 429, 200]


def test_serialize_round_trip_holds_no_key(sandbox: SandboxHandle) -> None:
    trigger = UnansweredTicketsTrigger(
        CO, min_tickets=2, unanswered_for_seconds=3600.0, reference_time=None, poke_interval=5.0, max_concurrency=3
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_clubcollect.triggers.tickets.UnansweredTicketsTrigger"
    assert kwargs == {
        "company_id": CO,
        "min_tickets": 2,
        "unanswered_for_seconds": 3600.0,
        "reference_time": None,
        "poke_interval": 5.0,
        "clubcollect_conn_id": "clubcollect_default",
        "backoff": None,
        "timeout_at": None,
        "max_concurrency": 3,
    }
    assert sandbox.api_key not in json.dumps(kwargs)
    assert sandbox.api_key not in repr(trigger)
    again = UnansweredTicketsTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)


@pytest.mark.parametrize("name", ["reference_time", "timeout_at"])
def test_a_moment_that_is_not_iso_8601_is_refused_by_name_before_any_request(sandbox: SandboxHandle, name: str) -> None:
    with pytest.raises(ClubCollectValidationError) as info:
        UnansweredTicketsTrigger(CO, **{name: "next tuesday"})

    assert str(info.value) == (
        f"{name} must be a datetime or an ISO 8601 string such as '2026-06-01T00:00:00+00:00', got 'next tuesday'."
    )
    assert sandbox.requests() == []


def test_cancelled_trigger_closes_its_client(sandbox: SandboxHandle) -> None:
    """The triggerer cancels a trigger when its task times out: the HTTP client must close."""
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))  # nothing to wait for
    closed: list[bool] = []
    trigger = UnansweredTicketsTrigger(CO, poke_interval=60)

    async def run_then_cancel() -> None:
        from airflow_provider_clubcollect.transport import AsyncTransport

        original = AsyncTransport.aclose

        async def spy(self: AsyncTransport) -> None:
            await original(self)
            closed.append(self.client.is_closed)

        AsyncTransport.aclose = spy  # type: ignore[method-assign]
        try:
            task = asyncio.ensure_future(first_event(trigger))
            while not sandbox.requests():
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            AsyncTransport.aclose = original  # type: ignore[method-assign]

    asyncio.run(run_then_cancel())
    assert closed == [True]


def test_any_failure_becomes_an_error_event(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT")

    event = asyncio.run(first_event(UnansweredTicketsTrigger(CO, clubcollect_conn_id="missing_conn")))

    assert event["status"] == "error"
    assert event["error_class"] == "ClubCollectValidationError"
    assert "Connection 'missing_conn' is not defined" in event["message"]
    assert "AIRFLOW_CONN_MISSING_CONN=" in event["message"], "says how to create it"


@pytest.mark.skipif(AIRFLOW_V_3_0_PLUS, reason="Airflow 3.0+ has asset watchers")
def test_the_event_trigger_is_refused_before_airflow_3_with_the_version_it_needs() -> None:
    from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger

    with pytest.raises(
        ClubCollectError, match=r"needs Airflow 3\.0 or later .*UnansweredTicketsSensor\(deferrable=True\)"
    ):
        UnansweredTicketsEventTrigger(company_id="club-1")
