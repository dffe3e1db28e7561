"""Auto-escalate: wait for tickets unanswered for a week, then hand them to ClubCollect support.

Shows: ``UnansweredTicketsSensor`` with ``deferrable=True`` waiting in the triggerer (no worker
slot held) until at least one thread has waited more than 7 days for an answer, then
``EscalateTicketsOperator`` assigning exactly the threads the sensor found to support (its XCom,
a list of ticket dicts, feeds ``invoice_ids``).  The escalation runs on a worker, never in the
triggerer.  Each thread is escalated once per unanswered episode: the hourly runs that find it
still waiting leave it alone until it has been answered and waits anew.  The operator remembers
what it escalated in an Airflow Variable named after the connection, DAG and task
(``clubcollect.escalated.clubcollect_default.clubcollect_auto_escalate.assign_to_support``):
delete it to escalate every waiting thread again.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_auto_escalate
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_clubcollect.operators.tickets import EscalateTicketsOperator
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor

# The second company of the sandbox's default seed: replace with your own company ID.
SANDBOX_COMPANY_ID = "9555b2fcac1eafcf9a5f77a6fcb9182c0bbe3152"

with DAG(
    dag_id="clubcollect_auto_escalate",
    description="Escalate ClubCollect ticket threads unanswered for more than 7 days",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # One run at a time: two overlapping runs would both read the escalation record before either
    # wrote it, and both assign the same threads (docs: escalate_tickets, "Runs at the same time").
    max_active_runs=1,
    params={"company_id": Param(SANDBOX_COMPANY_ID, type="string", minLength=1)},
    tags=["clubcollect", "example"],
):
    # [START howto_sensor_unanswered_tickets_deferrable]
    waiting = UnansweredTicketsSensor(
        task_id="wait_for_unanswered",
        company_id="{{ params.company_id }}",
        unanswered_for=timedelta(days=7),
        deferrable=True,
        poke_interval=300,
        timeout=timedelta(hours=12).total_seconds(),
    )
    # [END howto_sensor_unanswered_tickets_deferrable]
    # [START howto_operator_escalate_tickets]
    EscalateTicketsOperator(task_id="assign_to_support", invoice_ids=waiting.output)
    # [END howto_operator_escalate_tickets]
