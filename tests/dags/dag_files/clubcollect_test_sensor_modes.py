"""Test DAG: the sensor in reschedule mode, freeing its worker slot between pokes."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor

with DAG(dag_id="clubcollect_test_reschedule", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    UnansweredTicketsSensor(task_id="wait", company_id="club-1", mode="reschedule", poke_interval=1, timeout=120)
