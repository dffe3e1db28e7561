"""Export a company's unanswered tickets and hand them to a downstream task through XCom.

Shows: ``FetchCompanyTicketsOperator`` reading every page (oldest first, each ticket once) and
a TaskFlow ``@task`` receiving the list through XCom to build a per-thread report.  For large
companies, give ``output_path`` (``file://``, ``s3://``, ...) to stream JSON lines instead.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_export_tickets
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator

# The third company of the sandbox's default seed: replace with your own company ID.
SANDBOX_COMPANY_ID = "3c74fb2e20441803427404b9607810fd3e949b9d"


@task
def summarize(tickets: list[dict[str, Any]]) -> dict[str, Any]:
    """Count tickets and threads, and name the thread waiting longest."""
    threads: dict[str, list[dict[str, Any]]] = {}
    for ticket in tickets:
        threads.setdefault(ticket["invoice_id"], []).append(ticket)
    oldest = tickets[0] if tickets else None
    return {
        "tickets": len(tickets),
        "threads": len(threads),
        "oldest_invoice_id": oldest["invoice_id"] if oldest else None,
        "oldest_date": oldest["date"] if oldest else None,
    }


with DAG(
    dag_id="clubcollect_export_tickets",
    description="Export a company's unanswered ClubCollect tickets to a downstream task",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"company_id": Param(SANDBOX_COMPANY_ID, type="string", minLength=1)},
    tags=["clubcollect", "example"],
):
    # [START howto_operator_fetch_company_tickets]
    fetched = FetchCompanyTicketsOperator(
        task_id="fetch_unanswered", company_id="{{ params.company_id }}", status="unanswered"
    )
    summarize(fetched.output)
    # [END howto_operator_fetch_company_tickets]
