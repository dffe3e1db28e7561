"""Test DAGs: a daily escalation run again and again, to check each thread is escalated once per episode.

``clubcollect_test_escalate_daily`` escalates a company's threads unanswered for over 7 days
(``escalate_again`` from the run's params); ``clubcollect_test_escalate_daily_dry_run`` is the same
selection as a dry run, reading the same record (same connection and company).
``clubcollect_test_escalate_mapped`` fetches two companies' unanswered tickets (mapped) and escalates
each company's threads from those ticket dicts (mapped: a record per map index).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_clubcollect.operators.tickets import EscalateTicketsOperator, FetchCompanyTicketsOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG(
    dag_id="clubcollect_test_escalate_daily",
    schedule=None,
    start_date=START,
    params={"company_id": "club-1", "escalate_again": False},
):
    EscalateTicketsOperator(
        task_id="escalate",
        company_id="{{ params.company_id }}",
        unanswered_for=timedelta(days=7),
        escalate_again="{{ params.escalate_again }}",
    )

with DAG(
    dag_id="clubcollect_test_escalate_daily_dry_run", schedule=None, start_date=START, params={"company_id": "club-1"}
):
    EscalateTicketsOperator(
        task_id="escalate", company_id="{{ params.company_id }}", unanswered_for=timedelta(days=7), dry_run=True
    )

with DAG(dag_id="clubcollect_test_escalate_mapped", schedule=None, start_date=START):
    fetched = FetchCompanyTicketsOperator.partial(task_id="fetch", status="unanswered").expand(
        company_id=["club-1", "club-2"]
    )
    EscalateTicketsOperator.partial(task_id="escalate").expand(invoice_ids=fetched.output)
