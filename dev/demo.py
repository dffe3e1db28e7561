"""`make demo`: every example DAG, run by real Airflow against a local ClubCollect sandbox.

Starts the sandbox on a free loopback port, runs each DAG in ``example_dags/`` with
``airflow dags test`` in a throwaway AIRFLOW_HOME on SQLite, prints what each did (read from the
sandbox's state and the runs' XCom), and stops the sandbox, also when a DAG fails.  Exits 0 only
when every DAG succeeded.  Needs no ClubCollect account and no network.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dev.airflow_runner import AirflowHome  # noqa: E402

EXAMPLE_DAGS = REPO / "example_dags"
DEMO_HOME = REPO / ".demo" / "airflow"
WAITS_FOR_A_PERSON = {"clubcollect_review_before_escalation"}


def main() -> int:
    from airflow_provider_clubcollect.sandbox.server import SandboxServer

    shutil.rmtree(DEMO_HOME, ignore_errors=True)
    airflow = AirflowHome(DEMO_HOME, EXAMPLE_DAGS)
    print(f"Preparing Airflow in {DEMO_HOME} (airflow db migrate) ...", flush=True)
    airflow.migrate()

    # A DAG that waits for a person cannot run unattended: make e2e answers it through the REST API.
    dag_ids = sorted(path.stem for path in EXAMPLE_DAGS.glob("*.py") if path.stem not in WAITS_FOR_A_PERSON)
    results: dict[str, bool] = {}
    with SandboxServer(seed=0) as sandbox:
        before = sandbox.state.snapshot()
        print(f"ClubCollect sandbox at {sandbox.base_url} with {len(sandbox.state.companies())} companies.\n")
        env = {"AIRFLOW_CONN_CLUBCOLLECT_DEFAULT": sandbox.connection_json()}
        for dag_id in dag_ids:
            started = time.monotonic()
            done = airflow.dags_test(dag_id, env=env)
            ok = done.returncode == 0 and airflow.last_run_state(dag_id) == "success"
            results[dag_id] = ok
            print(f"{'ok  ' if ok else 'FAIL'} {dag_id} ({time.monotonic() - started:.0f} s)", flush=True)
            if not ok:
                print(_tail(done.stdout + done.stderr), file=sys.stderr)
        after = sandbox.state.snapshot()

    print()
    for line in summary(airflow, before, after):
        print(line)
    failed = [dag_id for dag_id, ok in results.items() if not ok]
    print()
    if failed:
        print(f"{len(failed)} of {len(results)} example DAGs failed: {', '.join(failed)}.")
        return 1
    print(f"All {len(results)} example DAGs succeeded against the sandbox.")
    print(f"Not run here, as they wait for a person (make e2e answers them): {', '.join(sorted(WAITS_FOR_A_PERSON))}.")
    return 0


def summary(airflow: AirflowHome, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What the DAGs did, read from the sandbox's state and the runs' XCom."""
    names = after.get("company_names", {})
    invoices_before = before["invoices"]
    invoices = after["invoices"]
    archived = sorted(i for i, inv in invoices.items() if inv["actions"]["archive"])
    escalated = sorted(i for i, inv in invoices.items() if inv["assigned_to_support"])
    replied = sorted(i for i, inv in invoices.items() if inv["tickets_created"])

    def per_company(ids: list[str]) -> str:
        counts: dict[str, int] = {}
        for invoice_id in ids:
            company = invoices[invoice_id]["company_id"]
            counts[company] = counts.get(company, 0) + 1
        return ", ".join(f"{names.get(c, c)}: {n}" for c, n in sorted(counts.items())) or "none"

    lines = ["What the example DAGs did, as the sandbox saw it:"]
    exported = _xcom(airflow, "clubcollect_export_tickets", "summarize")
    if isinstance(exported, dict):
        lines.append(
            f"  tickets exported:   {exported['tickets']} unanswered tickets in {exported['threads']} threads "
            f"(oldest from {exported['oldest_date']})"
        )
    totals = _xcom(airflow, "clubcollect_fan_out", "totals")
    if isinstance(totals, dict):
        lines.append(
            f"  fan-out fetch:      {sum(totals.values())} unanswered tickets over {len(totals)} companies "
            f"({', '.join(f'{names.get(c, c)}: {n}' for c, n in totals.items())})"
        )
    lines.append(f"  threads archived:   {len(archived)} ({per_company(archived)})")
    stale_before = sum(1 for i in archived if invoices_before[i]["status"] == "answered")
    lines.append(f"                      of which {stale_before} were answered threads idle for over 30 days")
    lines.append(f"  threads escalated:  {len(escalated)} assigned to ClubCollect support ({per_company(escalated)})")
    lines.append(f"  replies posted:     {len(replied)} ({per_company(replied)})")
    return lines


def _xcom(airflow: AirflowHome, dag_id: str, task_id: str) -> Any:
    try:
        return airflow.xcom(dag_id, task_id)
    except KeyError:  # the DAG failed before it pushed the value: leave that line out
        return None


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
