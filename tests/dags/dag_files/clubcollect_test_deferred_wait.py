"""Test DAG: a deferrable UnansweredTicketsSensor polling every second, then escalation."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_clubcollect.operators.tickets import EscalateTicketsOperator
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor

with DAG(
    dag_id="clubcollect_test_deferred_wait",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"company_id": "club-1"},
):
    waiting = UnansweredTicketsSensor(
        task_id="wait", company_id="{{ params.company_id }}", deferrable=True, poke_interval=1, timeout=120
    )
    EscalateTicketsOperator(task_id="escalate", invoice_ids=waiting.output)
