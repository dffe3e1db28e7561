"""ClubCollectHook over real HTTP on loopback (pytest-httpserver playing the API).

These tests script the server answer by answer: documented errors, 401/403, 429 with and without
Retry-After, 5xx, bodies that are not JSON, and paging edges including a list that shrinks while
it is read.  End-to-end behaviour against the stateful sandbox lives in test_clubcollect_sandbox.py.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug import Response

from airflow_provider_clubcollect import wire
from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
    ClubCollectValidationError,
)
from tests.hooks.conftest import API_KEY

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer
    from werkzeug import Request

INVOICE = "a" * 40
COMPANY = "c" * 40
TICKET = {
    "ticket_id": "t" * 40,
    "message": "I don't want to pay",
    "sender": "CUSTOMER",
    "date": "2026-05-01T10:00:00+00:00",
}


def company_ticket(n: int) -> dict[str, Any]:
    return {
        "invoice_id": f"{n // 3:040x}",
        "ticket_id": f"{n:040x}",
        "message": f"message {n}",
        "sender": "CUSTOMER" if n % 2 else "COMPANY",
        "date": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}+00:00",
    }


def serve_list(api: HTTPServer, tickets: list[dict[str, Any]], status: str = "unanswered") -> None:
    """Serve a company list that pages like ClubCollect's."""

    def handler(request: Request) -> Response:
        number = int(request.args.get("page_number", 1))
        size = int(request.args.get("page_size", 30))
        start = (number - 1) * size
        body = {
            "tickets": tickets[start : start + size],
            "page": {
                "page_number": number,
                "page_size": size,
                "total_entries": len(tickets),
                "total_pages": math.ceil(len(tickets) / size),
            },
        }
        return Response(json.dumps(body), 200, content_type="application/json")

    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/{status}").respond_with_handler(handler)


# --- every method ---------------------------------------------------------------------------------


def test_get_invoice_tickets_sends_key_only_in_header(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets", method="GET").respond_with_json({"tickets": [TICKET]})

    assert hook.get_invoice_tickets(INVOICE) == [TICKET]

    (request, _), *_ = api.log
    assert request.headers["Authorization"] == f"ApiKey {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    from airflow_provider_clubcollect import __version__

    assert request.headers["User-Agent"] == f"airflow-provider-clubcollect/{__version__}"
    assert API_KEY not in request.url
    assert "api_key" not in request.args


def test_create_ticket_posts_message(hook, api: HTTPServer) -> None:
    created = dict(TICKET, sender="COMPANY", message="Please pay before the 30th")
    api.expect_request(
        f"/api/v2/invoices/{INVOICE}/tickets", method="POST", json={"message": "Please pay before the 30th"}
    ).respond_with_json(created)

    assert hook.create_ticket(INVOICE, "Please pay before the 30th") == created
    assert len(api.log) == 1


@pytest.mark.parametrize(
    ("method_name", "action"), [("archive_tickets", "archive"), ("assign_tickets_to_support", "assign_to_support")]
)
def test_actions_post_and_accept_204(hook, api: HTTPServer, method_name: str, action: str) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets/actions/{action}", method="POST").respond_with_data(
        "", status=204
    )

    assert getattr(hook, method_name)(INVOICE) is None
    assert len(api.log) == 1


def test_get_company_tickets_page_returns_api_body(hook, api: HTTPServer) -> None:
    body = {
        "tickets": [dict(TICKET, invoice_id=INVOICE)],
        "page": {"page_number": 2, "page_size": 1, "total_entries": 3, "total_pages": 3},
    }
    api.expect_request(
        f"/api/v2/companies/{COMPANY}/tickets/answered", query_string="page_number=2&page_size=1"
    ).respond_with_json(body)

    assert hook.get_company_tickets_page(COMPANY, "answered", page_number=2, page_size=1) == body


def test_ids_are_quoted_as_one_path_segment(hook, api: HTTPServer) -> None:
    api.expect_request("/api/v2/invoices/partner id?#%/tickets").respond_with_json({"tickets": []})

    assert hook.get_invoice_tickets("partner id?#%") == []
    (request, _), *_ = api.log
    # The path as it crossed the wire (werkzeug's request.url re-quotes it).
    assert request.environ["RAW_URI"] == "/api/v2/invoices/partner%20id%3F%23%25/tickets"


# --- paging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 100, 101, 253])
def test_paging_reads_every_page_once(hook, api: HTTPServer, count: int) -> None:
    tickets = [company_ticket(n) for n in range(count)]
    serve_list(api, tickets)

    assert hook.get_company_tickets(COMPANY, "unanswered") == tickets
    sizes = [r.args["page_size"] for r, _ in api.log]
    pages = math.ceil(count / 100)
    if pages <= 1:
        assert sizes == ["100"], "one page: one request"
    else:  # page 1 for the total, a look at the tail, every page, a last look
        assert (sizes.count("100"), sizes.count("1"), len(sizes)) == (1 + pages, 2, 3 + pages)


def test_iter_company_tickets_is_lazy(hook, api: HTTPServer) -> None:
    serve_list(api, [company_ticket(n) for n in range(250)])

    iterator = hook.iter_company_tickets(COMPANY, "unanswered")
    assert len(api.log) == 0
    first = next(iterator)
    assert first["ticket_id"] == f"{0:040x}"
    # How far it reads ahead is tested in test_clubcollect_paging.py; here: every page once.
    assert len(list(iterator)) == 249
    assert sorted(r.args["page_number"] for r, _ in api.log if r.args["page_size"] == "100") == ["1", "1", "2", "3"]


def test_paging_with_small_page_size(hook, api: HTTPServer) -> None:
    tickets = [company_ticket(n) for n in range(7)]
    serve_list(api, tickets)

    assert hook.get_company_tickets(COMPANY, "unanswered", page_size=3) == tickets
    pages = [r.args["page_number"] for r, _ in api.log if r.args["page_size"] == "3"]
    assert (pages[0], sorted(pages)) == ("1", ["1", "1", "2", "3"]), "page 1 first (it gives the total), then all"


def test_paging_survives_a_list_that_shrinks_between_pages(hook, api: HTTPServer) -> None:
    """A thread leaves the status after page 1 was read: nothing may be skipped or repeated."""
    tickets = [company_ticket(n) for n in range(250)]
    reads = {"count": 0}

    def handler(request: Request) -> Response:
        reads["count"] += 1
        if reads["count"] == 2:
            # Five tickets of page 1 disappear before page 2 is read: every later ticket moves
            # five places up, so reading page 2 by number alone would skip tickets 100..104.
            del tickets[10:15]
        number, size = int(request.args["page_number"]), int(request.args["page_size"])
        body = {
            "tickets": tickets[(number - 1) * size : number * size],
            "page": {
                "page_number": number,
                "page_size": size,
                "total_entries": len(tickets),
                "total_pages": math.ceil(len(tickets) / size),
            },
        }
        return Response(json.dumps(body), 200, content_type="application/json")

    original = [company_ticket(n) for n in range(250)]
    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/unanswered").respond_with_handler(handler)

    got = hook.get_company_tickets(COMPANY, "unanswered")

    ids = [t["ticket_id"] for t in got]
    assert len(ids) == len(set(ids)), "a ticket was returned twice"
    removed = {t["ticket_id"] for t in original[10:15]}
    still_there = [t for t in original if t["ticket_id"] not in removed]
    assert [t for t in got if t["ticket_id"] not in removed] == still_there
    assert ids == sorted(ids, key=lambda i: int(i, 16)), "not oldest first"


def test_paging_stops_on_an_empty_page_past_the_end(hook, api: HTTPServer) -> None:
    def handler(request: Request) -> Response:
        # A server that claims more pages than it has: the empty page ends the read.
        number = int(request.args["page_number"])
        tickets = [company_ticket(n) for n in range(100)] if number == 1 else []
        body = {
            "tickets": tickets,
            "page": {"page_number": number, "page_size": 100, "total_entries": 300, "total_pages": 3},
        }
        return Response(json.dumps(body), 200, content_type="application/json")

    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/unanswered").respond_with_handler(handler)

    assert len(hook.get_company_tickets(COMPANY, "unanswered")) == 100
    api.clear_log()
    # Read one at a time, the empty page 2 stops the read before page 3 (the first read left the
    # total, so the look sizes the list and page 1 is read once).
    assert len(hook.get_company_tickets(COMPANY, "unanswered", max_concurrency=1)) == 100
    assert [r.args["page_number"] for r, _ in api.log if r.args["page_size"] == "100"] == ["1", "2"]


# --- documented errors ----------------------------------------------------------------------------


def test_unknown_invoice_is_not_found_with_code(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_json(
        {"error": "invalid_invoice_id"}, status=404
    )

    with pytest.raises(ClubCollectNotFoundError) as info:
        hook.get_invoice_tickets(INVOICE)
    assert info.value.status_code == 404
    assert info.value.error_code == "invalid_invoice_id"
    assert INVOICE in str(info.value)
    assert len(api.log) == 1, "a 404 is final: no retry"


def test_invalid_message_is_validation_error(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets", method="POST").respond_with_json(
        {"error": "invalid_message"}, status=422
    )

    with pytest.raises(ClubCollectValidationError) as info:
        hook.create_ticket(INVOICE, "x" * 10_000)
    assert (info.value.status_code, info.value.error_code) == (422, "invalid_message")
    assert isinstance(info.value, ValueError)


def test_company_not_found_read_from_errors_key(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/unanswered").respond_with_json(
        {"errors": "not_found"}, status=404
    )

    with pytest.raises(ClubCollectNotFoundError) as info:
        hook.get_company_tickets(COMPANY, "unanswered")
    assert info.value.error_code == "not_found"


def test_invalid_action_is_validation_error(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/answered").respond_with_json(
        {"error": "invalid_action"}, status=422
    )

    with pytest.raises(ClubCollectValidationError) as info:
        hook.get_company_tickets_page(COMPANY, "answered")
    assert info.value.error_code == "invalid_action"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure(hook, api: HTTPServer, status: int) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_json(
        {"error": "unauthorized"}, status=status
    )

    with pytest.raises(ClubCollectAuthError) as info:
        hook.get_invoice_tickets(INVOICE)
    assert info.value.status_code == status
    assert API_KEY not in str(info.value)
    assert len(api.log) == 1


def test_firewall_html_403_is_auth_error_without_code(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data(
        "<html><body><h1>403 Forbidden</h1>Request blocked</body></html>", status=403, content_type="text/html"
    )

    with pytest.raises(ClubCollectAuthError) as info:
        hook.get_invoice_tickets(INVOICE)
    assert info.value.error_code is None
    assert "403 Forbidden" in str(info.value)


# --- retries ---------------------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured(hook, api: HTTPServer) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets"
    api.expect_ordered_request(path).respond_with_json(
        {"error": "rate_limited"}, status=429, headers={"Retry-After": "1"}
    )
    api.expect_ordered_request(path).respond_with_json({"tickets": [TICKET]})

    started = time.monotonic()
    assert hook.get_invoice_tickets(INVOICE) == [TICKET]
    # A lower bound only: the hook waited at least what the server asked (never an upper bound).
    assert time.monotonic() - started >= 1.0
    assert len(api.log) == 2


def test_429_without_retry_after_backs_off_and_succeeds(hook, api: HTTPServer) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets"
    for _ in range(2):
        api.expect_ordered_request(path).respond_with_data("Too Many Requests", status=429)
    api.expect_ordered_request(path).respond_with_json({"tickets": []})

    assert hook.get_invoice_tickets(INVOICE) == []
    assert len(api.log) == 3


def test_429_forever_is_rate_limit_error(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data("slow down", status=429)

    with pytest.raises(ClubCollectRateLimitError) as info:
        hook.get_invoice_tickets(INVOICE)
    assert len(api.log) == 6, "1 attempt + max_retries (5)"
    assert "after 6 attempts" in str(info.value)
    assert info.value.retry_after is None


def test_429_error_carries_the_last_retry_after(api: HTTPServer) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "300"}
    )

    with pytest.raises(ClubCollectRateLimitError) as info:
        ClubCollectHook(max_retries=0).get_invoice_tickets(INVOICE)
    # Uncapped by the request back-off's retry_after_max (120 s): the task may wait that long.
    assert info.value.retry_after == 300.0
    assert "It asked to wait 300 s (Retry-After)." in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_then_succeeds(hook, api: HTTPServer, status: int) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets/actions/archive"
    api.expect_ordered_request(path).respond_with_data("oops", status=status)
    api.expect_ordered_request(path).respond_with_data("", status=204)

    hook.archive_tickets(INVOICE)
    assert len(api.log) == 2, "archive is idempotent: retried like a read"


def test_5xx_forever_fails_after_max_retries(api: HTTPServer) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.retry import Backoff

    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data("down", status=503)

    hook = ClubCollectHook(max_retries=2, backoff=Backoff(initial=0.01))
    with pytest.raises(ClubCollectServerError) as info:
        hook.get_invoice_tickets(INVOICE)
    assert info.value.status_code == 503
    assert len(api.log) == 3


def test_max_retries_from_connection_extra(api: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.retry import Backoff

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps(
            {
                "conn_type": "clubcollect",
                "password": API_KEY,
                "host": api.url_for("/api"),
                "extra": {"max_retries": 1, "timeout": 5},
            }
        ),
    )
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data("down", status=500)

    hook = ClubCollectHook(backoff=Backoff(initial=0.01))
    with pytest.raises(ClubCollectServerError):
        hook.get_invoice_tickets(INVOICE)
    assert len(api.log) == 2
    assert hook.settings.timeout == 5


def test_non_json_success_body_is_clubcollect_error(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data("<html>maintenance</html>", status=200)

    with pytest.raises(ClubCollectServerError, match="not JSON"):
        hook.get_invoice_tickets(INVOICE)


@pytest.mark.parametrize(
    "body",
    [
        {"tickets": "nope"},
        {},
        [],
        {"tickets": [{"message": "no id"}]},
    ],
)
def test_body_not_as_documented_is_clubcollect_error(hook, api: HTTPServer, body: Any) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_json(body)

    with pytest.raises(ClubCollectServerError, match="not what it documents"):
        hook.get_invoice_tickets(INVOICE)


def test_company_page_without_page_object_is_clubcollect_error(hook, api: HTTPServer) -> None:
    api.expect_request(f"/api/v2/companies/{COMPANY}/tickets/unanswered").respond_with_json({"tickets": []})

    with pytest.raises(ClubCollectServerError, match="page"):
        hook.get_company_tickets(COMPANY, "unanswered")


def test_connection_refused_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.retry import Backoff

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": API_KEY, "host": f"http://127.0.0.1:{port}/api"}),
    )
    hook = ClubCollectHook(max_retries=2, backoff=Backoff(initial=0.01))
    with pytest.raises(ClubCollectServerError, match=r"could not connect.*after 3 attempts"):
        hook.get_invoice_tickets(INVOICE)


# --- creating a ticket never posts twice ---------------------------------------------------------------


def test_create_ticket_after_lost_answer_finds_the_ticket_and_does_not_repost(hook, api: HTTPServer) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets"
    from datetime import datetime, timezone

    created = {
        "ticket_id": "n" * 40,
        "message": "Please pay before the 30th",
        "sender": "COMPANY",
        "date": datetime.now(timezone.utc).isoformat(),
    }
    api.expect_ordered_request(path, method="POST").respond_with_data("gateway timeout", status=504)
    api.expect_ordered_request(path, method="GET").respond_with_json({"tickets": [TICKET, created]})

    assert hook.create_ticket(INVOICE, "Please pay before the 30th") == created
    assert [r.method for r, _ in api.log] == ["POST", "GET"]


def test_create_ticket_after_lost_answer_posts_again_when_missing(hook, api: HTTPServer) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets"
    old_same_text = dict(TICKET, sender="COMPANY", message="Please pay", date="2020-01-01T00:00:00+00:00")
    created = dict(TICKET, sender="COMPANY", message="Please pay")
    api.expect_ordered_request(path, method="POST").respond_with_data("oops", status=500)
    api.expect_ordered_request(path, method="GET").respond_with_json({"tickets": [TICKET, old_same_text]})
    api.expect_ordered_request(path, method="POST").respond_with_json(created)

    assert hook.create_ticket(INVOICE, "Please pay") == created
    assert [r.method for r, _ in api.log] == ["POST", "GET", "POST"]


def test_create_ticket_retries_429_without_reading(hook, api: HTTPServer) -> None:
    path = f"/api/v2/invoices/{INVOICE}/tickets"
    created = dict(TICKET, sender="COMPANY", message="Hello")
    api.expect_ordered_request(path, method="POST").respond_with_data("", status=429, headers={"Retry-After": "0"})
    api.expect_ordered_request(path, method="POST").respond_with_json(created)

    assert hook.create_ticket(INVOICE, "Hello") == created
    assert [r.method for r, _ in api.log] == ["POST", "POST"]


# --- validation before any request -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda h: h.get_company_tickets(COMPANY, "open"),
            r"Unknown ticket status 'open'; allowed: unanswered, answered, archived",
        ),
        (lambda h: h.get_company_tickets(COMPANY, "UNANSWERED"), "allowed: unanswered, answered, archived"),
        (
            lambda h: h.get_company_tickets(COMPANY, "answered", page_size=0),
            r"page_size must be an integer from 1 to 100, got 0",
        ),
        (lambda h: h.get_company_tickets(COMPANY, "answered", page_size=101), "got 101"),
        (lambda h: h.iter_company_tickets(COMPANY, "answered", page_size="10"), "got '10'"),
        (lambda h: h.get_company_tickets_page(COMPANY, "answered", page_size=True), "got True"),
        (
            lambda h: h.get_company_tickets_page(COMPANY, "answered", page_number=0),
            "page_number must be an integer of at least 1, got 0",
        ),
        (lambda h: h.create_ticket(INVOICE, ""), "message must be a non-empty string"),
        (lambda h: h.create_ticket(INVOICE, " \n\t"), "message must be a non-empty string"),
        (lambda h: h.create_ticket(INVOICE, None), "got None"),
        (lambda h: h.get_invoice_tickets(""), re.escape(f"invoice_id {wire.ID_RULE}, got ''")),
        (lambda h: h.get_invoice_tickets("   "), re.escape(f"{wire.ID_RULE}, got '   '")),
        (lambda h: h.archive_tickets("a/b"), re.escape(f"invoice_id {wire.ID_RULE}, got 'a/b'")),
        (lambda h: h.assign_tickets_to_support(".."), re.escape(f"{wire.ID_RULE}, got '..'")),
        (lambda h: h.archive_tickets("."), re.escape(f"{wire.ID_RULE}, got '.'")),
        (lambda h: h.get_invoice_tickets(None), "invoice_id must be a string, got NoneType"),
        (lambda h: h.get_company_tickets("../x", "answered"), re.escape(f"company_id {wire.ID_RULE}, got '../x'")),
        (lambda h: h.get_company_tickets("", "answered"), re.escape(f"company_id {wire.ID_RULE}, got ''")),
    ],
)
def test_bad_input_fails_before_any_request(hook, api: HTTPServer, call, match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        call(hook)
    assert api.log == []


def test_missing_api_key_names_the_connection(api: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_CLUBCOLLECT", json.dumps({"conn_type": "clubcollect", "host": api.url_for("/api")})
    )
    with pytest.raises(ClubCollectValidationError, match="Connection 'my_clubcollect' has no API key"):
        ClubCollectHook("my_clubcollect").get_invoice_tickets(INVOICE)
    assert api.log == []


def test_plain_http_to_remote_host_is_refused(api: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": API_KEY, "host": "http://app.clubcollect.com/api"}),
    )
    with pytest.raises(ClubCollectValidationError, match=r"plain http:// .* only for a loopback host"):
        ClubCollectHook().get_invoice_tickets(INVOICE)


# --- test_connection -------------------------------------------------------------------------------------


def test_test_connection_good_key(hook, api: HTTPServer) -> None:
    api.expect_request(
        "/api/v2/invoices/airflow-provider-clubcollect-connection-test/tickets", method="GET"
    ).respond_with_json({"error": "invalid_invoice_id"}, status=404)

    ok, message = hook.test_connection()
    assert ok is True
    assert "accepted the API key" in message
    assert [r.method for r, _ in api.log] == ["GET"], "the test changes nothing"


def test_test_connection_bad_key(hook, api: HTTPServer) -> None:
    api.expect_request("/api/v2/invoices/airflow-provider-clubcollect-connection-test/tickets").respond_with_json(
        {"error": "unauthorized"}, status=401
    )

    ok, message = hook.test_connection()
    assert ok is False
    assert "HTTP 401 unauthorized. The API refused the key: check the API key in the connection" in message
    assert API_KEY not in message


def test_test_connection_wrong_base_url(hook, api: HTTPServer) -> None:
    api.expect_request("/api/v2/invoices/airflow-provider-clubcollect-connection-test/tickets").respond_with_data(
        "Not Found", status=404
    )

    ok, message = hook.test_connection()
    assert ok is False
    assert "is the connection's base URL right (it should end in /api)?" in message


def test_test_connection_never_raises_on_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps({"conn_type": "clubcollect"}))
    ok, message = ClubCollectHook().test_connection()
    assert (ok, "has no API key" in message) == (False, True)


# --- secrets -------------------------------------------------------------------------------------------------


def test_key_never_in_repr_errors_or_logs(hook, api: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    api.expect_request(f"/api/v2/invoices/{INVOICE}/tickets").respond_with_data("oops", status=500)
    caplog.set_level("DEBUG")

    with pytest.raises(ClubCollectError) as info:
        hook.get_invoice_tickets(INVOICE)

    for text in (repr(hook), repr(hook.settings), str(hook.settings), str(info.value), repr(info.value), caplog.text):
        assert API_KEY not in text
    assert "retrying" in caplog.text


def test_transport_errors_never_quote_the_key(api: HTTPServer) -> None:
    """A library error that quotes the Authorization header is scrubbed before it is raised."""
    from airflow_provider_clubcollect.transport import SyncTransport
    from airflow_provider_clubcollect.wire import get_invoice_tickets_request
    from tests.conftest import conn_settings

    settings = conn_settings("cc", host=api.url_for("/api"), password=API_KEY)
    transport = SyncTransport(settings)
    transport.session.headers["X-Bad"] = f"{API_KEY}\n"  # makes requests raise InvalidHeader quoting it
    failure = transport.send(get_invoice_tickets_request(INVOICE))
    assert API_KEY not in failure.reason  # type: ignore[union-attr]
    assert "***" in failure.reason  # type: ignore[union-attr]


def test_key_is_registered_with_airflows_secrets_masker(api: HTTPServer) -> None:
    from airflow.providers.common.compat.sdk import redact

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    ClubCollectHook().settings  # reading the connection registers the key  # noqa: B018
    assert API_KEY not in str(redact(f"Authorization: ApiKey {API_KEY}"))
