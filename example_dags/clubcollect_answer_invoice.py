"""Read one invoice's thread, then answer it.

Shows: ``FetchInvoiceTicketsOperator`` putting an invoice's tickets in XCom, and
``CreateTicketOperator`` posting a templated reply on the same invoice, never twice: not when
the answer to the POST is lost, and not when Airflow retries the task.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_answer_invoice

Answer another invoice with ``-c '{"invoice_id": "..."}'`` or the DAG's params.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_clubcollect.operators.tickets import CreateTicketOperator, FetchInvoiceTicketsOperator

# An unanswered invoice of the sandbox's default seed (third company): replace with your own.
SANDBOX_INVOICE_ID = "e483d15ab8971214e934d57a74db5f02a6e0f964"

with DAG(
    dag_id="clubcollect_answer_invoice",
    description="Read a ClubCollect invoice's ticket thread and post a reply on it",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"invoice_id": Param(SANDBOX_INVOICE_ID, type="string", minLength=1)},
    tags=["clubcollect", "example"],
):
    # [START howto_operator_fetch_invoice_tickets]
    thread = FetchInvoiceTicketsOperator(task_id="fetch_thread", invoice_id="{{ params.invoice_id }}")
    # [END howto_operator_fetch_invoice_tickets]

    # [START howto_operator_create_ticket]
    reply = CreateTicketOperator(
        task_id="reply",
        invoice_id="{{ params.invoice_id }}",
        message=(
            "Thank you for your {{ ti.xcom_pull(task_ids='fetch_thread') | length }} message(s) "
            "about this invoice. We will contact you this week."
        ),
    )
    # [END howto_operator_create_ticket]

    thread >> reply
