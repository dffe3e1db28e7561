"""Export a company's unanswered tickets to object storage, as an asset other DAGs are scheduled on.

Shows: ``FetchCompanyTicketsOperator`` with ``output_path``, streaming JSON lines page by page.
The path is templated (one file per run, named by its run ID), so the export is
emitted through the asset alias ``clubcollect_export.clubcollect_export_to_storage.export``,
with the company, the status and the ticket count in the event's extra;
``clubcollect_process_export`` is scheduled on that alias.
With the OpenLineage provider installed, the run also reports the company's ticket list as its
input dataset and the file as its output dataset.

The param ``export_root`` defaults to the Variable ``clubcollect_export_root``, else
``file:///tmp/clubcollect-exports``.  Use ``s3://``, ``gs://`` or another ``ObjectStoragePath`` URL in
production: a ``file://`` path is only readable by a downstream task on the same machine.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_export_to_storage
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, Variable

from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator

# The third company of the sandbox's default seed: replace with your own company ID.
SANDBOX_COMPANY_ID = "3c74fb2e20441803427404b9607810fd3e949b9d"

with DAG(
    dag_id="clubcollect_export_to_storage",
    description="Export a company's unanswered ClubCollect tickets to a file other DAGs are scheduled on",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "company_id": Param(SANDBOX_COMPANY_ID, type="string", minLength=1),
        "export_root": Param(
            Variable.get("clubcollect_export_root", "file:///tmp/clubcollect-exports"), type="string", minLength=1
        ),
    },
    tags=["clubcollect", "example"],
):
    # [START howto_operator_fetch_company_tickets_export]
    FetchCompanyTicketsOperator(
        task_id="export",
        company_id="{{ params.company_id }}",
        status="unanswered",
        output_path=(
            "{{ params.export_root }}/{{ params.company_id }}/"
            "unanswered-{{ run_id | replace(':', '') | replace('+', '_') }}.jsonl"
        ),
    )
    # [END howto_operator_fetch_company_tickets_export]
