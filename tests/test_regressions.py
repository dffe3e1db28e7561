"""One test per defect found by the outside trial of issue 12, each failing before its fix.

The API is played by pytest-httpserver (scripted answers) or by the sandbox (state), over loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from airflow_provider_clubcollect.exceptions import (
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectServerError,
    ClubCollectValidationError,
)
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.operators.tickets import ArchiveTicketsOperator, EscalateTicketsOperator
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_2_PLUS
from airflow_provider_clubcollect.wire import ID_RULE
from tests.conftest import thread

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

KEY = "regression-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
INVOICE = "a" * 40
COMPANY = "c" * 40
TINY = Backoff(initial=0.001, maximum=0.002)
#: The most characters any single-call error message may have.
MESSAGE_BOUND = 2_000


def point_at(monkeypatch: pytest.MonkeyPatch, host: str, **fields: Any) -> None:
    conn = {"conn_type": "clubcollect", "password": KEY, "host": host, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(conn))


@pytest.fixture
def api(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """pytest-httpserver as ClubCollect, one retry at most per call."""
    point_at(monkeypatch, httpserver.url_for("/api"), extra={"max_retries": 1})
    return httpserver


def hook() -> ClubCollectHook:
    return ClubCollectHook(backoff=TINY)


def serve_company_list(api: HTTPServer, tickets: list[dict[str, Any]], status: str = "answered") -> None:
    body = {
        "tickets": tickets,
        "page": {"page_number": 1, "page_size": 100, "total_entries": len(tickets), "total_pages": 1},
    }
    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/{status}").respond_with_json(body)


# --- 1. deep nesting -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 500])
def test_1_deeply_nested_json_is_a_clubcollect_error(api: HTTPServer, status: int) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data("[" * 100_000, status=status)

    with pytest.raises(ClubCollectServerError) as info:
        hook().get_invoice_tickets(INVOICE)
    assert len(str(info.value)) < MESSAGE_BOUND


# --- 2. a company ticket without a date ----------------------------------------------------------------


def dateless(status: str) -> list[dict[str, Any]]:
    sender = "COMPANY" if status == "answered" else "CUSTOMER"
    return [{"invoice_id": INVOICE, "ticket_id": "t1", "message": "m", "sender": sender}]


@pytest.mark.parametrize("which", ["archive", "escalate", "sensor"])
def test_2_ticket_without_date_is_a_clubcollect_error(
    api: HTTPServer, which: str, escalation_store: dict[str, str]
) -> None:
    status = "answered" if which == "archive" else "unanswered"
    serve_company_list(api, dateless(status), status)
    if which == "archive":
        run = ArchiveTicketsOperator(task_id="t", company_id=COMPANY, inactive_for=timedelta(days=1)).execute
    elif which == "escalate":
        run = EscalateTicketsOperator(task_id="t", company_id=COMPANY, unanswered_for=timedelta(days=1)).execute
    else:
        run = UnansweredTicketsSensor(task_id="t", company_id=COMPANY, unanswered_for=timedelta(days=1)).poke

    with pytest.raises(ClubCollectServerError, match=r"ticket 't1' .*no 'date'"):
        run({})


# --- 3. dates at the edge of the calendar ---------------------------------------------------------------


def test_3_dates_at_the_edge_of_the_calendar_select_without_overflow(api: HTTPServer) -> None:
    tickets = [
        {
            "invoice_id": "old",
            "ticket_id": "t1",
            "message": "m",
            "sender": "COMPANY",
            "date": "0001-01-01T00:00:00+00:01",
        },
        {
            "invoice_id": "new",
            "ticket_id": "t2",
            "message": "m",
            "sender": "COMPANY",
            "date": "9999-12-31T23:59:59-01:00",
        },
    ]
    serve_company_list(api, tickets)

    chosen = ArchiveTicketsOperator(
        task_id="t", company_id=COMPANY, inactive_for=timedelta(days=30), dry_run=True
    ).execute({})

    assert chosen == ["old"], "the year-1 thread is stale, the year-9999 one is not"
    edge = UnansweredTicketsSensor(task_id="t", company_id="x", reference_time="9999-12-31T23:59:59-01:00")
    from airflow_provider_clubcollect.selection import to_utc

    assert to_utc(edge.reference_time) == datetime.max.replace(tzinfo=timezone.utc)


# --- 4. error messages of bounded size -------------------------------------------------------------


def test_4_a_huge_error_code_gives_a_bounded_message(api: HTTPServer) -> None:
    huge = "x" * 5_000_000
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_json({"error": huge}, status=500)

    with pytest.raises(ClubCollectServerError) as info:
        hook().get_invoice_tickets(INVOICE)
    assert len(str(info.value)) < MESSAGE_BOUND
    assert len(info.value.error_code or "") < MESSAGE_BOUND


def test_4_a_bulk_failure_of_huge_messages_is_bounded(api: HTTPServer) -> None:
    ids = [f"{n:040x}" for n in range(5)]
    for invoice_id in ids:
        api.expect_request(f"/api/v2/invoices/{invoice_id}/tickets/actions/archive").respond_with_json(
            {"error": "y" * 1_000_000}, status=500
        )

    with pytest.raises(ClubCollectError) as info:
        ArchiveTicketsOperator(task_id="t", invoice_ids=ids).execute({})
    message = str(info.value)
    assert all(invoice_id in message for invoice_id in ids), "each failed invoice is named"
    assert len(message) < MESSAGE_BOUND * 2


# --- 5. the key echoed back by the server ------------------------------------------------------------------


ECHOES = [
    pytest.param(lambda: ({"error": f"bad header Authorization: ApiKey {KEY}"}, "json"), id="in-the-error-code"),
    pytest.param(lambda: (f"<html><p>Authorization: ApiKey {KEY}</p></html>", "html"), id="in-an-html-page"),
]


@pytest.mark.parametrize("echo", ECHOES)
def test_5_an_echoed_key_never_reaches_errors_bulk_failures_events_or_logs(
    api: HTTPServer, echo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body, kind = echo()
    respond = (
        (lambda handler: handler.respond_with_json(body, status=500))
        if kind == "json"
        else (lambda handler: handler.respond_with_data(body, status=500, content_type="text/html"))
    )
    respond(api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets"))
    respond(api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets/actions/archive"))
    respond(api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/unanswered"))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ClubCollectError) as single:
        hook().get_invoice_tickets(INVOICE)
    assert KEY not in str(single.value)
    with pytest.raises(ClubCollectError) as bulk:
        ArchiveTicketsOperator(task_id="t", invoice_ids=[INVOICE]).execute({})
    event = asyncio.run(_first_event(UnansweredTicketsTrigger(COMPANY)))

    assert event["status"] == "error"
    for text in (str(single.value), repr(single.value), str(bulk.value), json.dumps(event), caplog.text):
        assert KEY not in text
    assert "***" in str(single.value)


async def _first_event(trigger: UnansweredTicketsTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("no event")


# --- 6. a create out of retries names the last status ------------------------------------------------------


def test_6_create_out_of_retries_names_the_last_status(api: HTTPServer) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets"
    api.expect_request(path, method="POST").respond_with_json({"error": "service_unavailable"}, status=503)
    api.expect_request(path, method="GET").respond_with_json({"tickets": []})

    with pytest.raises(ClubCollectServerError) as info:
        hook().create_ticket(INVOICE, "Hello")
    message = str(info.value)
    assert "create a ticket on invoice" in message
    assert "2 times" in message
    assert "HTTP 503" in message
    assert info.value.status_code == 503


# --- 7. a connection extra that is a JSON list -----------------------------------------------------------


def test_7_extra_that_is_a_list_is_refused(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    if AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_2_PLUS:
        pytest.skip("Airflow 3.0 and 3.1 drop a connection whose extra is not an object: it is then not defined")
    point_at(monkeypatch, httpserver.url_for("/api"), extra=["timeout", 5])

    with pytest.raises(ClubCollectValidationError, match=r"extra must be a JSON object .*got list"):
        hook().get_invoice_tickets(INVOICE)
    assert httpserver.log == []


# --- 8. a base URL with an impossible port ------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:99999/api", "http://127.0.0.1:0/api", "https://app.clubcollect.com:port/api"]
)
def test_8_impossible_port_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    point_at(monkeypatch, host)

    with pytest.raises(ClubCollectValidationError, match=r"the port must be an integer from 1 to 65535"):
        hook().get_invoice_tickets(INVOICE)


# --- 9. IDs padded with whitespace ---------------------------------------------------------------------------


@pytest.mark.parametrize("padded", [" abc", "abc ", "\tabc", "abc\u00a0"])
def test_9_padded_ids_are_refused_before_any_request(api: HTTPServer, padded: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=re.escape(f"invoice_id {ID_RULE}, got {padded!r}")):
        hook().get_invoice_tickets(padded)
    with pytest.raises(ClubCollectValidationError, match=re.escape(f"company_id {ID_RULE}, got {padded!r}")):
        hook().get_company_tickets(padded, "answered")
    assert api.log == []


# --- 10. the sensor's templated reference_time is checked first -----------------------------------------


def test_10_sensor_checks_reference_time_before_reading(sandbox: SandboxHandle) -> None:
    for n in range(150):
        sandbox.sandbox_state.add_invoice(f"inv-{n}", "club-1", thread(("CUSTOMER", 3)))
    sensor = UnansweredTicketsSensor(task_id="t", company_id="club-1", reference_time="{{ nonsense }}")
    sensor.reference_time = "yesterday-ish"  # as rendered

    with pytest.raises(ClubCollectValidationError, match="reference_time must be a datetime or an ISO 8601"):
        sensor.poke({})
    assert sandbox.requests() == []


# --- 11. max_retries has an upper bound ----------------------------------------------------------------------


def test_11_max_retries_is_bounded_and_backoff_never_overflows(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClubCollectValidationError, match=r"max_retries must be an integer from 0 to 100, got 5000"):
        ClubCollectHook(max_retries=5000)
    point_at(monkeypatch, "http://127.0.0.1:1/api", extra={"max_retries": 2000})
    with pytest.raises(ClubCollectValidationError, match=r"'max_retries' must be an integer from 0 to 100"):
        hook().get_invoice_tickets(INVOICE)
    assert 0 < Backoff().delay(5000) <= Backoff().maximum


# --- 12. the trigger's own deadline ------------------------------------------------------------------------


def test_12_trigger_ends_at_its_own_deadline_like_the_poking_sensor(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", "club-1", thread(("CUSTOMER", 9), ("COMPANY", 8)))  # nothing awaits an answer
    timeout_at = (datetime.now(timezone.utc) + timedelta(seconds=0.5)).isoformat()
    trigger = UnansweredTicketsTrigger("club-1", poke_interval=0.05, timeout_at=timeout_at)
    _, kwargs = trigger.serialize()
    assert kwargs["timeout_at"] == timeout_at
    assert sandbox.api_key not in json.dumps(kwargs)

    # As `airflow dags test` runs it: rebuilt from its kwargs, with nobody to cancel it.
    event = asyncio.run(asyncio.wait_for(_first_event(UnansweredTicketsTrigger(**kwargs)), 30))

    assert event["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout):
        UnansweredTicketsSensor(task_id="t", company_id="club-1").resume_execution(
            "execute_complete", {"event": event}, {}
        )
    with pytest.raises(AirflowSkipException):
        UnansweredTicketsSensor(task_id="t", company_id="club-1", soft_fail=True).resume_execution(
            "execute_complete", {"event": event}, {}
        )


def test_12_sensor_gives_the_trigger_its_deadline(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", "club-1", thread(("CUSTOMER", 9), ("COMPANY", 8)))
    before = datetime.now(timezone.utc)

    with pytest.raises(TaskDeferred) as deferred:
        UnansweredTicketsSensor(task_id="t", company_id="club-1", deferrable=True, timeout=12).execute({})

    timeout_at = datetime.fromisoformat(deferred.value.trigger.serialize()[1]["timeout_at"])
    assert before < timeout_at <= datetime.now(timezone.utc) + timedelta(seconds=12)


# --- from issue 10: a 404 without the API's code hints at the base URL -----------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/api/v2/invoices/{INVOICE}/tickets", "<html><h1>Not Found</h1></html>"),
        (f"/api/v2/invoices/{INVOICE}/tickets", ""),
        (f"/api/v2/invoices/{INVOICE}/tickets", {"error": "not_found"}),
        (f"/api/v2/companies/{COMPANY}/tickets/answered", {"error": "invalid_invoice_id"}),
    ],
)
def test_404_without_the_documented_code_hints_at_the_base_url(api: HTTPServer, path: str, body: Any) -> None:
    handler = api.expect_request(path)
    if isinstance(body, dict):
        handler.respond_with_json(body, status=404)
    else:
        handler.respond_with_data(body, status=404)
    call = (
        hook().get_invoice_tickets if "invoices" in path else lambda _: hook().get_company_tickets(COMPANY, "answered")
    )

    with pytest.raises(ClubCollectNotFoundError) as info:
        call(INVOICE)
    assert "got 404 without a ClubCollect error code: is the connection's base URL right (it should end in /api)?" in (
        str(info.value)
    )


def test_404_with_the_documented_code_has_no_base_url_hint(api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_json(
        {"error": "invalid_invoice_id"}, status=404
    )

    with pytest.raises(ClubCollectNotFoundError) as info:
        hook().get_invoice_tickets(INVOICE)
    assert "base URL" not in str(info.value)


def test_connection_test_gives_the_base_url_hint(api: HTTPServer) -> None:
    api.expect_request("/api/v2/invoices/airflow-provider-clubcollect-connection-test/tickets").respond_with_data(
        "<html>Not Found</html>", status=404
    )

    ok, message = hook().test_connection()
    assert ok is False
    assert "is the connection's base URL right (it should end in /api)?" in message
