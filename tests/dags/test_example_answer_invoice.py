"""example_dags/clubcollect_answer_invoice.py, run with real Airflow against the sandbox."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from tests.conftest import EXAMPLE_DAGS
from tests.dags.test_example_dags import EXAMPLE_COMPANIES, run_ok

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from dev.airflow_runner import AirflowHome

DAG_ID = "clubcollect_answer_invoice"


def _default_invoice_id() -> str:
    tree = ast.parse((EXAMPLE_DAGS / f"{DAG_ID}.py").read_text())
    (value,) = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["SANDBOX_INVOICE_ID"]
        and isinstance(node.value, ast.Constant)
    ]
    return str(value)


def test_answer_invoice_reads_the_thread_and_replies_once(
    example_airflow: AirflowHome, clubcollect_sandbox: SandboxHandle
) -> None:
    invoice_id = _default_invoice_id()
    before = clubcollect_sandbox.invoice(invoice_id)
    assert (before["company_id"], before["status"]) == (EXAMPLE_COMPANIES[2], "unanswered")

    run_ok(example_airflow, clubcollect_sandbox, DAG_ID)

    assert example_airflow.xcom(DAG_ID, "fetch_thread") == before["tickets"]
    reply = example_airflow.xcom(DAG_ID, "reply")
    after = clubcollect_sandbox.invoice(invoice_id)
    assert after["status"] == "answered"
    assert after["tickets_created"] == 1
    assert after["tickets"][-1] == reply
    assert reply["sender"] == "COMPANY"
    assert reply["message"] == (
        f"Thank you for your {len(before['tickets'])} message(s) about this invoice. We will contact you this week."
    )
