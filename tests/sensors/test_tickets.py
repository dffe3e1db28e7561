"""UnansweredTicketsSensor in poke mode against the sandbox, and its deferrable hand-off."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectValidationError,
)
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_2_PLUS
from tests.conftest import NOW, modules_after_importing, thread

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"


def sensor(**kwargs: Any) -> UnansweredTicketsSensor:
    kwargs.setdefault("company_id", CO)
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("timeout", 30)
    return UnansweredTicketsSensor(task_id="wait", **kwargs)


def test_poke_counts_tickets_awaiting_an_answer(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 30), ("COMPANY", 20), ("CUSTOMER", 10), ("CUSTOMER", 2)))
    sandbox.add_invoice("inv-2", CO, thread(("CUSTOMER", 5), ("COMPANY", 4)))

    done = sensor(min_tickets=2, reference_time=NOW).poke({})
    assert done.is_done is True
    assert [t["message"] for t in done.xcom_value] == ["customer message 2", "customer message 3"]

    assert sensor(min_tickets=3, reference_time=NOW).poke({}).is_done is False
    old_only = sensor(min_tickets=1, unanswered_for=timedelta(days=11), reference_time=NOW).poke({})
    assert old_only.is_done is False, "inv-1 is unanswered since 10 days only"


def test_reference_time_rendered_to_nothing_means_the_runs_run_after(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 10)))  # waiting 10 days at NOW, months by the clock

    def done(run_after: datetime, reference_time: Any = "None") -> bool:
        context: Any = {"dag_run": SimpleNamespace(run_after=run_after)}
        return sensor(unanswered_for=timedelta(days=11), reference_time=reference_time).poke(context).is_done

    assert not done(NOW)
    assert done(NOW + timedelta(days=2))
    assert not done(NOW + timedelta(days=2), reference_time=NOW), "a rendered date wins over run_after"


def test_poke_mode_waits_then_succeeds_when_tickets_arrive(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))

    def member_writes() -> None:
        while sum(1 for r in sandbox.requests() if "/companies/" in r["path"]) < 2:
            threading.Event().wait(0.05)
        sandbox.add_tickets("inv-1", thread(("CUSTOMER", 0)))

    writer = threading.Thread(target=member_writes)
    writer.start()
    result = sensor(mode="poke").execute({})
    writer.join()

    assert [(t["invoice_id"], t["sender"]) for t in result] == [("inv-1", "CUSTOMER")]
    assert sum(1 for r in sandbox.requests() if "/companies/" in r["path"]) >= 3


def test_timeout_and_soft_fail(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))

    with pytest.raises(AirflowSensorTimeout):
        sensor(timeout=0.3).execute({})
    with pytest.raises(AirflowSkipException):
        sensor(timeout=0.3, soft_fail=True).execute({})


def test_api_error_fails_the_poking_sensor_even_with_soft_fail(sandbox: SandboxHandle) -> None:
    with pytest.raises(ClubCollectNotFoundError, match="no-such-company"):
        sensor(company_id="no-such-company", soft_fail=True).execute({})


def test_deferrable_defers_to_the_trigger_without_the_key(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 9), ("COMPANY", 8)))

    with pytest.raises(TaskDeferred) as deferred:
        sensor(
            deferrable=True,
            min_tickets=2,
            unanswered_for=timedelta(hours=1),
            poke_interval=7,
            timeout=600,
            max_concurrency=3,
            backoff=Backoff(initial=0.001, maximum=0.002),
        ).execute({})

    trigger = deferred.value.trigger
    assert isinstance(trigger, UnansweredTicketsTrigger)
    assert deferred.value.method_name == "execute_complete"
    # What is left of the timeout after the first poke on the worker.
    assert timedelta(seconds=590) < deferred.value.timeout <= timedelta(seconds=600)
    _, kwargs = trigger.serialize()
    assert kwargs["min_tickets"] == 2
    assert kwargs["unanswered_for_seconds"] == 3600
    assert kwargs["poke_interval"] == 7
    assert kwargs["max_concurrency"] == 3
    assert kwargs["backoff"] == {"initial": 0.001, "maximum": 0.002, "retry_after_max": 120.0}
    assert sandbox.api_key not in repr(kwargs)


def test_deferrable_returns_at_once_when_tickets_already_wait(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 9)))

    result = sensor(deferrable=True).execute({})

    assert [t["invoice_id"] for t in result] == ["inv-1"]


def test_execute_complete_returns_tickets_or_raises_the_right_error() -> None:
    tickets = [{"invoice_id": "i", "ticket_id": "t", "message": "m", "sender": "CUSTOMER", "date": "2026-01-01"}]
    assert sensor().execute_complete({}, {"status": "success", "tickets": tickets}) == tickets

    error = ClubCollectAuthError("Could not fetch: HTTP 401", status_code=401, error_code="unauthorized")
    with pytest.raises(ClubCollectAuthError) as info:
        sensor().execute_complete({}, {"status": "error", **error.to_payload()})
    assert (info.value.status_code, info.value.error_code, str(info.value)) == (
        401,
        "unauthorized",
        "Could not fetch: HTTP 401",
    )
    with pytest.raises(ClubCollectError, match="does not know"):
        sensor().execute_complete({}, {"status": "weird"})


def test_deferred_error_is_not_turned_into_a_skip_by_soft_fail() -> None:
    """As in poke mode: an API error fails the task even with soft_fail."""
    error = ClubCollectNotFoundError("gone", status_code=404, error_code="not_found")
    with pytest.raises(ClubCollectNotFoundError):
        sensor(soft_fail=True).resume_execution(
            "execute_complete", {"event": {"status": "error", **error.to_payload()}}, {}
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_tickets": 0}, "min_tickets must be an integer of at least 1, got 0"),
        ({"unanswered_for": 5}, "unanswered_for must be a timedelta of zero or more, got 5"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        sensor(**kwargs)


@pytest.mark.parametrize("error", ["Trigger timeout", "Trigger/execution timeout"])  # Airflow 3, Airflow 2.11
def test_deferral_timeout_and_soft_fail_end_as_in_poke_mode(error: str) -> None:
    timeout = {"error": error}
    with pytest.raises(AirflowSensorTimeout):
        sensor().resume_execution("__fail__", timeout, {})
    with pytest.raises(AirflowSkipException):
        sensor(soft_fail=True).resume_execution("__fail__", timeout, {})


def test_never_fail_skips_in_both_modes(sandbox: SandboxHandle) -> None:
    with pytest.raises(AirflowSkipException):
        sensor(company_id="no-such-company", never_fail=True).execute({})
    with pytest.raises(AirflowSkipException):
        sensor(company_id="no-such-company", never_fail=True, deferrable=True).execute({})
    error = ClubCollectNotFoundError("gone", status_code=404, error_code="not_found")
    with pytest.raises(AirflowSkipException):
        sensor(never_fail=True).resume_execution(
            "execute_complete", {"event": {"status": "error", **error.to_payload()}}, {}
        )


def test_silent_fail_keeps_waiting_in_both_modes(sandbox: SandboxHandle) -> None:
    with pytest.raises(AirflowSensorTimeout):
        sensor(company_id="no-such-company", silent_fail=True, timeout=0.3).execute({})
    with pytest.raises(TaskDeferred):
        sensor(company_id="no-such-company", silent_fail=True, deferrable=True).execute({})
    error = ClubCollectNotFoundError("gone", status_code=404, error_code="not_found")
    with pytest.raises(TaskDeferred):
        sensor(silent_fail=True).resume_execution(
            "execute_complete", {"event": {"status": "error", **error.to_payload()}}, {}
        )


def test_templated_values_are_not_checked_at_parse_time() -> None:
    from airflow.providers.common.compat.sdk import DAG, XComArg, task

    from airflow_provider_clubcollect.operators.tickets import (
        ArchiveTicketsOperator,
        CreateTicketOperator,
        FetchCompanyTicketsOperator,
    )

    with DAG("templated"):

        @task
        def compose() -> str:
            return "Hello"

        create = CreateTicketOperator(task_id="c", invoice_id="i", message=compose())
        fetch = FetchCompanyTicketsOperator(task_id="f", company_id=CO, status="{% if true %}answered{% endif %}")
        archive = ArchiveTicketsOperator(task_id="a", company_id=CO, status=compose(), inactive_for=timedelta(days=1))
        waiting = UnansweredTicketsSensor(task_id="s", company_id="{{ params.company_id }}")

        # Kept as given, for Airflow to render when the task runs ...
        assert isinstance(create.message, XComArg)
        assert fetch.status == "{% if true %}answered{% endif %}"
        assert isinstance(archive.status, XComArg)
        assert waiting.company_id == "{{ params.company_id }}"
        # ... while the same arguments given as plain values are checked when the file is parsed.
        with pytest.raises(ClubCollectValidationError, match="message"):
            CreateTicketOperator(task_id="c2", invoice_id="i", message="")
        with pytest.raises(ClubCollectValidationError, match="status"):
            FetchCompanyTicketsOperator(task_id="f2", company_id=CO, status="{answered}")
        with pytest.raises(ClubCollectValidationError, match="status for archiving"):
            ArchiveTicketsOperator(task_id="a2", company_id=CO, status="archived", inactive_for=timedelta(days=1))


def test_the_sensor_module_imports_the_trigger_only_when_it_defers() -> None:
    """DAG files import the sensor at every parse; the trigger (and Airflow's trigger base) is
    only needed when the sensor defers."""
    loaded = modules_after_importing("airflow_provider_clubcollect.sensors.tickets")
    # Before 3.2, Airflow's own sensor base imports its trigger base (and 3.1 its standard triggers).
    ours = ("airflow.triggers", "airflow_provider_clubcollect") if AIRFLOW_V_3_2_PLUS else ("airflow_provider",)
    assert [m for m in loaded if m.startswith(ours) and ".triggers" in m] == []
