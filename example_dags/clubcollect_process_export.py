"""Process each new ticket export: a DAG scheduled on the exports of ``clubcollect_export_to_storage``.

Shows: scheduling on the asset alias ``FetchCompanyTicketsOperator`` emits an export through,
and reading the triggering asset events: each names the file (its URI) and carries the company,
the status and the ticket count in its extra, so the consumer can check that it read the whole
export before acting on it.  Events that arrive while a run is queued are handed to one run.

Airflow's scheduler runs it by itself when the export DAG succeeds (try it with ``airflow
standalone``, the sandbox and the connection as for the other examples).  A manual run has no
export to read and does nothing::

    airflow dags test clubcollect_process_export
"""

from __future__ import annotations

import json
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, AssetAlias, task

# [START howto_schedule_on_clubcollect_export]
EXPORTS = AssetAlias("clubcollect_export.clubcollect_export_to_storage.export")


@task
def read_exports(*, triggering_asset_events: Any = None) -> dict[str, Any]:
    """Read every export that triggered this run; fail if a file does not hold what its event says."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    events = triggering_asset_events.get(EXPORTS, [])
    exports, waiting = [], set()
    for event in events:
        with ObjectStoragePath(event.asset.uri).open("r", encoding="utf-8") as lines:
            tickets = [json.loads(line) for line in lines]
        if len(tickets) != event.extra["count"]:
            raise ValueError(f"{event.asset.uri} holds {len(tickets)} tickets, its event says {event.extra['count']}")
        waiting.update(ticket["invoice_id"] for ticket in tickets)
        exports.append({"uri": event.asset.uri, "company_id": event.extra["company_id"], "count": len(tickets)})
    return {"exports": exports, "threads_waiting": len(waiting)}


with DAG(
    dag_id="clubcollect_process_export",
    description="Read each new ClubCollect ticket export as soon as it is written",
    schedule=EXPORTS,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["clubcollect", "example"],
):
    read_exports()
# [END howto_schedule_on_clubcollect_export]
