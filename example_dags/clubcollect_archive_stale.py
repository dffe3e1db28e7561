"""Archive stale answered tickets, daily.

Shows: ``ArchiveTicketsOperator`` selecting a company's answered threads whose last activity is
older than 30 days, reading every page first, then archiving them concurrently.  "Now" is the
time the task runs; on Airflow 3 give ``reference_time="{{ dag_run.run_after }}"`` to make it the
run's ``run_after`` instead, so that a re-run of an old date selects what was stale then.

Run it against the local sandbox (no ClubCollect account needed)::

    python -m airflow_provider_clubcollect.sandbox &          # prints the connection to export
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_archive_stale

Point it at your own company with ``-c '{"company_id": "..."}'`` or the DAG's params.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_clubcollect.operators.tickets import ArchiveTicketsOperator

# The first company of the sandbox's default seed: replace with your own company ID.
SANDBOX_COMPANY_ID = "97a4208030e13df423f3ff0479579c9f540ec07f"

with DAG(
    dag_id="clubcollect_archive_stale",
    description="Archive answered ClubCollect ticket threads without activity for 30 days",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"company_id": Param(SANDBOX_COMPANY_ID, type="string", minLength=1)},
    tags=["clubcollect", "example"],
):
    # [START howto_operator_archive_tickets]
    ArchiveTicketsOperator(
        task_id="archive_stale_answered",
        company_id="{{ params.company_id }}",
        status="answered",
        inactive_for=timedelta(days=30),
    )
    # [END howto_operator_archive_tickets]
