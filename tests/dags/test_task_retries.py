"""ClubCollectRetryPolicy with real task retries: ``dag.test()`` runs every try and asks the task's
retry policy after each failure, as a worker does (Airflow 3.3+)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_3_PLUS

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

pytestmark = [
    pytest.mark.dag,
    pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task retry policies (retry_policy=) arrived in Airflow 3.3"),
]

DAG_ID = "clubcollect_test_task_retries"
RETRY_AFTER = 2


def test_the_default_task_retry_policy_decides_what_airflow_retries(
    run_dag: Callable[..., tuple[str, str]], example_airflow: AirflowHome, no_retries_sandbox: SandboxHandle
) -> None:
    sandbox = no_retries_sandbox
    for invoice_id in ("inv-429", "inv-503"):
        sandbox.add_invoice(invoice_id, "club-1", [])
    sandbox.set_faults(
        script=[
            {"fault": "rate_limit", "retry_after": RETRY_AFTER, "path_regex": "inv-429"},
            *[{"fault": "error", "status": 503, "path_regex": "inv-503"}] * 3,
        ]
    )

    state, output = run_dag(DAG_ID)

    assert state == "failed", output[-4000:]
    tries = {task_id: example_airflow.task_tries(DAG_ID, task_id) for task_id in example_airflow.task_states(DAG_ID)}
    ends = {task_id: (len(task_tries), task_tries[-1]["state"]) for task_id, task_tries in tries.items()}
    # A 404 fails at once, whatever the retries (3): one try, for the operator and for the sensor.
    assert ends["unknown_invoice"] == (1, "failed"), ends
    assert ends["unknown_company"] == (1, "failed"), ends
    assert "ClubCollectNotFoundError (HTTP 404): the invoice or company does not exist" in output
    # retry_policy=None: the same 404 uses Airflow's plain retries (1).
    assert ends["opted_out"] == (2, "failed"), ends
    # 503 on every try: the task's own retries (2), with its own retry delay.
    assert ends["server_error"] == (3, "failed"), ends
    assert [t["retry_delay_override"] for t in tries["server_error"]] == [None, None, None]
    # A 429 asking to wait: the retry was scheduled no sooner, and then succeeded.
    assert ends["rate_limited"] == (2, "success"), ends
    first, second = tries["rate_limited"]
    assert first["retry_delay_override"] == RETRY_AFTER
    assert "Retry-After" in first["retry_reason"]
    assert second["start_date"] - first["end_date"] >= timedelta(seconds=RETRY_AFTER)
