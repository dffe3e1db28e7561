"""Answer the thread waiting longest, then archive it, with ``ClubCollectHook`` inside ``@task``.

Shows: the hook used directly from TaskFlow tasks, a pattern for logic the operators do not
cover.  The first task reads every unanswered ticket and picks the thread waiting longest; the
second posts a reply (never twice, even if the answer to the POST is lost or the task is retried
after posting) and archives it.
The server-changing calls run in their own task, so a retry of the read never repeats them.

Run it against the local sandbox::

    python -m airflow_provider_clubcollect.sandbox &
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow dags test clubcollect_reply_with_hook
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

# The fourth company of the sandbox's default seed: replace with your own company ID.
SANDBOX_COMPANY_ID = "6f946b943e8c341e6b7c904b61c811924144f485"
REPLY = "Thank you for your message. We have looked at your invoice and will contact you this week."


# [START howto_hook_clubcollect]
try:
    # Airflow 3.3+: a refused key or an unknown invoice fails the task at once instead of being retried,
    # and a 429 retries it no sooner than ClubCollect asked.  (The operators do this by default.)
    from airflow_provider_clubcollect.retry import ClubCollectRetryPolicy

    TASK_RETRIES: dict[str, Any] = {"retries": 2, "retry_policy": ClubCollectRetryPolicy()}
except ImportError:  # before Airflow 3.3: retries alone decide
    TASK_RETRIES = {"retries": 2}


@task
def oldest_unanswered_thread(company_id: str) -> str | None:
    """The invoice whose thread has waited longest for an answer (lists are oldest first)."""
    from airflow_provider_clubcollect.selection import awaiting_answer, to_utc

    with ClubCollectHook() as hook:
        waiting = awaiting_answer(hook.iter_company_tickets(company_id, "unanswered"), None, to_utc(None))
    return waiting[0]["invoice_id"] if waiting else None


@task(**TASK_RETRIES)
def reply_and_archive(invoice_id: str | None) -> dict[str, Any] | None:
    """Post the reply on the thread, then archive it.

    If the archive fails, Airflow retries the whole task: the hook finds the reply it posted in
    the task's state store (Airflow 3.3+) and returns it instead of posting it again.
    """
    if invoice_id is None:
        return None
    with ClubCollectHook() as hook:
        ticket = hook.create_ticket(invoice_id, REPLY)
        hook.archive_tickets(invoice_id)
    return {"invoice_id": invoice_id, "reply_ticket_id": ticket["ticket_id"]}


# [END howto_hook_clubcollect]


with DAG(
    dag_id="clubcollect_reply_with_hook",
    description="Reply to the longest-waiting ClubCollect thread and archive it",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"company_id": Param(SANDBOX_COMPANY_ID, type="string", minLength=1)},
    tags=["clubcollect", "example"],
):
    reply_and_archive(oldest_unanswered_thread("{{ params.company_id }}"))
