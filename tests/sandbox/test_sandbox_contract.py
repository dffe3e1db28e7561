"""The sandbox against the API's own page: every documented call and answer, read from the page.

clubcollect_ticket_api.md is ClubCollect's "Ticket" page, copied unchanged.  The page renders four
names with colons that the API spells with underscores (``assign:to:support``, ``page:number``,
...; SPEC section 1), so a colon between two letters is read as an underscore.  Its examples have
"..." for values that vary; the 200 examples of the two lists are JSON without the outer braces.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import modules_after_importing

PAGE = (Path(__file__).parent / "clubcollect_ticket_api.md").read_text()
BASE_URL = "https://app.clubcollect.com/api/"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
INVOICE = "a" * 40
COMPANY = "c" * 40


def wire_name(name: str) -> str:
    """The API's spelling of a name the page renders with colons."""
    return re.sub(r"(?<=[a-z]):(?=[a-z])", "_", name)


def calls() -> dict[str, dict[str, Any]]:
    """Each ``## `` section of the page: its method, path, query parameters and example answers."""
    found = {}
    for section in PAGE.split("\n## ")[1:]:
        title = section.splitlines()[0].strip()
        method, url = re.search(r"`(GET|POST)`</mark> `([^`]+)`", section).groups()  # type: ignore[union-attr]
        query = re.search(r"#### Query Parameters\n\n(.*?)\n\n", section, re.DOTALL)
        params = re.findall(r"^\| ([a-z:]+)\s+\|", query.group(1) if query else "", re.MULTILINE)
        answers = {
            int(status): body.strip()
            for status, body in re.findall(r'\{% tab title="(\d+) " %\}\s*```\w*\n(.*?)```', section, re.DOTALL)
        }
        path = wire_name(url.removeprefix(BASE_URL))
        found[title] = {"method": method, "path": path, "params": [wire_name(p) for p in params], "answers": answers}
    return found


CALLS = calls()


def example(body: str) -> Any:
    """An example answer as JSON: braces added where the page leaves them out, commas between members."""
    text = body if body.startswith("{") else "{" + re.sub(r"([\]}])\n(\")", r"\1,\n\2", body) + "}"
    return json.loads(text)


def assert_like(actual: Any, expected: Any, where: str = "answer") -> None:
    """``actual`` has the example's shape and values; "..." stands for any non-empty string."""
    if expected == "...":
        assert isinstance(actual, str), f"{where}: {actual!r} is not a string"
        assert actual, f"{where} is empty"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert sorted(actual) == sorted(expected), f"{where}: fields {sorted(actual)}, the page has {sorted(expected)}"
        for key, value in expected.items():
            assert_like(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items, the page shows {len(expected)}"
        for index, (item, wanted) in enumerate(zip(actual, expected, strict=True)):
            assert_like(item, wanted, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r}, the page has {expected!r}"


def test_the_page_documents_the_five_calls() -> None:
    # Guards the parsing below: a page that reads differently fails here, not quietly.
    assert {title: (call["method"], call["path"]) for title, call in CALLS.items()} == {
        "Fetch Tickets": ("GET", "v2/invoices/:id/tickets"),
        "Create Ticket": ("POST", "v2/invoices/:id/tickets"),
        "Archive Ticket": ("POST", "v2/invoices/:id/tickets/actions/archive"),
        "Assign Ticket to Support": ("POST", "v2/invoices/:id/tickets/actions/assign_to_support"),
        "Fetch All Tickets": ("GET", "v2/companies/:id/tickets/:status"),
    }
    assert CALLS["Fetch All Tickets"]["params"] == ["api_key", "page_number", "page_size"]


@pytest.fixture
def example_thread(server: Any) -> list[dict[str, Any]]:
    """The page's example thread (a member's message, the club's answer) on INVOICE of COMPANY."""
    tickets = [
        {"ticket_id": "...", "message": "I don't want to pay", "sender": "CUSTOMER"},
        {"ticket_id": "...", "message": "Please pay before the 30th", "sender": "COMPANY"},
    ]
    server.state.add_invoice(
        INVOICE,
        COMPANY,
        [
            {"message": t["message"], "sender": t["sender"], "date": NOW - timedelta(days=2 - n)}
            for n, t in enumerate(tickets)
        ],
    )
    return tickets


def call(api: Any, title: str, ids: dict[str, str], **kwargs: Any) -> Any:
    """Send one documented call with its path parameters filled in."""
    path = re.sub(r":(id|status)\b", lambda match: ids[match.group(1)], CALLS[title]["path"])
    return api.request(CALLS[title]["method"], path, **kwargs)


def test_fetch_tickets_answers_as_the_page_shows(api: Any, example_thread: Any) -> None:
    answer = call(api, "Fetch Tickets", {"id": INVOICE})

    assert answer.status_code == 200
    expected = example(CALLS["Fetch Tickets"]["answers"][200])
    assert_like(answer.json(), expected)
    for ticket in answer.json()["tickets"]:
        assert datetime.fromisoformat(ticket["date"]).tzinfo is not None


def test_create_ticket_answers_as_the_page_shows(api: Any, example_thread: Any) -> None:
    expected = example(CALLS["Create Ticket"]["answers"][200])

    answer = call(api, "Create Ticket", {"id": INVOICE}, json={"message": expected["message"]})

    assert answer.status_code == 200
    assert_like(answer.json(), expected)


@pytest.mark.parametrize("title", ["Archive Ticket", "Assign Ticket to Support"])
def test_actions_answer_as_the_page_shows(api: Any, example_thread: Any, title: str) -> None:
    answer = call(api, title, {"id": INVOICE}, json={})

    assert CALLS[title]["answers"][204] == ""
    assert (answer.status_code, answer.content) == (204, b"")


def test_fetch_all_tickets_answers_as_the_page_shows(api: Any, example_thread: Any) -> None:
    expected = example(CALLS["Fetch All Tickets"]["answers"][200])

    listed = call(api, "Fetch All Tickets", {"id": COMPANY, "status": "answered"})

    assert listed.status_code == 200
    assert_like(listed.json()["tickets"], expected["tickets"], "tickets")


def test_fetch_all_tickets_pages_as_the_page_shows(api: Any, server: Any) -> None:
    page = example(CALLS["Fetch All Tickets"]["answers"][200])["page"]
    # As many waiting members as the page's example counts, then the page it shows.
    for n in range(page["total_entries"]):
        member = {"message": f"{n}", "sender": "CUSTOMER", "date": NOW - timedelta(hours=n)}
        server.state.add_invoice(f"inv-{n}", COMPANY, [member])
    params = {name: page[name] for name in CALLS["Fetch All Tickets"]["params"] if name in page}
    assert params == {"page_number": 1, "page_size": 12}

    answer = call(api, "Fetch All Tickets", {"id": COMPANY, "status": "unanswered"}, params=params)

    assert answer.status_code == 200
    assert answer.json()["page"] == page
    assert len(answer.json()["tickets"]) == page["page_size"]


#: How to provoke each documented error: the call's path parameters and body.
ERRORS = {
    ("Fetch Tickets", 404): ({"id": "no-such-invoice"}, None),
    ("Create Ticket", 404): ({"id": "no-such-invoice"}, {"message": "Hello"}),
    ("Create Ticket", 422): ({"id": INVOICE}, {"message": ""}),
    ("Archive Ticket", 404): ({"id": "no-such-invoice"}, {}),
    ("Assign Ticket to Support", 404): ({"id": "no-such-invoice"}, {}),
    ("Fetch All Tickets", 404): ({"id": "no-such-company", "status": "unanswered"}, None),
    ("Fetch All Tickets", 422): ({"id": COMPANY, "status": "open"}, None),
}


def test_every_documented_error_is_provoked_below() -> None:
    documented = {(title, status) for title, c in CALLS.items() for status in c["answers"] if status >= 400}
    assert documented == set(ERRORS)


@pytest.mark.parametrize(("title", "status"), sorted(ERRORS))
def test_errors_answer_as_the_page_shows(api: Any, example_thread: Any, title: str, status: int) -> None:
    ids, body = ERRORS[title, status]

    answer = call(api, title, ids, json=body)

    assert answer.status_code == status
    assert answer.json() == example(CALLS[title]["answers"][status])


def test_the_sandbox_imports_nothing_of_the_providers_request_layer() -> None:
    """The sandbox states the API itself: were it to take a path, a field name or a date rule from
    the provider's request layer, a mistake there would pass every test against the sandbox."""
    provider = "airflow_provider_clubcollect."
    loaded = modules_after_importing(f"{provider}sandbox.app", f"{provider}sandbox.server")
    assert [m for m in loaded if m.startswith(provider) and not m.startswith(f"{provider}sandbox")] == []
