"""ClubCollectRetryPolicy: its decisions, the operators' and the sensor's default, and the retry
module on an Airflow without task retry policies (before 3.3). Real task retries: tests/dags/test_task_retries.py."""

from __future__ import annotations

import copy
import inspect
import json
import pickle
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_clubcollect import retry
from airflow_provider_clubcollect.exceptions import (
    ClubCollectAmbiguousError,
    ClubCollectAuthError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
    ClubCollectValidationError,
)
from airflow_provider_clubcollect.operators.tickets import (
    ArchiveTicketsOperator,
    CreateTicketOperator,
    EscalateTicketsOperator,
    FetchCompanyTicketsOperator,
    FetchInvoiceTicketsOperator,
)
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_3_PLUS
from tests.conftest import modules_after_importing

needs_airflow_3_3 = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="task retry policies (retry_policy=) arrived in Airflow 3.3"
)


def evaluate(exception: BaseException, retry_delay: timedelta | None = None) -> Any:
    from airflow_provider_clubcollect.retry import ClubCollectRetryPolicy

    context = None if retry_delay is None else {"task": SimpleNamespace(retry_delay=retry_delay)}
    return ClubCollectRetryPolicy().evaluate(exception, try_number=1, max_tries=4, context=context)  # type: ignore[arg-type]


# --- the decisions -----------------------------------------------------------------------------------------


@needs_airflow_3_3
@pytest.mark.parametrize(
    ("error", "named"),
    [
        (ClubCollectAuthError("refused", status_code=401), "ClubCollectAuthError (HTTP 401): the API refused the key"),
        (ClubCollectAuthError("blocked", status_code=403), "ClubCollectAuthError (HTTP 403)"),
        (ClubCollectNotFoundError("gone", status_code=404, error_code="invalid_invoice_id"), "(HTTP 404): the invoice"),
        (ClubCollectValidationError("refused", status_code=422), "ClubCollectValidationError (HTTP 422): the input"),
        (ClubCollectValidationError("page_size must be 1 to 100"), "ClubCollectValidationError: the input is wrong"),
    ],
)
def test_errors_no_retry_can_heal_fail_the_task_at_once(error: ClubCollectError, named: str) -> None:
    from airflow.providers.common.compat.sdk import RetryAction

    decision = evaluate(error)

    assert decision.action is RetryAction.FAIL
    assert named in decision.reason
    assert decision.reason.endswith("retrying cannot help.")


@needs_airflow_3_3
@pytest.mark.parametrize(
    ("retry_after", "retry_delay", "delay"),
    [
        (30.0, timedelta(seconds=10), timedelta(seconds=30)),  # the API asks for longer: its wait
        (30.0, None, timedelta(seconds=30)),  # no context: no retry_delay known
        (0.5, timedelta(0), timedelta(seconds=0.5)),
        (30.0, timedelta(seconds=30), None),  # the task's own delay is as long: Airflow's own schedule
        (30.0, timedelta(minutes=5), None),
        (None, timedelta(0), None),  # no Retry-After: the task's own settings
        (10 * 86_400.0, timedelta(0), timedelta(days=1)),  # at most a day
    ],
)
def test_a_429_retries_no_sooner_than_its_retry_after(
    retry_after: float | None, retry_delay: timedelta | None, delay: timedelta | None
) -> None:
    from airflow.providers.common.compat.sdk import RetryAction

    error = ClubCollectRateLimitError("slow down", status_code=429, retry_after=retry_after)

    decision = evaluate(error, retry_delay)

    if delay is None:
        assert (decision.action, decision.retry_delay) == (RetryAction.DEFAULT, None)
    else:
        assert (decision.action, decision.retry_delay) == (RetryAction.RETRY, delay)
        assert f"asked to wait {delay.total_seconds():g} s (Retry-After)" in decision.reason


@needs_airflow_3_3
@pytest.mark.parametrize(
    "error",
    [
        ClubCollectServerError("down", status_code=503),
        ClubCollectServerError("could not connect"),
        ClubCollectAmbiguousError("lost", timed_out=True),
        ClubCollectError("Could not archive 2 of 5 invoices"),  # a bulk action's failures
        RuntimeError("a bug"),
    ],
)
def test_everything_else_follows_the_tasks_own_retries(error: BaseException) -> None:
    from airflow.providers.common.compat.sdk import RetryAction

    assert evaluate(error, timedelta(seconds=10)).action is RetryAction.DEFAULT


@needs_airflow_3_3
def test_it_is_an_airflow_retry_policy_that_chains_serializes_and_pickles() -> None:
    from airflow.providers.common.compat.sdk import ChainRetryPolicy, RetryAction, RetryPolicy

    from airflow_provider_clubcollect.retry import ClubCollectRetryPolicy

    policy = ClubCollectRetryPolicy()

    assert isinstance(policy, RetryPolicy)
    chained = ChainRetryPolicy([policy]).evaluate(ClubCollectNotFoundError("gone", status_code=404), 1, 4)
    assert chained.action is RetryAction.FAIL
    assert isinstance(
        ClubCollectRetryPolicy.deserialize(json.loads(json.dumps(policy.serialize()))), ClubCollectRetryPolicy
    )
    assert isinstance(pickle.loads(pickle.dumps(policy)), ClubCollectRetryPolicy)
    assert repr(policy) == "ClubCollectRetryPolicy()"


# --- the operators' and the sensor's default ---------------------------------------------------------------


def every_task(**kwargs: Any) -> list[Any]:
    return [
        FetchInvoiceTicketsOperator(task_id="fetch_invoice", invoice_id="inv", **kwargs),
        FetchCompanyTicketsOperator(task_id="fetch_company", company_id="club-1", **kwargs),
        CreateTicketOperator(task_id="create", invoice_id="inv", message="Hallo", **kwargs),
        ArchiveTicketsOperator(task_id="archive", invoice_ids=["inv"], **kwargs),
        EscalateTicketsOperator(task_id="escalate", invoice_ids=["inv"], **kwargs),
        UnansweredTicketsSensor(task_id="sensor", company_id="club-1", **kwargs),
    ]


@needs_airflow_3_3
def test_operators_and_the_sensor_use_it_unless_the_dag_gives_another_retry_policy() -> None:
    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_clubcollect.retry import ClubCollectRetryPolicy

    assert all(isinstance(task.retry_policy, ClubCollectRetryPolicy) for task in every_task())
    assert all(task.has_retry_policy for task in every_task())
    # Opting out: None as an argument, or in default_args.
    assert [task.retry_policy for task in every_task(retry_policy=None)] == [None] * 6
    with DAG("opted_out", schedule=None, default_args={"retry_policy": None}):
        assert [task.retry_policy for task in every_task()] == [None] * 6
    # A mapped task, once Airflow unmaps it on the worker.
    with DAG("mapped", schedule=None):
        mapped = FetchInvoiceTicketsOperator.partial(task_id="mapped").expand(invoice_id=["a", "b"])
        kept_out = FetchInvoiceTicketsOperator.partial(task_id="kept_out", retry_policy=None).expand(invoice_id=["a"])
    assert isinstance(mapped.unmap({"invoice_id": "a"}).retry_policy, ClubCollectRetryPolicy)
    # Airflow copies a DAG's tasks for a subset of them (partial_subset): a copied default is still the default.
    assert isinstance(copy.deepcopy(mapped).unmap({"invoice_id": "a"}).retry_policy, ClubCollectRetryPolicy)
    assert kept_out.unmap({"invoice_id": "a"}).retry_policy is None


def test_what_the_operators_hand_airflow_for_retry_policy() -> None:
    theirs = object()
    handed = retry.task_retry_policy_kwargs(retry.DEFAULT_TASK_RETRY_POLICY)

    # The default reads as the policy in the signatures and the API reference, on every Airflow version.
    for task_class in (FetchInvoiceTicketsOperator, UnansweredTicketsSensor):
        assert repr(inspect.signature(task_class).parameters["retry_policy"].default) == "ClubCollectRetryPolicy()"
    assert retry.task_retry_policy_kwargs(theirs) == {"retry_policy": theirs}
    if AIRFLOW_V_3_3_PLUS:
        assert type(handed["retry_policy"]).__name__ == "ClubCollectRetryPolicy"
        assert retry.task_retry_policy_kwargs(None) == {"retry_policy": None}
    else:
        assert handed == {}
        assert retry.task_retry_policy_kwargs(None) == {}


# --- before Airflow 3.3 ------------------------------------------------------------------------------------


def test_before_airflow_3_3_the_policy_is_absent_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "AIRFLOW_V_3_3_PLUS", False)

    with pytest.raises(ImportError, match=r"ClubCollectRetryPolicy needs Airflow 3\.3 or later.*this is Airflow \d"):
        retry.ClubCollectRetryPolicy  # noqa: B018
    with pytest.raises(ImportError, match=r"ClubCollectRetryPolicy needs Airflow 3\.3 or later"):
        from airflow_provider_clubcollect.retry import ClubCollectRetryPolicy  # noqa: F401
    # The operators then give Airflow no retry_policy, unless the DAG gives one (for Airflow to refuse).
    assert retry.task_retry_policy_kwargs(retry.DEFAULT_TASK_RETRY_POLICY) == {}
    assert retry.task_retry_policy_kwargs(None) == {}
    theirs = object()
    assert retry.task_retry_policy_kwargs(theirs) == {"retry_policy": theirs}


def test_other_missing_names_are_plain_attribute_errors() -> None:
    assert not hasattr(retry, "RetryPolicy")
    with pytest.raises(ImportError, match="cannot import name 'RetryPolicy'"):
        from airflow_provider_clubcollect.retry import RetryPolicy  # type: ignore[attr-defined]  # noqa: F401


def test_the_retry_module_is_light() -> None:
    """A DAG file may import it: no HTTP client, and Airflow's task retry policies only on first use."""
    loaded = set(modules_after_importing("airflow_provider_clubcollect.retry"))
    # What Airflow loads for the exception the provider's errors derive from (requests on 2.11, httpx on 3).
    airflows_own = set(modules_after_importing("airflow_provider_clubcollect.exceptions"))

    assert not {"requests", "httpx", "airflow_provider_clubcollect.transport"} & (loaded - airflows_own)
    assert not {"airflow_provider_clubcollect._task_retry", "airflow.sdk.definitions.retry_policy"} & loaded
