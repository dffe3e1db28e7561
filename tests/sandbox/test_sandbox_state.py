"""The control API, seeding, and consistency under concurrent requests."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests

from airflow_provider_clubcollect import wire
from airflow_provider_clubcollect.sandbox.client import SandboxControlError, ticket
from airflow_provider_clubcollect.sandbox.seed import seed_id
from airflow_provider_clubcollect.sandbox.state import SandboxState

HEX40 = re.compile(r"[0-9a-f]{40}")
T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=timezone.utc)


# --- the control API ------------------------------------------------------------------------


def test_add_invoice_and_read_it_back(control):
    view = control.add_invoice(
        "inv-1",
        "club-1",
        [
            ticket("Ik wil niet betalen", "CUSTOMER", T0, ticket_id="t1"),
            ticket("Betaal", "COMPANY", "2026-03-02T10:00:00Z"),
        ],
    )
    assert view == control.invoice("inv-1")
    assert view["invoice_id"] == "inv-1"
    assert view["company_id"] == "club-1"
    assert view["status"] == "answered"
    assert view["archived"] is False
    assert view["assigned_to_support"] is False
    assert view["tickets_created"] == 0
    assert view["actions"] == {"archive": 0, "assign_to_support": 0}
    assert [t["date"] for t in view["tickets"]] == ["2026-03-01T09:00:00+00:00", "2026-03-02T10:00:00+00:00"]
    assert view["tickets"][0]["ticket_id"] == "t1"
    assert HEX40.fullmatch(view["tickets"][1]["ticket_id"])
    assert "club-1" in control.state()["companies"]


def test_add_invoice_archived_and_without_tickets(control):
    assert control.add_invoice("inv-1", "club-1", [ticket("x", "CUSTOMER", T0)], archived=True)["status"] == "archived"
    empty = control.add_invoice("inv-2", "club-1")
    assert (empty["status"], empty["tickets"]) == (None, [])


def test_adding_to_an_existing_invoice_appends(control):
    control.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0)], archived=True)
    view = control.add_invoice("inv-1", "club-1", [ticket("b", "CUSTOMER", T0 + timedelta(hours=1))])
    assert [t["message"] for t in view["tickets"]] == ["a", "b"]
    assert view["status"] == "unanswered"  # a new ticket reopens an archived thread


def test_add_tickets_reopens_an_archived_thread(control):
    control.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0), ticket("b", "COMPANY", T0)], archived=True)
    view = control.add_tickets("inv-1", [ticket("Nog een vraag", "CUSTOMER", T0 + timedelta(days=1))])
    assert (view["status"], view["archived"]) == ("unanswered", False)


def test_naive_dates_mean_utc(control):
    view = control.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", datetime(2026, 3, 1, 9, 0))])
    assert view["tickets"][0]["date"] == "2026-03-01T09:00:00+00:00"


def test_add_company_and_list_companies(control):
    control.add_company("club-1", "Hockeyclub De Kieviten")
    control.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0)])
    assert control.companies() == [
        {
            "company_id": "club-1",
            "name": "Hockeyclub De Kieviten",
            "invoices": 1,
            "tickets": {"unanswered": 1, "answered": 0, "archived": 0},
        }
    ]


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda c: c.invoice("nope"), 404),
        (lambda c: c.add_tickets("nope", [ticket("a", "CUSTOMER", T0)]), 404),
        (lambda c: c.add_invoice("inv-1", "club-1", [{"message": "a", "sender": "MEMBER", "date": "2026-03-01"}]), 422),
        (
            lambda c: c.add_invoice("inv-1", "club-1", [{"message": "a", "sender": "CUSTOMER", "date": "yesterday"}]),
            422,
        ),
        (lambda c: c.add_invoice("inv-1", "club-1", [{"sender": "CUSTOMER", "date": "2026-03-01"}]), 422),
        (lambda c: c.add_invoice("", "club-1"), 422),
        (lambda c: c.add_invoice("inv-1", "club-1", archived="yes"), 422),
        (lambda c: c.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0, "same")] * 2), 422),
        (lambda c: c.add_company(""), 422),
    ],
)
def test_control_api_refuses_bad_input(control, call, status):
    with pytest.raises(SandboxControlError) as caught:
        call(control)
    assert caught.value.status_code == status


def test_a_company_mismatch_is_refused(control):
    control.add_invoice("inv-1", "club-1")
    with pytest.raises(SandboxControlError, match="belongs to company"):
        control.add_invoice("inv-1", "club-2")


def test_duplicate_ticket_ids_are_refused_across_invoices(control):
    control.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0, "t1")])
    with pytest.raises(SandboxControlError, match="unique"):
        control.add_invoice("inv-2", "club-1", [ticket("b", "CUSTOMER", T0, "t1")])
    assert "inv-2" not in control.state()["invoices"]


def test_reset_clears_data_counters_log_and_faults(api, control, server):
    control.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0)])
    api.post("v2/invoices/inv-1/tickets/actions/archive")
    control.set_faults(latency_ms=1, script=[{"fault": "drop"}])
    assert control.reset() == []
    assert control.state() == {"companies": [], "company_names": {}, "invoices": {}}
    assert control.requests() == []
    assert control.faults()["script"] == []
    assert control.faults()["latency_ms"] == 0


def test_reset_with_a_seed_over_http(control, now):
    companies = control.reset(seed=3, now=now)
    assert 3 <= len(companies) <= 5
    state = SandboxState()
    state.reset(seed=3, now=now)
    assert control.state() == state.snapshot()


def test_control_requests_need_a_json_object(server):
    response = requests.post(f"{server.control_url}/invoices", data="[]", timeout=5)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_request")


def test_a_created_ticket_is_the_threads_newest_even_against_future_dates():
    state = SandboxState()
    future = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    state.add_invoice("inv-1", "club-1", [ticket("from the future", "CUSTOMER", future)])
    created = state.create_ticket("inv-1", "answer")
    assert created is not None
    assert created["date"] == future.isoformat()
    assert state.invoice("inv-1")["status"] == "answered"


def test_reprs_never_show_the_key(server, control):
    assert server.api_key not in repr(server)
    assert server.api_key not in repr(server.state)


# --- seeding --------------------------------------------------------------------------------


def test_same_seed_and_now_give_the_same_data(now):
    first, second = SandboxState(), SandboxState()
    first.reset(seed=0, now=now)
    second.reset(seed=0, now=now)
    assert first.snapshot() == second.snapshot()
    assert first.snapshot()["invoices"]


def test_ids_depend_on_the_seed_alone(now):
    early, late, other = SandboxState(), SandboxState(), SandboxState()
    early.reset(seed=0, now=now)
    late.reset(seed=0, now=now + timedelta(days=40))
    other.reset(seed=1, now=now)
    assert early.snapshot()["invoices"].keys() == late.snapshot()["invoices"].keys()
    assert early.snapshot()["companies"][0] == seed_id(0, "company", 0)
    assert not set(early.snapshot()["invoices"]) & set(other.snapshot()["invoices"])


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_seed_data_is_varied_and_plausible(seed, now):
    state = SandboxState()
    state.reset(seed=seed, now=now)
    snapshot = state.snapshot()
    invoices = snapshot["invoices"].values()
    assert 3 <= len(snapshot["companies"]) <= 5
    assert len(set(snapshot["company_names"].values())) == len(snapshot["companies"])
    assert 150 <= len(invoices) <= 600
    status_counts = Counter(invoice["status"] for invoice in invoices)
    assert all(status_counts[status] >= 10 for status in wire.STATUSES), status_counts
    assert status_counts[None] >= 1  # invoices without tickets
    tickets = [t for invoice in invoices for t in invoice["tickets"]]
    assert len({t["ticket_id"] for t in tickets}) == len(tickets)
    assert all(
        HEX40.fullmatch(i) for i in [*snapshot["companies"], *snapshot["invoices"], *(t["ticket_id"] for t in tickets)]
    )
    dates = [datetime.fromisoformat(t["date"]) for t in tickets]
    assert all(now - timedelta(days=183) <= date < now for date in dates)
    for invoice in invoices:
        assert 0 <= len(invoice["tickets"]) <= 6
        if invoice["tickets"]:
            assert invoice["tickets"][0]["sender"] == "CUSTOMER"  # members start the conversation
    last_activity = [max(t["date"] for t in i["tickets"]) for i in invoices if i["status"] == "answered"]
    stale = [d for d in last_activity if datetime.fromisoformat(d) < now - timedelta(days=30)]
    assert 0 < len(stale) < len(last_activity)  # a "stale after 30 days" rule selects some, not all
    messages = {t["message"] for t in tickets}
    assert {"Ik wil niet betalen", "I don't want to pay", "Graag betalen vóór de 30e"} <= messages
    assert all(invoice["tickets_created"] == 0 for invoice in invoices)


def test_some_company_list_needs_more_than_one_page(now):
    state = SandboxState()
    state.reset(seed=0, now=now)
    assert any(c["tickets"][status] > wire.MAX_PAGE_SIZE for c in state.companies() for status in wire.STATUSES)


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_posts_leave_consistent_state(server):
    state = server.state
    state.add_invoice("inv-1", "club-1", [ticket("a", "CUSTOMER", T0)])
    state.add_invoice("inv-2", "club-1", [ticket("b", "CUSTOMER", T0)])
    headers = {"Authorization": f"ApiKey {server.api_key}", "Content-Type": "application/json"}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with requests.Session() as session:
                for i in range(15):
                    url = f"{server.base_url}/v2/invoices/inv-1/tickets"
                    assert (
                        session.post(url, json={"message": f"{n}-{i}"}, headers=headers, timeout=10).status_code == 200
                    )
                    action = f"{server.base_url}/v2/invoices/inv-2/tickets/actions/archive"
                    assert session.post(action, headers=headers, timeout=10).status_code == 204
        except BaseException as error:  # reported below: a thread's assertion would vanish
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    first = state.invoice("inv-1")
    assert first["tickets_created"] == 120
    assert len(first["tickets"]) == 121
    assert len({t["ticket_id"] for t in first["tickets"]}) == 121
    assert {t["message"] for t in first["tickets"][1:]} == {f"{n}-{i}" for n in range(8) for i in range(15)}
    assert first["status"] == "answered"
    assert state.invoice("inv-2")["actions"]["archive"] == 120
    assert len(state.requests()) == 240
    assert all(entry["status"] in (200, 204) for entry in state.requests())


def test_a_request_answered_after_a_reset_does_not_mark_a_newer_one():
    # A request still in flight when a test's reset cleared the log (a delay past the client's
    # timeout) is answered later: its status must not land on the next test's first request.
    state = SandboxState(api_key="k")
    stale = state.log_request({"method": "GET", "status": None, "fault": None})
    state.reset()
    fresh = state.log_request({"method": "POST", "status": None, "fault": None})
    state.set_request_status(stale, 200, "delay")
    # in_flight: the stale request was still being served when the fresh one arrived.
    assert state.requests() == [{"method": "POST", "status": None, "fault": None, "in_flight": 2}]
    state.set_request_status(fresh, None, "apply_then_drop")
    assert state.requests() == [{"method": "POST", "status": None, "fault": "apply_then_drop", "in_flight": 2}]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0001-01-01T00:00:00+01:00", datetime.min.replace(tzinfo=timezone.utc)),
        ("9999-12-31T23:59:59-01:00", datetime.max.replace(tzinfo=timezone.utc)),
        ("2026-05-01T10:00:00Z", datetime(2026, 5, 1, 10, tzinfo=timezone.utc)),
        ("2026-05-01T12:00:00+02:00", datetime(2026, 5, 1, 10, tzinfo=timezone.utc)),
    ],
)
def test_control_dates_at_the_calendar_edges_are_taken_not_a_500(given: str, expected: datetime) -> None:
    from airflow_provider_clubcollect.sandbox.state import parse_date

    assert parse_date(given) == expected
