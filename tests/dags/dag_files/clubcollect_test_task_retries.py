"""Test DAG: which failures Airflow retries, with the operators' default task retry policy.

Every task uses the connection ``clubcollect_no_retries`` (the sandbox, with ``max_retries`` 0: the
tests' ``no_retries_sandbox``), so that one failed request fails the try and the task retry policy
decides what comes next (``ClubCollectRetryPolicy`` on Airflow 3.3+).  No task waits on its own ``retry_delay``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_clubcollect.operators.tickets import FetchInvoiceTicketsOperator
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor

with DAG(
    dag_id="clubcollect_test_task_retries",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args={"clubcollect_conn_id": "clubcollect_no_retries", "retry_delay": timedelta(seconds=0)},
):
    # An unknown invoice (404): no retry can heal it.
    FetchInvoiceTicketsOperator(task_id="unknown_invoice", invoice_id="inv-unknown", retries=3)
    # The same for the sensor: an unknown company.
    UnansweredTicketsSensor(task_id="unknown_company", company_id="club-unknown", poke_interval=1, retries=3)
    # The same failure with Airflow's plain retries: the DAG opted out.
    FetchInvoiceTicketsOperator(task_id="opted_out", invoice_id="inv-unknown", retries=1, retry_policy=None)
    # A 429 asking to wait (the test scripts it): the retry comes no sooner.
    FetchInvoiceTicketsOperator(task_id="rate_limited", invoice_id="inv-429", retries=1)
    # 503 on every try (the test scripts it): the task's own retries.
    FetchInvoiceTicketsOperator(task_id="server_error", invoice_id="inv-503", retries=2)
