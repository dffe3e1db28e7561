"""Acknowledge a member's message within seconds: a DAG scheduled by an asset watcher.

Shows: ``UnansweredTicketsEventTrigger`` in an ``AssetWatcher`` on the asset
``clubcollect://<company_id>/unanswered``.  The triggerer polls the company's unanswered tickets
(every 5 seconds here, for demos; a minute or more in production) and turns the tickets that newly
await an answer into an asset event, one per poll carrying every ticket that poll found (a burst of
messages is one event, so one run); each event schedules this DAG, which posts one acknowledgement
per thread with ``CreateTicketOperator``, mapped over the invoices.  Airflow may fold several
events into one run, and may deliver an event again: the first task reads every triggering
event's tickets, and keeps only the threads where one of them still awaits an answer, so that a
ticket is acknowledged once however often its event arrives.  The post itself runs on a worker,
never in the triggerer.

Note: the watcher has no ``since``, so its first poll reports every ticket already waiting (your
backlog) and the first run acknowledges them all; set ``since`` to the moment you deploy it to
skip the backlog.

Run it against the local sandbox with a triggerer, so that the watcher runs::

    python -m airflow_provider_clubcollect.sandbox &          # prints the connection to export
    export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'             # as printed
    airflow standalone                                        # scheduler, triggerer, API server

``airflow dags test clubcollect_acknowledge_new_messages`` runs it once without a triggerer: such
a run has no triggering events, so it acknowledges nothing and succeeds.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, Variable, task

from airflow_provider_clubcollect.operators.tickets import CreateTicketOperator
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger

# The watched company is part of the asset, so it is known when the file is parsed: the Variable
# ``clubcollect_watched_company_id`` (e.g. ``AIRFLOW_VAR_CLUBCOLLECT_WATCHED_COMPANY_ID``), by default
# the first company of the sandbox's seed, whose other example (archive_stale) only acts on answered threads.
SANDBOX_COMPANY_ID = Variable.get("clubcollect_watched_company_id", "97a4208030e13df423f3ff0479579c9f540ec07f")
ACKNOWLEDGEMENT = "Thank you for your message. We have received it and will answer within two working days."

# [START howto_asset_watcher]
UNANSWERED = Asset(
    f"clubcollect://{SANDBOX_COMPANY_ID}/unanswered",
    watchers=[
        AssetWatcher(
            name=f"clubcollect_unanswered_{SANDBOX_COMPANY_ID}",
            trigger=UnansweredTicketsEventTrigger(company_id=SANDBOX_COMPANY_ID, poll_interval=5),
        )
    ],
)
# [END howto_asset_watcher]


@task
def invoices_to_acknowledge(triggering_asset_events: Any = None) -> list[str]:
    """The invoices whose thread holds a triggering ticket that still awaits an answer."""
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.selection import group_threads

    # Each event's extra is {"from_trigger": True, "payload": {..., "tickets": [every ticket of one poll]}}.
    events = triggering_asset_events.get(UNANSWERED, ()) if triggering_asset_events else ()
    by_invoice: dict[str, set[str]] = {}
    for event in events:
        payload = (event.extra or {}).get("payload") or {}
        for ticket in payload.get("tickets", ()):
            by_invoice.setdefault(ticket["invoice_id"], set()).add(ticket["ticket_id"])
    if not by_invoice:
        print("No triggering ticket events (as in `airflow dags test`): nothing to acknowledge.")
        return []
    chosen = []
    with ClubCollectHook() as hook:
        for invoice_id, ticket_ids in sorted(by_invoice.items()):
            thread = [dict(t, invoice_id=invoice_id) for t in hook.get_invoice_tickets(invoice_id)]
            waiting = {t["ticket_id"] for th in group_threads(thread) for t in th.awaiting_answer()}
            if ticket_ids & waiting:
                chosen.append(invoice_id)
            else:
                print(f"Invoice {invoice_id}: its tickets {sorted(ticket_ids)} were answered already; skipping.")
    return chosen


with DAG(
    dag_id="clubcollect_acknowledge_new_messages",
    description="Acknowledge each new ClubCollect member message, scheduled by an asset watcher",
    schedule=[UNANSWERED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["clubcollect", "example"],
):
    # An empty list (no events) maps to no task instances: the run succeeds with nothing posted.
    CreateTicketOperator.partial(task_id="acknowledge", message=ACKNOWLEDGEMENT).expand(
        invoice_id=invoices_to_acknowledge()
    )
