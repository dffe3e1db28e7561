"""The sandbox's Tickets API over real HTTP: auth, each call, its errors, thread transitions and paging."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_clubcollect import wire
from airflow_provider_clubcollect.sandbox.client import ticket

HEX40 = re.compile(r"[0-9a-f]{40}")
T0 = datetime(2020, 3, 1, 9, 0, 0, tzinfo=timezone.utc)  # long before any test run


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def invoice_path(invoice_id: str) -> str:
    return f"v2/invoices/{invoice_id}/tickets"


def company_path(company_id: str, status: str) -> str:
    return f"v2/companies/{company_id}/tickets/{status}"


@pytest.fixture
def thread(server):
    """An invoice "inv-1" of company "club-1" with one CUSTOMER ticket: unanswered."""
    server.state.add_invoice("inv-1", "club-1", [ticket("Ik wil niet betalen", "CUSTOMER", at(0), ticket_id="t1")])
    return "inv-1"


# --- authentication and headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "ApiKey wrong-key", "Bearer {key}", "apikey {key}", "ApiKey  {key}", "{key}", "ApiKey {key}x"],
    ids=["no-header", "wrong-key", "bearer", "lowercase-scheme", "two-spaces", "bare-key", "longer-key"],
)
def test_requests_without_the_exact_api_key_header_are_refused(api, thread, authorization):
    headers = api.headers(Authorization=None if authorization is None else authorization.format(key=api.api_key))
    for method, path in [
        ("GET", invoice_path(thread)),
        ("POST", f"{invoice_path(thread)}/actions/archive"),
        ("GET", company_path("club-1", "unanswered")),
    ]:
        response = api.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized"}


def test_a_refused_request_changes_nothing(api, server, thread):
    api.post(invoice_path(thread), headers=api.headers(Authorization="Bearer x"), json={"message": "hi"})
    api.post(f"{invoice_path(thread)}/actions/archive", headers=api.headers(Authorization=None))
    invoice = server.state.invoice(thread)
    assert invoice["tickets_created"] == 0
    assert invoice["actions"] == {"archive": 0, "assign_to_support": 0}
    assert invoice["status"] == "unanswered"


def test_deprecated_api_key_query_parameter_is_answered_but_recorded_without_the_key(api, server, thread):
    response = api.get(invoice_path(thread), params={"api_key": api.api_key})
    assert response.status_code == 200
    (entry,) = server.state.requests()
    assert entry["api_key_in_query"] is True
    assert entry["query"] == {"api_key": "<redacted>"}
    assert api.api_key not in json.dumps(server.state.requests())


def test_the_query_parameter_alone_does_not_authenticate(api, thread):
    # Only the Authorization header counts: a client relying on the deprecated parameter fails loudly.
    response = api.get(invoice_path(thread), headers=api.headers(Authorization=None), params={"api_key": api.api_key})
    assert response.status_code == 401


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_posts_without_json_content_type_are_refused(api, server, thread, content_type):
    headers = api.headers(Content_Type=content_type)
    create = api.post(invoice_path(thread), headers=headers, data=json.dumps({"message": "hi"}))
    archive = api.post(f"{invoice_path(thread)}/actions/archive", headers=headers)
    assert (create.status_code, create.json()) == (415, {"error": "unsupported_media_type"})
    assert (archive.status_code, archive.json()) == (415, {"error": "unsupported_media_type"})
    assert server.state.invoice(thread)["tickets_created"] == 0


def test_json_content_type_with_parameters_is_accepted(api, thread):
    headers = api.headers(Content_Type="application/json; charset=utf-8")
    assert api.post(invoice_path(thread), headers=headers, data=b'{"message": "hi"}').status_code == 200


def test_get_does_not_need_a_content_type(api, thread):
    assert api.get(invoice_path(thread), headers=api.headers(Content_Type=None)).status_code == 200


# --- fetch an invoice's tickets -------------------------------------------------------------


def test_fetch_invoice_tickets_oldest_first(api, server):
    server.state.add_invoice(
        "inv-1",
        "club-1",
        [
            ticket("Graag betalen vóór de 30e", "COMPANY", at(10), ticket_id="b"),
            ticket("I don't want to pay", "CUSTOMER", at(0), ticket_id="a"),
        ],
    )
    response = api.get(invoice_path("inv-1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "tickets": [
            {
                "ticket_id": "a",
                "message": "I don't want to pay",
                "sender": "CUSTOMER",
                "date": "2020-03-01T09:00:00+00:00",
            },
            {
                "ticket_id": "b",
                "message": "Graag betalen vóór de 30e",
                "sender": "COMPANY",
                "date": "2020-03-01T09:10:00+00:00",
            },
        ]
    }


def test_fetch_tickets_of_an_invoice_without_tickets(api, server):
    server.state.add_invoice("inv-empty", "club-1")
    assert api.get(invoice_path("inv-empty")).json() == {"tickets": []}


def test_fetch_tickets_of_an_unknown_invoice(api):
    response = api.get(invoice_path("nope"))
    assert (response.status_code, response.json()) == (404, {"error": "invalid_invoice_id"})


def test_ids_are_opaque_path_segments(api, server):
    # Partner-chosen IDs may hold characters that must be quoted; the sandbox reads them back decoded.
    server.state.add_invoice("inv 1+ü", "club-1", [ticket("hi", "CUSTOMER", at(0))])
    assert len(api.get(invoice_path("inv%201%2B%C3%BC")).json()["tickets"]) == 1


# --- create a ticket ------------------------------------------------------------------------


def test_create_ticket(api, server, thread):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    response = api.post(invoice_path(thread), json={"message": "Graag betalen vóór de 30e"})
    after = datetime.now(timezone.utc)
    assert response.status_code == 200
    created = response.json()
    assert set(created) == {"ticket_id", "message", "sender", "date"}
    assert HEX40.fullmatch(created["ticket_id"])
    assert created["message"] == "Graag betalen vóór de 30e"
    assert created["sender"] == "COMPANY"
    assert created["date"].endswith("+00:00")
    assert before <= datetime.fromisoformat(created["date"]) <= after
    assert api.get(invoice_path(thread)).json()["tickets"][-1] == created
    invoice = server.state.invoice(thread)
    assert invoice["tickets_created"] == 1
    assert invoice["status"] == "answered"


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"message": ""}',
        b'{"message": "   \\n\\t"}',
        b'{"message": null}',
        b'{"message": 42}',
        b'{"message": ["hi"]}',
        b'["hi"]',
        b'"hi"',
        b"not json",
        b"",
        b"\xff\xfe",
    ],
)
def test_create_ticket_with_an_invalid_message(api, server, thread, body):
    response = api.post(invoice_path(thread), data=body)
    assert (response.status_code, response.json()) == (422, {"error": "invalid_message"})
    assert server.state.invoice(thread)["tickets_created"] == 0


def test_create_ticket_on_an_unknown_invoice(api):
    response = api.post(invoice_path("nope"), json={"message": "hi"})
    assert (response.status_code, response.json()) == (404, {"error": "invalid_invoice_id"})


def test_the_sandbox_accepts_exactly_the_messages_the_provider_sends(api, thread):
    # The sandbox states the API's rule itself; the provider validates before sending.  The two
    # must agree, or a test against the sandbox would pass a message the API refuses (or not).
    for value in ["hi", " x ", "", "  ", "\n\t", None, 3, ["a"], {"a": 1}, "vóór"]:
        try:
            wire.check_message(value)
            provider_sends = True
        except ValueError:
            provider_sends = False
        response = api.post(invoice_path(thread), json={"message": value})
        assert response.status_code == (200 if provider_sends else 422), (value, response.text)


# --- archive and assign to support ------------------------------------------------------------


@pytest.mark.parametrize("action", ["archive", "assign_to_support"])
def test_actions_answer_204_every_time(api, server, thread, action):
    for _ in range(3):
        response = api.post(f"{invoice_path(thread)}/actions/{action}")
        assert response.status_code == 204
        assert response.content == b""
    assert server.state.invoice(thread)["actions"][action] == 3


@pytest.mark.parametrize("action", ["archive", "assign_to_support"])
def test_actions_on_an_invoice_without_tickets(api, server, action):
    server.state.add_invoice("inv-empty", "club-1")
    assert api.post(f"{invoice_path('inv-empty')}/actions/{action}").status_code == 204
    assert server.state.invoice("inv-empty")["status"] is None


@pytest.mark.parametrize("action", ["archive", "assign_to_support"])
def test_actions_on_an_unknown_invoice(api, action):
    response = api.post(f"{invoice_path('nope')}/actions/{action}")
    assert (response.status_code, response.json()) == (404, {"error": "invalid_invoice_id"})


def test_an_unknown_action_is_not_found(api, thread):
    response = api.post(f"{invoice_path(thread)}/actions/delete")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_an_unknown_path_or_method_answers_in_the_api_error_shape(api, thread):
    assert api.get("v2/nothing").json()["error"] == "not_found"
    response = api.request("DELETE", invoice_path(thread))
    assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")


# --- thread transitions ---------------------------------------------------------------------


def statuses(api, company_id: str) -> dict[str, list[str]]:
    """For each status, the invoice IDs in the company's list."""
    return {
        status: sorted(
            {
                t["invoice_id"]
                for t in api.get(company_path(company_id, status), params={"page_size": 100}).json()["tickets"]
            }
        )
        for status in wire.STATUSES
    }


def test_every_thread_transition(api, server, thread):
    state = server.state
    assert statuses(api, "club-1") == {"unanswered": [thread], "answered": [], "archived": []}

    # The club answers through the API: answered.
    api.post(invoice_path(thread), json={"message": "Graag betalen vóór de 30e"})
    assert statuses(api, "club-1") == {"unanswered": [], "answered": [thread], "archived": []}

    # The member writes again: unanswered.
    state.add_tickets(thread, [ticket("Ik heb al betaald", "CUSTOMER", datetime.now(timezone.utc))])
    assert statuses(api, "club-1") == {"unanswered": [thread], "answered": [], "archived": []}

    # Assigning to support sets a flag and leaves the status alone.
    api.post(f"{invoice_path(thread)}/actions/assign_to_support")
    assert statuses(api, "club-1") == {"unanswered": [thread], "answered": [], "archived": []}
    assert state.invoice(thread)["assigned_to_support"] is True

    # Archived, whatever the newest ticket.
    api.post(f"{invoice_path(thread)}/actions/archive")
    assert statuses(api, "club-1") == {"unanswered": [], "answered": [], "archived": [thread]}
    assert state.invoice(thread)["archived"] is True

    # A member's new ticket reopens the thread as unanswered.
    state.add_tickets(thread, [ticket("Nog een vraag", "CUSTOMER", datetime.now(timezone.utc))])
    assert statuses(api, "club-1") == {"unanswered": [thread], "answered": [], "archived": []}
    assert state.invoice(thread)["archived"] is False

    # Archived again, then the club writes through the API: reopened as answered.
    api.post(f"{invoice_path(thread)}/actions/archive")
    api.post(invoice_path(thread), json={"message": "Alsnog bedankt"})
    assert statuses(api, "club-1") == {"unanswered": [], "answered": [thread], "archived": []}


def test_company_ticket_in_an_unanswered_thread_is_listed_with_it(api, server):
    # A status lists every ticket of the threads in it, whoever wrote them.
    server.state.add_invoice(
        "inv-1",
        "club-1",
        [
            ticket("Vraag", "CUSTOMER", at(0)),
            ticket("Antwoord", "COMPANY", at(1)),
            ticket("Nog een", "CUSTOMER", at(2)),
        ],
    )
    tickets = api.get(company_path("club-1", "unanswered")).json()["tickets"]
    assert [t["sender"] for t in tickets] == ["CUSTOMER", "COMPANY", "CUSTOMER"]
    assert {t["invoice_id"] for t in tickets} == {"inv-1"}


# --- company lists and paging ---------------------------------------------------------------


def test_company_list_oldest_first_across_invoices_with_invoice_ids(api, server):
    state = server.state
    state.add_invoice(
        "inv-a", "club-1", [ticket("a1", "CUSTOMER", at(5), "ta1"), ticket("a2", "CUSTOMER", at(20), "ta2")]
    )
    state.add_invoice("inv-b", "club-1", [ticket("b1", "CUSTOMER", at(10), "tb1")])
    # Same date: ordered by ticket_id.
    state.add_invoice("inv-c", "club-1", [ticket("c1", "CUSTOMER", at(10), "tb0")])
    state.add_invoice("inv-other", "club-2", [ticket("x", "CUSTOMER", at(1))])
    body = api.get(company_path("club-1", "unanswered")).json()
    assert [(t["invoice_id"], t["ticket_id"]) for t in body["tickets"]] == [
        ("inv-a", "ta1"),
        ("inv-c", "tb0"),
        ("inv-b", "tb1"),
        ("inv-a", "ta2"),
    ]
    assert set(body["tickets"][0]) == {"invoice_id", "ticket_id", "message", "sender", "date"}
    assert body["page"] == {"page_number": 1, "page_size": 30, "total_entries": 4, "total_pages": 1}


def test_invoices_without_tickets_are_in_no_list(api, server):
    server.state.add_invoice("inv-empty", "club-1", archived=True)
    for status in wire.STATUSES:
        assert api.get(company_path("club-1", status)).json()["tickets"] == []


def test_an_empty_company(api, server):
    server.state.add_company("club-empty")
    body = api.get(company_path("club-empty", "unanswered")).json()
    assert body == {
        "tickets": [],
        "page": {"page_number": 1, "page_size": 30, "total_entries": 0, "total_pages": 0},
    }


def test_unknown_company(api):
    response = api.get(company_path("nope", "unanswered"))
    assert (response.status_code, response.json()) == (404, {"error": "not_found"})


@pytest.mark.parametrize("status", ["open", "UNANSWERED", "all", "archive"])
def test_unknown_status(api, thread, status):
    response = api.get(company_path("club-1", status))
    assert (response.status_code, response.json()) == (422, {"error": "invalid_action"})


def add_single_ticket_threads(server, count: int, company_id: str = "club-1") -> None:
    for n in range(count):
        server.state.add_invoice(f"inv-{n:03d}", company_id, [ticket(f"m{n}", "CUSTOMER", at(n), f"t{n:03d}")])


@pytest.mark.parametrize(
    ("count", "page_size", "total_pages"),
    [(100, 100, 1), (101, 100, 2), (30, None, 1), (31, None, 2), (1, 1, 1), (7, 3, 3)],
)
def test_paging_totals(api, server, count, page_size, total_pages):
    add_single_ticket_threads(server, count)
    params = {} if page_size is None else {"page_size": page_size}
    seen = []
    for page_number in range(1, total_pages + 1):
        body = api.get(company_path("club-1", "unanswered"), params={**params, "page_number": page_number}).json()
        assert body["page"] == {
            "page_number": page_number,
            "page_size": page_size or 30,
            "total_entries": count,
            "total_pages": total_pages,
        }
        seen += [t["ticket_id"] for t in body["tickets"]]
    assert seen == [f"t{n:03d}" for n in range(count)]


def test_default_page_is_the_first_thirty(api, server):
    add_single_ticket_threads(server, 45)
    body = api.get(company_path("club-1", "unanswered")).json()
    assert [t["ticket_id"] for t in body["tickets"]] == [f"t{n:03d}" for n in range(30)]
    assert body["page"]["page_size"] == 30  # the API page's documented default


def test_the_last_of_101_is_alone_on_page_two(api, server):
    add_single_ticket_threads(server, 101)
    body = api.get(company_path("club-1", "unanswered"), params={"page_size": 100, "page_number": 2}).json()
    assert [t["ticket_id"] for t in body["tickets"]] == ["t100"]


def test_a_page_past_the_end_is_empty(api, server):
    add_single_ticket_threads(server, 5)
    body = api.get(company_path("club-1", "unanswered"), params={"page_number": 3, "page_size": 5}).json()
    assert body == {"tickets": [], "page": {"page_number": 3, "page_size": 5, "total_entries": 5, "total_pages": 1}}


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 101},
        {"page_size": 0},
        {"page_size": -1},
        {"page_size": "abc"},
        {"page_size": "1.5"},
        {"page_size": ""},
        {"page_number": 0},
        {"page_number": -2},
        {"page_number": "two"},
        {"page_number": "1e3"},
    ],
)
def test_invalid_paging(api, thread, params):
    response = api.get(company_path("club-1", "unanswered"), params=params)
    assert (response.status_code, response.json()) == (422, {"error": "invalid_page"})


def test_page_size_limits_agree_with_wire(api, server):
    add_single_ticket_threads(server, 3)
    ok = api.get(company_path("club-1", "unanswered"), params={"page_size": wire.MAX_PAGE_SIZE})
    too_big = api.get(company_path("club-1", "unanswered"), params={"page_size": wire.MAX_PAGE_SIZE + 1})
    assert (ok.status_code, too_big.status_code) == (200, 422)


# --- the request log ------------------------------------------------------------------------


def test_request_log_records_api_requests_only(api, server, control, thread):
    began = time.time()
    api.get(invoice_path(thread), params={"x": "1"})
    api.post(invoice_path(thread), json={"message": "hi"})
    api.get(invoice_path(thread), headers=api.headers(Authorization="ApiKey wrong", User_Agent="curl/8"))
    control.state()  # control requests are not logged
    log = control.requests()
    assert [(e["method"], e["status"], e["authorized"]) for e in log] == [
        ("GET", 200, True),
        ("POST", 200, True),
        ("GET", 401, False),
    ]
    first = log[0]
    assert first["path"] == f"/api/v2/invoices/{thread}/tickets"
    assert first["query"] == {"x": "1"}
    assert first["user_agent"] == "airflow-provider-clubcollect/tests"
    assert first["content_type"] == "application/json"
    assert first["accept"] == "application/json"
    assert first["api_key_in_query"] is False
    assert first["fault"] is None
    assert log[2]["user_agent"] == "curl/8"
    assert began <= log[0]["at"] <= log[1]["at"] <= log[2]["at"] <= time.time(), "when each arrived, in order"
    assert api.api_key not in json.dumps(log)

    control.clear_requests()
    assert control.requests() == []
