"""Property-based tests (hypothesis) of response handling and ticket selection.

Whatever an answer holds (any JSON, wrong types, missing fields, deep nesting, bytes that are
not JSON, huge bodies, any ``Retry-After``) and whatever a ticket's fields hold (any date
string included), only ``ClubCollectError`` subclasses escape, with messages of bounded size.
Examples are derandomized, so every run tries the same ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_clubcollect import wire
from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.hooks.clubcollect import _newest_posted
from airflow_provider_clubcollect.paging import CompanyTicketPager
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.selection import (
    awaiting_answer,
    invoice_ids_from,
    select_threads,
    to_utc,
)

#: The most characters an error message built from one answer or one value may have.
BOUND = 2_000

EXAMPLES = settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
date_strings = st.one_of(
    st.text(max_size=40),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999-23:59",
            "2026-02-30T10:00:00Z",
            "2026-05-01",
            "10:00",
            "P1D",
            "2026-W01",
            "x" * 10_000,
        ]
    ),
)
field_values = st.one_of(json_values, date_strings, st.sampled_from([wire.SENDER_CUSTOMER, wire.SENDER_COMPANY]))
tickets = st.dictionaries(
    st.sampled_from(["ticket_id", "invoice_id", "sender", "date", "message"]),
    field_values,
    max_size=5,
)
plausible_tickets = st.fixed_dictionaries(
    {
        "ticket_id": st.text(min_size=1, max_size=8),
        "invoice_id": st.sampled_from(["inv-1", "inv-2", "inv-3"]),
        "sender": st.sampled_from([wire.SENDER_CUSTOMER, wire.SENDER_COMPANY, "OTHER"]),
        "date": date_strings,
    }
)
page_objects = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "page_number": st.integers(-2, 5),
            "page_size": st.integers(-2, 200),
            "total_entries": st.integers(-5, 10**12),
            "total_pages": st.integers(-2, 10**9),
        }
    ),
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "tickets": st.one_of(json_values, st.lists(st.one_of(tickets, plausible_tickets), max_size=6)),
        "page": page_objects,
        "error": st.one_of(json_values, st.text(max_size=50)),
        "errors": json_values,
        "ticket_id": json_values,
    },
)
bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    shaped.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.integers(1, 100_000).map(lambda depth: b"[" * depth),
    st.integers(1, 3_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3_000).map(lambda depth: b'{"error":' * depth + b"1" + b"}" * depth),
    st.sampled_from(
        [
            json.dumps({"error": "x" * 1_000_000}).encode(),
            json.dumps({"errors": ["y" * 1000] * 1000}).encode(),
            b"<html>" + b"z" * 1_000_000 + b"</html>",
            json.dumps({"tickets": [{"ticket_id": "t" * 100_000}]}).encode(),
        ]
    ),
)
headers = st.dictionaries(
    st.sampled_from(["retry-after", "content-type"]),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            ["0", "-1", "1e400", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"]
        ),
    ),
)
requests = st.sampled_from(
    [
        wire.get_invoice_tickets_request("inv-1"),
        wire.create_ticket_request("inv-1", "Hello"),
        wire.invoice_action_request("inv-1", wire.ACTION_ARCHIVE),
        wire.company_tickets_page_request("club-1", wire.STATUS_UNANSWERED, 1, 100),
    ]
)


def bounded(error: ClubCollectError) -> None:
    assert len(str(error)) <= BOUND, len(str(error))
    assert error.error_code is None or len(error.error_code) <= BOUND


def handle(request: wire.ApiRequest, response: wire.RawResponse) -> Any:
    """What the hook and the trigger do with an answer: parse it, then read what the call returns."""
    payload = wire.parse_response(request, response, attempts=3)
    if request.method == "POST" and request.expect_body:
        return wire.parse_ticket(request, payload)
    if request.path.startswith("v2/companies/"):
        pager = CompanyTicketPager("club-1", wire.STATUS_UNANSWERED)
        return pager.accept(pager.next_request() or request, payload)  # as the answer to the pager's own request
    if request.expect_body:
        return wire.parse_tickets(request, payload)
    return payload


@EXAMPLES
@given(request=requests, status=st.integers(100, 599), body=bodies, headers=headers)
def test_any_answer_gives_a_value_or_a_bounded_clubcollect_error(
    request: wire.ApiRequest, status: int, body: bytes, headers: dict[str, str]
) -> None:
    try:
        handle(request, wire.RawResponse(status, headers, body))
    except ClubCollectError as error:
        bounded(error)


@EXAMPLES
@given(status=st.integers(100, 599), headers=headers, retry_number=st.integers(1, 10_000))
def test_any_retry_after_gives_a_wait_within_the_caps(status: int, headers: dict[str, str], retry_number: int) -> None:
    backoff = Backoff()

    wait = backoff.wait_seconds(retry_number, headers.get("retry-after"))

    assert 0 <= wait <= max(backoff.retry_after_max, backoff.maximum)


now_values = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc)
)
durations = st.timedeltas(min_value=timedelta(0))


@EXAMPLES
@given(
    given_tickets=st.lists(st.one_of(tickets, plausible_tickets), max_size=12),
    now=now_values,
    duration=durations,
)
def test_selection_gives_invoice_ids_or_a_bounded_clubcollect_error(
    given_tickets: list[dict[str, Any]], now: datetime, duration: timedelta
) -> None:
    known = {t["invoice_id"] for t in given_tickets if isinstance(t.get("invoice_id"), str)}
    for unanswered in (False, True):
        try:
            chosen = select_threads(given_tickets, duration, now, unanswered=unanswered)
        except ClubCollectError as error:
            bounded(error)
        else:
            assert set(chosen) <= known
    try:
        waiting = awaiting_answer(given_tickets, None, now)
    except ClubCollectError as error:
        bounded(error)
    else:
        assert all(t.get("sender") == wire.SENDER_CUSTOMER for t in waiting)
    try:
        _newest_posted(given_tickets, "m", since=now)
    except ClubCollectError as error:  # pragma: no cover - unreadable dates count as recent
        bounded(error)


@EXAMPLES
@given(given_tickets=st.lists(plausible_tickets, max_size=12), now=now_values, duration=durations)
def test_plausible_tickets_with_readable_dates_are_always_selected_without_error(
    given_tickets: list[dict[str, Any]], now: datetime, duration: timedelta
) -> None:
    readable = [t for t in given_tickets if wire.parse_iso_datetime(t["date"]) is not None]

    chosen = select_threads(readable, duration, now, unanswered=True)

    for invoice_id in chosen:
        thread = sorted(
            (t for t in readable if t["invoice_id"] == invoice_id),
            key=lambda t: wire.parse_iso_datetime(t["date"]),  # type: ignore[arg-type, return-value]
        )
        assert thread[-1]["sender"] != wire.SENDER_COMPANY


@EXAMPLES
@given(value=st.one_of(json_values, date_strings, st.datetimes()))
def test_any_reference_time_is_a_datetime_or_a_bounded_validation_error(value: Any) -> None:
    try:
        result = to_utc(value)
    except ClubCollectError as error:
        bounded(error)
    else:
        assert result.tzinfo is not None


@EXAMPLES
@given(value=st.one_of(json_values, st.lists(st.one_of(st.text(max_size=50), tickets), max_size=6)))
def test_any_invoice_ids_value_is_ids_or_a_bounded_validation_error(value: Any) -> None:
    try:
        ids = invoice_ids_from(value)
    except ClubCollectError as error:
        bounded(error)
    else:
        assert ids == sorted(set(ids))
        assert all(isinstance(i, str) and i == i.strip() and i for i in ids)
