"""Test DAGs for ``make e2e``: a fan-out over many companies, with asset watchers, under one request budget.

``clubcollect_test_budget_shared`` reads each company of ``params.company_ids`` (a mapped task per
company, five tickets a page, so that each company takes many requests) through the connection
``clubcollect_budget_shared`` (a ``max_requests_per_second`` shared through Redis);
``clubcollect_test_budget_alone`` does the same through ``clubcollect_budget_alone`` (the same cap,
kept by each process alone).  Each DAG is also scheduled on the assets of a few companies, each
with a watcher polling through the same connection while the DAG is unpaused: the triggerer draws
from the same budget as the workers.  The watched companies have nothing waiting, so the
watchers only poll; a run without ``company_ids`` reads nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger

WATCHERS = 4


@task
def companies(params: Any = None) -> list[str]:
    """The companies to read, from the run's params."""
    return list(params["company_ids"])


@task
def totals(company_ids: list[str], per_company: list[list[dict[str, Any]]]) -> dict[str, int]:
    """Distinct tickets read per company (map index order is the companies' order)."""
    read = zip(company_ids, per_company, strict=True)
    return {company_id: len({t["ticket_id"] for t in tickets}) for company_id, tickets in read}


for variant in ("shared", "alone"):
    conn_id = f"clubcollect_budget_{variant}"
    watched = [f"e2e0budget0{variant}0watch{n}".ljust(40, "0") for n in range(WATCHERS)]
    assets = [
        Asset(
            f"clubcollect://{company_id}/unanswered",
            watchers=[
                AssetWatcher(
                    name=f"clubcollect_budget_{company_id}",
                    trigger=UnansweredTicketsEventTrigger(
                        company_id=company_id, poll_interval=2, clubcollect_conn_id=conn_id
                    ),
                )
            ],
        )
        for company_id in watched
    ]
    with DAG(
        dag_id=f"clubcollect_test_budget_{variant}",
        schedule=assets,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params={"company_ids": []},
    ):
        listed = companies()
        # Retried as a deployment would, on a 429 no sooner than Retry-After (ClubCollectRetryPolicy).
        fetched = FetchCompanyTicketsOperator.partial(
            task_id="fetch",
            status="unanswered",
            page_size=5,
            clubcollect_conn_id=conn_id,
            retries=5,
            retry_delay=timedelta(seconds=1),
        ).expand(company_id=listed)
        totals(listed, fetched.output)
