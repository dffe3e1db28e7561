# ruff: noqa: E501  (the catalogue is a table: one bad input per line)
"""A catalogue of bad inputs: each fails before any request reaches the server, with a
``ClubCollectValidationError`` whose message names the value and what is allowed.

Operator arguments fail when the DAG is parsed; templated values fail when the rendered value is
used, before the first request; connection fields and extras fail when the connection is read.
The sandbox's request log proves that nothing was sent.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect import wire
from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.operators.tickets import (
    ArchiveTicketsOperator,
    CreateTicketOperator,
    EscalateTicketsOperator,
    FetchCompanyTicketsOperator,
    FetchInvoiceTicketsOperator,
    SelectThreadsOperator,
)
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_2_PLUS

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
DAY = timedelta(days=1)
STATUSES = "allowed: unanswered, answered, archived"
ID_TYPE = "must be a string"
ID_RULE = wire.ID_RULE


def rendered(operator: Any, **values: Any) -> Callable[[], Any]:
    """Run ``operator`` as if its templated fields had rendered to ``values``."""
    for name, value in values.items():
        setattr(operator, name, value)
    return lambda: operator.execute({})


def invoice(value: object) -> Callable[[], Any]:
    return lambda: ClubCollectHook().get_invoice_tickets(value)  # type: ignore[arg-type]


#: (what is bad, how to use it, texts the message must hold: the value and what is allowed)
ARGUMENTS: list[tuple[str, Callable[[], Any], tuple[str, ...]]] = [
    # operator arguments, refused at parse time
    ("status", lambda: FetchCompanyTicketsOperator(task_id="t", company_id=CO, status="closed"), ("'closed'", STATUSES)),
    ("page-size-0", lambda: FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size=0), ("got 0", "1 to 100")),
    ("page-size-101", lambda: FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size=101), ("got 101", "1 to 100")),
    ("page-size-str", lambda: FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size="10"), ("got '10'", "integer")),
    ("page-size-bool", lambda: FetchCompanyTicketsOperator(task_id="t", company_id=CO, page_size=True), ("got True", "integer")),
    ("blank-message", lambda: CreateTicketOperator(task_id="t", invoice_id="i", message=" \t"), ("got ' \\t'", "non-empty string")),
    ("inactive-for-int", lambda: ArchiveTicketsOperator(task_id="t", company_id=CO, inactive_for=30), ("got 30", "timedelta of zero or more")),
    ("inactive-for-negative", lambda: ArchiveTicketsOperator(task_id="t", company_id=CO, inactive_for=-DAY), ("days=-1", "timedelta of zero or more")),
    ("archive-status-archived", lambda: ArchiveTicketsOperator(task_id="t", company_id=CO, inactive_for=DAY, status="archived"), ("got 'archived'", "'answered' or 'unanswered'")),
    ("unanswered-for-str", lambda: EscalateTicketsOperator(task_id="t", company_id=CO, unanswered_for="7d"), ("got '7d'", "timedelta")),
    ("concurrency-0", lambda: ArchiveTicketsOperator(task_id="t", invoice_ids=["i"], max_concurrency=0), ("got 0", "at least 1")),
    ("concurrency-str", lambda: EscalateTicketsOperator(task_id="t", invoice_ids=["i"], max_concurrency="8"), ("got '8'", "at least 1")),
    ("concurrency-float", lambda: EscalateTicketsOperator(task_id="t", invoice_ids=["i"], max_concurrency=2.5), ("got 2.5", "integer")),
    ("min-tickets-0", lambda: UnansweredTicketsSensor(task_id="t", company_id=CO, min_tickets=0), ("got 0", "at least 1")),
    ("min-tickets-float", lambda: UnansweredTicketsSensor(task_id="t", company_id=CO, min_tickets=1.5), ("got 1.5", "integer")),
    ("sensor-unanswered-for", lambda: UnansweredTicketsSensor(task_id="t", company_id=CO, unanswered_for=-DAY), ("days=-1", "timedelta of zero or more")),
    ("sensor-unanswered-for-template", lambda: UnansweredTicketsSensor(task_id="t", company_id=CO, unanswered_for="{{ x }}"), ("got '{{ x }}'", "timedelta of zero or more")),
    ("neither-ids-nor-company", lambda: ArchiveTicketsOperator(task_id="t"), ("not neither", "either invoice_ids or company_id")),
    # retry counts and back-off
    ("max-retries-count", lambda: ClubCollectHook(max_retries=101), ("got 101", "from 0 to 100")),
    ("max-retries-negative", lambda: ClubCollectHook(max_retries=-1), ("got -1", "from 0 to 100")),
    ("max-retries-float", lambda: ClubCollectHook(max_retries=2.0), ("got 2.0", "integer from 0 to 100")),
    ("backoff-nan", lambda: Backoff(initial=float("nan")), ("initial", "got nan", "finite number 0 or more")),
    ("backoff-infinite", lambda: Backoff(maximum=float("inf")), ("maximum", "got inf", "finite number 0 or more")),
    ("backoff-bool", lambda: Backoff(retry_after_max=True), ("retry_after_max", "got True", "finite number 0 or more")),
    ("backoff-max-below-initial", lambda: Backoff(initial=5, maximum=1), ("got 1", "at least initial (5 s)")),
    ("backoff-not-one", lambda: ArchiveTicketsOperator(task_id="t", invoice_ids=["i"], backoff=2), ("got 2", "a Backoff or a dict")),
    # IDs: path characters, whitespace, control characters, wrong types
    ("id-slash", invoice("a/b"), ("got 'a/b'", ID_RULE)),
    ("id-backslash", invoice("a\\b"), ("got 'a\\\\b'", ID_RULE)),
    ("id-dot", invoice("."), ("got '.'", ID_RULE)),
    ("id-dotdot", invoice(".."), ("got '..'", ID_RULE)),
    ("id-empty", invoice(""), ("got ''", ID_RULE)),
    ("id-blank", invoice("   "), ("got '   '", ID_RULE)),
    ("id-leading-space", invoice(" inv-1"), ("got ' inv-1'", ID_RULE)),
    ("id-trailing-newline", invoice("inv-1\n"), ("got 'inv-1\\n'", ID_RULE)),
    ("id-newline", invoice("inv\n1"), ("got 'inv\\n1'", ID_RULE)),
    ("id-nul", invoice("inv\x001"), ("got 'inv\\x001'", ID_RULE)),
    ("id-del", invoice("inv\x7f1"), ("got 'inv\\x7f1'", ID_RULE)),
    ("id-int", invoice(123), ("got int 123", ID_TYPE)),
    ("id-none", invoice(None), ("got NoneType None", ID_TYPE)),
    ("company-id-list", lambda: ClubCollectHook().get_company_tickets(["c"], "answered"), ("got list ['c']", ID_TYPE)),  # type: ignore[arg-type]
    ("hook-status", lambda: ClubCollectHook().get_company_tickets(CO, "UNANSWERED"), ("'UNANSWERED'", STATUSES)),
    ("hook-page-number", lambda: ClubCollectHook().get_company_tickets_page(CO, "answered", page_number=0), ("got 0", "at least 1")),
    ("hook-max-retries", lambda: ClubCollectHook(max_retries=500).get_invoice_tickets("i"), ("got 500", "from 0 to 100")),
    ("invoice-ids-str", lambda: ArchiveTicketsOperator(task_id="t", invoice_ids="inv-1").execute({}), ("got str 'inv-1'", "must be a list")),
    ("invoice-ids-dict", lambda: ArchiveTicketsOperator(task_id="t", invoice_ids=[{"ticket_id": "x"}]).execute({}), ("{'ticket_id': 'x'}", "without 'invoice_id'")),
    ("invoice-ids-path", lambda: EscalateTicketsOperator(task_id="t", invoice_ids=["ok", "../x"]).execute({}), ("got '../x'", ID_RULE)),
    # templated values that render to nonsense
    ("rendered-status", rendered(FetchCompanyTicketsOperator(task_id="t", company_id=CO, status="{{ s }}"), status="None"), ("'None'", STATUSES)),
    ("rendered-company", rendered(FetchCompanyTicketsOperator(task_id="t", company_id="{{ c }}"), company_id=""), ("got ''", ID_RULE)),
    ("rendered-invoice", rendered(FetchInvoiceTicketsOperator(task_id="t", invoice_id="{{ i }}"), invoice_id="inv 1 "), ("got 'inv 1 '", ID_RULE)),
    ("rendered-archive-company", rendered(ArchiveTicketsOperator(task_id="t", company_id="{{ c }}", inactive_for=DAY), company_id=["c"]), ("got list ['c']", ID_TYPE)),
    ("rendered-create-invoice", rendered(CreateTicketOperator(task_id="t", invoice_id="{{ i }}", message="m"), invoice_id="a/b"), ("'a/b'", ID_RULE)),
    ("rendered-message", rendered(CreateTicketOperator(task_id="t", invoice_id="i", message="{{ m }}"), message=""), ("got ''", "non-empty string")),
    ("rendered-reference-time", rendered(ArchiveTicketsOperator(task_id="t", company_id=CO, inactive_for=DAY, reference_time="{{ r }}"), reference_time="not-a-date"), ("got 'not-a-date'", "a datetime or an ISO 8601 string")),
    ("rendered-sensor-time", lambda: UnansweredTicketsSensor(task_id="t", company_id=CO, reference_time="yesterday").poke({}), ("got 'yesterday'", "ISO 8601")),
    ("rendered-id-list", rendered(EscalateTicketsOperator(task_id="t", invoice_ids="{{ ids }}"), invoice_ids="['a', 'b']"), ("got str \"['a', 'b']\"", "must be a list")),
    ("rendered-archive-status", rendered(ArchiveTicketsOperator(task_id="t", company_id=CO, inactive_for=DAY, status="{{ s }}"), status="archived"), ("got 'archived'", "'answered' or 'unanswered'")),
    ("rendered-select-status", rendered(SelectThreadsOperator(task_id="t", company_id=CO, unanswered_for=DAY, status="{{ s }}"), status="answered"), ("got 'answered'", "status must be 'unanswered'")),
]  # fmt: skip

#: (what is bad, the connection's fields, texts the message must hold)
CONNECTIONS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("no-key", {"password": None}, ("'clubcollect_default' has no API key", "password")),
    ("key-with-space", {"password": "my key"}, ("'clubcollect_default'", "whitespace, control or non-ASCII")),
    ("scheme", {"host": "ftp://example.com/api"}, ("'ftp://example.com/api'", "scheme must be https")),
    ("plain-http", {"host": "http://example.com/api"}, ("'http://example.com/api'", "only for a loopback host")),
    ("port-too-big", {"host": "http://127.0.0.1:99999/api"}, ("got '99999'", "from 1 to 65535")),
    ("port-not-a-number", {"host": "https://example.com:https/api"}, ("got 'https'", "from 1 to 65535")),
    ("port-field", {"host": "example.com", "port": 70000}, ("got 70000", "from 1 to 65535")),
    ("credentials", {"host": "https://user:pw@example.com/api"}, ("'https://example.com/api'", "must not carry")),
    ("query", {"host": "https://example.com/api?api_key=x"}, ("'https://example.com/api'", "must not carry a query")),
    ("host-with-space", {"host": "https://exa mple.com/api"}, ("'https://exa mple.com/api'", "whitespace")),
    ("timeout-zero", {"extra": {"timeout": 0}}, ("got 0", "finite number above 0")),
    ("timeout-text", {"extra": {"timeout": "soon"}}, ("got 'soon'", "finite number above 0")),
    ("timeout-negative", {"extra": {"timeout": -5}}, ("got -5", "finite number above 0")),
    ("max-retries-negative", {"extra": {"max_retries": -1}}, ("got -1", "from 0 to 100")),
    ("max-retries-huge", {"extra": {"max_retries": 1000}}, ("got 1000", "from 0 to 100")),
    ("max-retries-fraction", {"extra": {"max_retries": 2.5}}, ("got 2.5", "from 0 to 100")),
    ("extra-list", {"extra": ["timeout", 5]}, ("got list ['timeout', 5]", "must be a JSON object")),
    ("extra-misspelt", {"extra": {"timout": 5}}, ("unknown extra 'timout'; did you mean 'timeout'?",)),
    ("extra-singular", {"extra": {"max_retry": 2}}, ("unknown extra 'max_retry'; did you mean 'max_retries'?",)),
    ("extra-unrelated", {"extra": {"region": "eu"}}, ("unknown extra 'region'.", "extras are timeout, max_retries")),
    ("conn-type-http", {"conn_type": "http"}, ("has type 'http'", "set its type to 'clubcollect'")),
]


def assert_refused(sandbox: SandboxHandle, call: Callable[[], Any], texts: tuple[str, ...]) -> None:
    with pytest.raises(ClubCollectValidationError) as info:
        call()
    message = str(info.value)
    for text in texts:
        assert text in message, f"{text!r} is not in {message!r}"
    assert sandbox.requests() == [], "a request reached the server"


def test_the_catalogue_holds_at_least_40_bad_inputs() -> None:
    assert len(ARGUMENTS) + len(CONNECTIONS) >= 40


@pytest.mark.parametrize(("call", "texts"), [case[1:] for case in ARGUMENTS], ids=[case[0] for case in ARGUMENTS])
def test_bad_argument_fails_before_any_request(
    sandbox: SandboxHandle, call: Callable[[], Any], texts: tuple[str, ...]
) -> None:
    assert_refused(sandbox, call, texts)


@pytest.mark.parametrize(("fields", "texts"), [case[1:] for case in CONNECTIONS], ids=[case[0] for case in CONNECTIONS])
def test_bad_connection_fails_before_any_request(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], texts: tuple[str, ...]
) -> None:
    if isinstance(fields.get("extra"), list) and AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_2_PLUS:
        pytest.skip("Airflow 3.0 and 3.1 drop a connection whose extra is not an object: it is then not defined")
    conn = {"conn_type": "clubcollect", "password": sandbox.api_key, "host": sandbox.base_url, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(conn))

    assert_refused(sandbox, lambda: ClubCollectHook().get_invoice_tickets("inv-1"), texts)


def test_a_missing_connection_says_how_to_create_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The triggers' error event: tests/triggers/test_tickets.py::test_any_failure_becomes_an_error_event.
    monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
    words = (
        r"Connection 'nope' is not defined\. Create it in the Airflow UI .*"
        r"AIRFLOW_CONN_NOPE='\{\"conn_type\": \"clubcollect\", \"password\": \"<API key>\"\}'"
    )
    with pytest.raises(ClubCollectValidationError, match=words):
        ClubCollectHook("nope").get_invoice_tickets("inv-1")
