"""Reply, then escalate: remind members waiting 2 to 5 days, and hand those waiting longer to support.

Shows: ``SelectThreadsOperator`` choosing a company's threads by a window of age (unanswered for
more than 2 days and at most 5), ``CreateTicketOperator`` mapped over its output (one reply per
thread, never posted twice), then ``EscalateTicketsOperator`` assigning threads unanswered for more
than 5 days to ClubCollect support, once per unanswered episode.  No custom code: the selection is
an operator.

On a day with nothing to remind, the selection returns ``[]`` and the mapped reply task is
*skipped*; Airflow's default trigger rule (``all_success``) would then skip the escalation too.
The escalation therefore uses ``trigger_rule="none_failed"``: it runs after the replies succeeded
or were skipped, and not after a reply failed.  The two windows do not overlap, and a thread just
replied to is answered, so no thread is both reminded and escalated.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_reply_then_escalate
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_clubcollect.operators.tickets import (
    CreateTicketOperator,
    EscalateTicketsOperator,
    SelectThreadsOperator,
)

REMINDER = "Thank you for your message: we have not forgotten you and will answer within three days."

with DAG(
    dag_id="clubcollect_reply_then_escalate",
    description="Remind members waiting 2 to 5 days, escalate threads waiting longer",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # as in clubcollect_auto_escalate: overlapping runs would escalate twice
    # By default the sandbox seed's second company: give your own.
    params={"company_id": Param("9555b2fcac1eafcf9a5f77a6fcb9182c0bbe3152", type="string", minLength=1)},
    tags=["clubcollect", "example"],
):
    # [START howto_operator_reply_then_escalate]
    waiting_2_to_5_days = SelectThreadsOperator(
        task_id="waiting_2_to_5_days",
        company_id="{{ params.company_id }}",
        unanswered_for=timedelta(days=2),
        at_most=timedelta(days=5),
    )
    remind = CreateTicketOperator.partial(task_id="remind", message=REMINDER).expand(
        invoice_id=waiting_2_to_5_days.output
    )
    escalate = EscalateTicketsOperator(
        task_id="escalate",
        company_id="{{ params.company_id }}",
        unanswered_for=timedelta(days=5),
        # Runs when the replies succeeded or were skipped (nothing to remind), not after a failed reply.
        trigger_rule="none_failed",
    )
    remind >> escalate
    # [END howto_operator_reply_then_escalate]
