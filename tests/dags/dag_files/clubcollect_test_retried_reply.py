"""Test DAG: never twice across Airflow task retries, remembered in the task state store.

``reply_then_fail`` posts through the hook inside a ``@task`` and then fails, so Airflow retries
it; ``create`` is a CreateTicketOperator whose first try loses the POST's answer and then fails
(the sandbox's faults do that), so Airflow retries it too.  Both use the connection
``clubcollect_no_retries`` (the sandbox, with ``max_retries`` 0), so that one lost answer fails the try.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, get_current_context, task

from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.operators.tickets import CreateTicketOperator

CONN_ID = "clubcollect_no_retries"


@task(retries=1, retry_delay=timedelta(seconds=0))
def reply_then_fail(invoice_id: str) -> dict[str, Any]:
    with ClubCollectHook(CONN_ID) as hook:
        ticket = hook.create_ticket(invoice_id, "Reply from a task that is retried")
    if get_current_context()["ti"].try_number == 1:
        raise RuntimeError("failing after the post, as a later step of the same task might")
    return ticket


with DAG(
    dag_id="clubcollect_test_retried_reply",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
):
    reply_then_fail("inv-hook")
    CreateTicketOperator(
        task_id="create",
        invoice_id="inv-operator",
        message="Reply from an operator",
        clubcollect_conn_id=CONN_ID,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
