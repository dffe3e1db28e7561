"""Fan out over several companies with dynamic task mapping.

Shows: ``FetchCompanyTicketsOperator.partial(...).expand(company_id=...)`` creating one task per
company at run time, a ``Backoff`` shared by the mapped tasks (several companies read at once meet
rate limits sooner), and a downstream ``@task`` receiving every mapped result at once.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_fan_out
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator
from airflow_provider_clubcollect.retry import Backoff

# The companies of the sandbox's default seed: replace with your own company IDs.
COMPANY_IDS = [
    "97a4208030e13df423f3ff0479579c9f540ec07f",
    "9555b2fcac1eafcf9a5f77a6fcb9182c0bbe3152",
    "3c74fb2e20441803427404b9607810fd3e949b9d",
    "6f946b943e8c341e6b7c904b61c811924144f485",
]


@task
def totals(per_company: list[list[dict[str, Any]]]) -> dict[str, int]:
    """Unanswered tickets per company, from every mapped fetch (in map index order)."""
    return {company_id: len(per_company[index]) for index, company_id in enumerate(COMPANY_IDS)}


with DAG(
    dag_id="clubcollect_fan_out",
    description="Fetch unanswered ClubCollect tickets of several companies in parallel",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["clubcollect", "example"],
):
    # [START howto_operator_fetch_company_tickets_mapped]
    fetched = FetchCompanyTicketsOperator.partial(
        task_id="fetch_unanswered",
        status="unanswered",
        # Longer waits between retries of a rate-limited request than the default 0.5 s doubling to 30 s.
        backoff=Backoff(initial=1.0, maximum=60.0),
    ).expand(company_id=COMPANY_IDS)
    totals(fetched.output)
    # [END howto_operator_fetch_company_tickets_mapped]
