"""Review before escalation: a person decides what happens to threads waiting too long.

Shows: ``EscalateTicketsOperator(dry_run=True)`` selecting the threads unanswered for more than
7 days without changing anything; :func:`~airflow_provider_clubcollect.review.review_body`
rendering them (invoice, the member's last message, how long it waited) as the Markdown body of
Airflow's human-in-the-loop ``HITLBranchOperator``; and, per the person's choice in Airflow's UI
(or through the REST API), escalating those threads to ClubCollect support, archiving them, or
posting a reply the person types (``HITLEntryOperator``) on each through ``CreateTicketOperator``
(never twice).  When nothing waits, the run ends without asking anyone.

The review waits for a person (up to a day), so ``airflow dags test`` is not the way to run it:
deploy it, then answer in the UI under *Required Actions*.  ``make e2e`` answers it through the
REST API once per choice and checks the sandbox's end state.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import HITLBranchOperator, HITLEntryOperator
from airflow.sdk import DAG, Param, task

from airflow_provider_clubcollect.operators.tickets import (
    ArchiveTicketsOperator,
    CreateTicketOperator,
    EscalateTicketsOperator,
    FetchCompanyTicketsOperator,
)

# The second company of the sandbox's default seed: replace with your own company ID.
SANDBOX_COMPANY_ID = "9555b2fcac1eafcf9a5f77a6fcb9182c0bbe3152"

ESCALATE = "Escalate to ClubCollect support"
ARCHIVE = "Archive the threads"
REPLY = "Reply to the members"


@task.short_circuit
def review_body(tickets: list[dict[str, Any]], invoice_ids: list[str]) -> str:
    """The threads as a Markdown table; an empty result skips the review and everything after it."""
    from airflow_provider_clubcollect.review import review_body

    return review_body(tickets, invoice_ids) if invoice_ids else ""


with DAG(
    dag_id="clubcollect_review_before_escalation",
    description="A person reviews ClubCollect threads unanswered for 7 days: escalate, archive or reply",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"company_id": Param(SANDBOX_COMPANY_ID, type="string", minLength=1)},
    tags=["clubcollect", "example", "human-in-the-loop"],
):
    # [START howto_review_before_escalation]
    unanswered = FetchCompanyTicketsOperator(
        task_id="fetch_unanswered", company_id="{{ params.company_id }}", status="unanswered"
    )
    selected = EscalateTicketsOperator(
        task_id="select_waiting",
        company_id="{{ params.company_id }}",
        unanswered_for=timedelta(days=7),
        reference_time="{{ dag_run.run_after }}",
        dry_run=True,  # only selects: the person decides what happens
    )
    body = review_body(unanswered.output, selected.output)
    decision = HITLBranchOperator(
        task_id="review",
        subject="ClubCollect threads waiting more than 7 days for an answer",
        body="{{ ti.xcom_pull(task_ids='review_body') }}",
        options=[ESCALATE, ARCHIVE, REPLY],
        options_mapping={ESCALATE: "escalate", ARCHIVE: "archive", REPLY: "write_reply"},
        response_timeout=timedelta(days=1),
    )
    escalate = EscalateTicketsOperator(task_id="escalate", invoice_ids=selected.output)
    archive = ArchiveTicketsOperator(task_id="archive", invoice_ids=selected.output)
    write_reply = HITLEntryOperator(
        task_id="write_reply",
        subject="Your reply, posted on every thread listed",
        body="{{ ti.xcom_pull(task_ids='review_body') }}",
        # No minLength: task params are validated when the task starts, before anyone typed;
        # CreateTicketOperator refuses an empty message.
        params={"reply": Param("", type="string", description="The message members will read")},
        response_timeout=timedelta(days=1),
    )
    reply = CreateTicketOperator.partial(
        task_id="reply", message="{{ ti.xcom_pull(task_ids='write_reply')['params_input']['reply'] }}"
    ).expand(invoice_id=selected.output)
    # [END howto_review_before_escalation]

    body >> decision >> [escalate, archive, write_reply]
    write_reply >> reply
