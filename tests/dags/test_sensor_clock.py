"""The sensor's clock moves (issue 26): with ``reference_time="{{ dag_run.run_after }}"`` and
``unanswered_for``, a thread that starts waiting after the run began still ages past the threshold,
in poke, reschedule and deferrable mode, with real Airflow (``dag.test()``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS
from tests.dags.test_example_dags import run_until_polled

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_a_thread_that_starts_waiting_after_the_run_began_ages_past_unanswered_for(
    mode: str,
    run_dag: Callable[..., tuple[str, str]],
    example_airflow: AirflowHome,
    clubcollect_sandbox: SandboxHandle,
) -> None:
    if mode == "reschedule" and AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS:
        pytest.skip("Airflow 3.0's dag.test() ends a run after a task's second reschedule (the scheduler does not)")
    sandbox = clubcollect_sandbox
    sandbox.reset(seed=None)
    sandbox.add_invoice(
        "inv-1", "club-1", [{"message": "Betaald", "sender": "COMPANY", "date": "2026-01-01T00:00:00+00:00"}]
    )
    written: list[datetime] = []

    def member_writes() -> None:
        # After the run began: a "now" frozen at run_after would never see this thread wait 2 s.
        written.append(datetime.now(timezone.utc))
        sandbox.add_tickets("inv-1", [{"message": "Toch niet", "sender": "CUSTOMER", "date": written[0].isoformat()}])

    dag_id = f"clubcollect_test_clock_{mode}"
    state, output = run_until_polled(run_dag, sandbox, dag_id, polls=1, then=member_writes)

    assert state == "success", output[-4000:]
    assert [t["message"] for t in example_airflow.xcom(dag_id, "wait")] == ["Toch niet"]
    # Not at once: the read the sensor fired on (its last) came well after the write, where one at once
    # comes a poke interval (1 s) after it; it judged the thread waiting more than 2 s (the line below).
    # Judged by the read's time, not by counting reads: on a busy machine pokes come further apart.
    reads = [r for r in sandbox.requests() if "/companies/" in r["path"]]
    assert reads[-1]["at"] - written[0].timestamp() >= 1.5, reads
    assert "1 ticket awaits an answer for more than 0:00:02 in company 'club-1': at least 1 wanted, done." in output
    if mode == "deferrable":
        assert "running trigger in line" in output
    if mode == "reschedule":
        assert example_airflow.reschedules(dag_id, "wait") >= 2
