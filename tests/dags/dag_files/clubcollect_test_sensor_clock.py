"""Test DAGs: the sensor with the documented ``reference_time="{{ dag_run.run_after }}"`` and
``unanswered_for``, in poke, reschedule and deferrable mode: its clock must move while it waits."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS

# The documented template; Airflow 2.11's runs have no run_after (docs/compatibility.rst).
RUN_AFTER = "{{ dag_run.run_after }}" if AIRFLOW_V_3_0_PLUS else "{{ data_interval_end }}"

for mode in ("poke", "reschedule", "deferrable"):
    with DAG(
        dag_id=f"clubcollect_test_clock_{mode}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")
    ):
        UnansweredTicketsSensor(
            task_id="wait",
            company_id="club-1",
            unanswered_for=timedelta(seconds=2),
            reference_time=RUN_AFTER,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=1,
            timeout=25,
        )
