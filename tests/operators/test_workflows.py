"""Issue 22 items 5 and 7, issue 26 items 3 and 4: literal IDs checked when the DAG is parsed, signatures
that show every parameter, log lines a person can act on, and selections by a window of age."""

from __future__ import annotations

import inspect
import logging
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.operators.tickets import (
    ArchiveTicketsOperator,
    CreateTicketOperator,
    EscalateTicketsOperator,
    FetchCompanyTicketsOperator,
    FetchInvoiceTicketsOperator,
    SelectThreadsOperator,
)
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_clubcollect.wire import ID_RULE
from tests.conftest import NOW, running_task, thread

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
DAYS = timedelta(days=1)


def inv(n: int) -> str:
    return f"{n:040x}"


@pytest.fixture
def logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """What the tasks logged since the last call: Airflow 3's task loggers print, Airflow 2.11's log records."""
    caplog.set_level(logging.INFO)

    def read() -> str:
        out, err = capfd.readouterr()
        text = out + err if AIRFLOW_V_3_0_PLUS else caplog.text
        caplog.clear()
        # Airflow 3's console renderer ends a record's last line with the logger's name.
        return re.sub(r" \[airflow\.task\.[\w.]+\].*", "", text)

    return read


# --- 22.5: literal IDs are checked when the DAG is parsed ------------------------------------------------

BUILD = {
    "fetch_company": lambda v: FetchCompanyTicketsOperator(task_id="t", company_id=v),
    "fetch_invoice": lambda v: FetchInvoiceTicketsOperator(task_id="t", invoice_id=v),
    "create": lambda v: CreateTicketOperator(task_id="t", invoice_id=v, message="Hallo"),
    "archive": lambda v: ArchiveTicketsOperator(task_id="t", company_id=v, inactive_for=DAYS),
    "escalate": lambda v: EscalateTicketsOperator(task_id="t", company_id=v, unanswered_for=DAYS),
    "select": lambda v: SelectThreadsOperator(task_id="t", company_id=v),
    "sensor": lambda v: UnansweredTicketsSensor(task_id="t", company_id=v),
}


@pytest.mark.parametrize("operator", sorted(BUILD))
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (" padded ", re.escape(f"{ID_RULE}, got ' padded '")),
        ("a/b", re.escape(f"{ID_RULE}, got 'a/b'")),
        ("", re.escape(f"{ID_RULE}, got ''")),
        ("..", re.escape(f"{ID_RULE}, got '..'")),
    ],
)
def test_a_literal_id_is_checked_when_the_dag_is_parsed(operator: str, value: str, match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        BUILD[operator](value)


@pytest.mark.parametrize(
    ("invoice_ids", "match"),
    [
        ("inv-1", "must be a list of invoice ID strings or of ticket dicts, got str 'inv-1'"),
        (["ok", "a/b"], re.escape(f"{ID_RULE}, got 'a/b'")),
        (["ok", ""], "must not be empty"),
        ([{"ticket_id": "x"}], "a ticket dict without 'invoice_id'"),
    ],
)
@pytest.mark.parametrize("operator", [ArchiveTicketsOperator, EscalateTicketsOperator])
def test_literal_invoice_ids_are_checked_when_the_dag_is_parsed(operator: Any, invoice_ids: Any, match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        operator(task_id="t", invoice_ids=invoice_ids)


def test_templated_ids_wait_for_their_run() -> None:
    from airflow.providers.common.compat.sdk import DAG, task

    for operator in sorted(BUILD):
        BUILD[operator]("{{ params.id }}")  # built: rendered, then checked, when the task runs
    with DAG("templated_ids", schedule=None):

        @task
        def ids() -> list[str]:
            return ["inv-1"]

        ArchiveTicketsOperator(task_id="a1", invoice_ids="{{ ti.xcom_pull(task_ids='x') }}")
        ArchiveTicketsOperator(task_id="a2", invoice_ids=["{{ params.id }}", "inv-2"])
        ArchiveTicketsOperator(task_id="a3", invoice_ids=ids())
        ArchiveTicketsOperator(task_id="a4", invoice_ids=[])


# --- 22.7: signatures show every parameter, with SPEC's defaults -----------------------------------------

COMMON = {"clubcollect_conn_id": DEFAULT_CONN_ID, "backoff": None}
BULK = {
    "invoice_ids": None,
    "company_id": None,
    "at_most": None,
    "dry_run": False,
    "max_concurrency": DEFAULT_MAX_CONCURRENCY,
    "reference_time": None,
}


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        (
            FetchCompanyTicketsOperator,
            {"company_id": inspect.Parameter.empty, "status": "unanswered", "page_size": 100, "output_path": None},
        ),
        (FetchInvoiceTicketsOperator, {"invoice_id": inspect.Parameter.empty}),
        (CreateTicketOperator, {"invoice_id": inspect.Parameter.empty, "message": inspect.Parameter.empty}),
        (ArchiveTicketsOperator, {**BULK, "status": "answered", "inactive_for": None}),
        (EscalateTicketsOperator, {**BULK, "unanswered_for": None, "escalate_again": False}),
        (
            UnansweredTicketsSensor,
            {"company_id": inspect.Parameter.empty, "min_tickets": 1, "unanswered_for": None, "reference_time": None},
        ),
    ],
)
def test_signatures_show_every_parameter(operator: Any, expected: dict[str, Any]) -> None:
    parameters = inspect.signature(operator).parameters
    for name, default in {**COMMON, **expected}.items():
        assert name in parameters, f"{operator.__name__} hides {name} in **kwargs"
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[name].default == default, name
    assert "retry_policy" in parameters


# --- 26.3: logs a person can act on ---------------------------------------------------------------------


def test_a_dry_run_logs_a_readable_table_and_returns_the_ids(
    sandbox: SandboxHandle, logs: Callable[[], str], escalation_store: dict[str, str]
) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 1)))  # waiting, not long enough
    sandbox.add_invoice(inv(2), CO, thread(("CUSTOMER", 9), ("COMPANY", 8), ("CUSTOMER", 6.5)))

    would = EscalateTicketsOperator(
        task_id="t", company_id=CO, unanswered_for=timedelta(days=5), reference_time=NOW, dry_run=True
    ).execute({})

    assert would == [inv(2)]  # SPEC section 5: the sorted invoice IDs, unchanged
    lines = logs().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("company"))
    assert lines[header].split() == ["company", "invoice", "waiting", "member's", "last", "words"]
    row = lines[header + 1].split("  ")
    assert [cell.strip() for cell in row if cell.strip()] == [CO, inv(2), "6 days 12 hours", "customer message 2"]


def test_a_dry_run_table_bounds_and_escapes_the_members_words(sandbox: SandboxHandle, logs: Callable[[], str]) -> None:
    words = "Betaald.\nERROR forged line\x1b[31m " + "x" * 300
    sandbox.add_invoice(inv(1), CO, [{"message": words, "sender": "CUSTOMER", "date": (NOW - 40 * DAYS).isoformat()}])

    ArchiveTicketsOperator(
        task_id="t", company_id=CO, status="unanswered", inactive_for=30 * DAYS, reference_time=NOW, dry_run=True
    ).execute({})

    lines = logs().splitlines()
    row = next(line for line in lines if line.startswith(CO))
    assert "Betaald. ERROR forged line\\x1b[31m xxx" in row
    assert row.endswith("x\u2026")
    assert (
        row.split("[31m ")[1].count("x") == 160 - len("Betaald. ERROR forged line\x1b[31m ") - 1
    )  # 160 characters in all
    assert not any(line.startswith("ERROR forged") for line in lines)


def test_a_retried_create_logs_what_it_did_once(sandbox: SandboxHandle, logs: Callable[[], str]) -> None:
    from datetime import datetime, timezone

    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 3)))
    CreateTicketOperator(task_id="t", invoice_id=inv(1), message="Reply").execute({})
    assert logs().count("Posted ticket") == 1
    logs()
    run_started = datetime.now(timezone.utc) - timedelta(minutes=1)
    context: Any = {"ti": SimpleNamespace(try_number=2), "dag_run": SimpleNamespace(start_date=run_started)}

    with running_task(context):
        CreateTicketOperator(task_id="t", invoice_id=inv(1), message="Reply").execute(context)

    text = logs()
    assert text.count("An earlier try of this task posted this message") == 1
    assert "Posted ticket" not in text


def test_the_sensor_says_done_when_it_is(sandbox: SandboxHandle, logs: Callable[[], str]) -> None:
    for n in (1, 2):
        sandbox.add_invoice(inv(n), CO, thread(("CUSTOMER", 3)))

    assert UnansweredTicketsSensor(task_id="s", company_id=CO, min_tickets=3).poke({}).is_done is False
    assert UnansweredTicketsSensor(task_id="s", company_id=CO, min_tickets=2).poke({}).is_done is True

    said = [line for line in logs().splitlines() if "await an answer" in line]
    assert "2 tickets await an answer in company 'club-1'; waiting until at least 3 do." in said[0]
    assert "2 tickets await an answer in company 'club-1': at least 2 wanted, done." in said[1]


# --- 26.4: selections by a window of age ----------------------------------------------------------------


def waiting_1_3_6_days(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice(inv(1), CO, thread(("CUSTOMER", 1)))
    sandbox.add_invoice(inv(3), CO, thread(("CUSTOMER", 3)))
    sandbox.add_invoice(inv(6), CO, thread(("CUSTOMER", 6)))
    sandbox.add_invoice(inv(7), CO, thread(("CUSTOMER", 7), ("COMPANY", 2)))  # answered


def test_select_threads_waiting_between_two_and_five_days(sandbox: SandboxHandle, logs: Callable[[], str]) -> None:
    waiting_1_3_6_days(sandbox)
    select = SelectThreadsOperator(
        task_id="t", company_id=CO, unanswered_for=2 * DAYS, at_most=5 * DAYS, reference_time=NOW
    )
    assert select.execute({}) == [inv(3)]
    assert SelectThreadsOperator(task_id="t", company_id=CO, unanswered_for=5 * DAYS, reference_time=NOW).execute(
        {}
    ) == [inv(6)]
    assert SelectThreadsOperator(
        task_id="t", company_id=CO, status="answered", inactive_for=DAYS, reference_time=NOW
    ).execute({}) == [inv(7)]
    assert [r["method"] for r in sandbox.requests()] == ["GET"] * 3
    said = logs()
    assert "1 of 3 unanswered threads of company 'club-1' waited for more than 2 days and at most 5 days" in said
    assert "1 of 3 unanswered threads of company 'club-1' waited for more than 5 days (now" in said
    assert "1 of 1 answered threads of company 'club-1' had no activity for more than 1 day (now" in said


def test_bulk_operators_take_the_upper_bound_too(sandbox: SandboxHandle, escalation_store: dict[str, str]) -> None:
    waiting_1_3_6_days(sandbox)
    escalate = EscalateTicketsOperator(
        task_id="t", company_id=CO, unanswered_for=2 * DAYS, at_most=5 * DAYS, reference_time=NOW, dry_run=True
    )
    assert escalate.execute({}) == [inv(3)]
    archive = ArchiveTicketsOperator(
        task_id="t", company_id=CO, status="unanswered", inactive_for=2 * DAYS, at_most=5 * DAYS, reference_time=NOW
    )
    assert archive.execute({}) == [inv(3)]
    assert sandbox.invoice(inv(3))["status"] == "archived"
    assert sandbox.invoice(inv(6))["status"] == "unanswered"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unanswered_for": DAYS, "inactive_for": DAYS}, "unanswered_for or inactive_for, not both"),
        ({"unanswered_for": DAYS, "status": "answered"}, "status must be 'unanswered'"),
        ({"at_most": 5}, "at_most must be a timedelta"),
        ({"status": "open"}, "Unknown ticket status 'open'"),
    ],
)
def test_select_threads_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        SelectThreadsOperator(task_id="t", company_id=CO, **kwargs)
