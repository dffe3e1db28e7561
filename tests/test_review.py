"""review_body: threads rendered for a person, and the review-before-escalation example DAG."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from airflow_provider_clubcollect.review import MESSAGE_CHARS, review_body
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_1_PLUS
from tests.conftest import EXAMPLE_DAGS, NOW, days_ago


def ticket(invoice_id: str, sender: str, age_days: float, message: str = "Ik wil niet betalen.") -> dict[str, Any]:
    return {
        "ticket_id": f"{invoice_id}-{age_days}",
        "invoice_id": invoice_id,
        "message": message,
        "sender": sender,
        "date": days_ago(age_days),
    }


def rows(body: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in body.splitlines()[4:]
        if line.startswith("|")
    ]


def test_one_row_per_waiting_thread_longest_waiting_first() -> None:
    tickets = [
        ticket("inv-a", "CUSTOMER", 3, "first"),
        ticket("inv-b", "CUSTOMER", 20, "old question"),
        ticket("inv-b", "COMPANY", 15, "our answer"),
        ticket("inv-b", "CUSTOMER", 10, "follow-up"),
        ticket("inv-b", "CUSTOMER", 9, "still waiting"),
        ticket("inv-c", "CUSTOMER", 30, "answered already"),
        ticket("inv-c", "COMPANY", 1, "done"),
    ]

    body = review_body(tickets, now=NOW)

    assert body.splitlines()[0] == "2 threads await an answer:"
    assert rows(body) == [["inv\\-b", "still waiting", "10 days"], ["inv\\-a", "first", "3 days"]]


def test_only_the_given_invoices_from_ids_or_ticket_dicts() -> None:
    tickets = [ticket("inv-a", "CUSTOMER", 3), ticket("inv-b", "CUSTOMER", 8.5)]

    assert [r[0] for r in rows(review_body(tickets, ["inv-b"], now=NOW))] == ["inv\\-b"]
    assert [r[2] for r in rows(review_body(tickets, [tickets[1]], now=NOW))] == ["8 days 12 hours"]
    assert review_body(tickets, [], now=NOW) == "No thread awaits an answer."
    assert review_body([], now=NOW) == "No thread awaits an answer."


def test_member_text_cannot_break_the_table_or_inject_markup() -> None:
    hostile = "a | b\n\n# Heading <img src=x onerror=alert(1)> [click](http://evil) *bold* `code` \\"
    (row,) = rows(review_body([ticket("inv-a", "CUSTOMER", 2, hostile)], now=NOW))

    message = row[1]
    assert "\n" not in message
    assert "<" not in message
    assert "\\|" in message
    assert "\\[click\\]\\(http://evil\\)" in message
    assert "\\*bold\\*" in message
    assert "&lt;img src=x onerror=alert\\(1\\)\\>" in message
    assert message.startswith("a \\| b \\# Heading")


def test_long_messages_are_cut_and_long_lists_counted() -> None:
    tickets = [ticket(f"inv-{n:03d}", "CUSTOMER", 10 + n, "x" * 1000) for n in range(60)]

    body = review_body(tickets, now=NOW, max_threads=5)

    assert len(rows(body)) == 5
    assert all(len(r[1]) == MESSAGE_CHARS and r[1].endswith("\u2026") for r in rows(body))
    assert body.splitlines()[-1] == "... and 55 more."


def test_bad_invoice_ids_are_refused() -> None:
    with pytest.raises(ClubCollectValidationError, match="invoice_ids"):
        review_body([], "inv-a")


@pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="human-in-the-loop operators are Airflow 3.1+")
def test_review_dag_branches_to_one_task_per_choice() -> None:
    from tests.dags.conftest import parse_dag_file

    dag = parse_dag_file(EXAMPLE_DAGS / "clubcollect_review_before_escalation.py")[
        "clubcollect_review_before_escalation"
    ]
    review = dag.get_task("review")

    assert set(review.options_mapping) == set(review.options)
    assert set(review.options_mapping.values()) == review.downstream_task_ids == {"escalate", "archive", "write_reply"}
    assert dag.get_task("select_waiting").is_dry_run
    assert dag.get_task("reply").upstream_task_ids >= {"write_reply", "select_waiting"}
    assert dag.get_task("review_body").downstream_task_ids == {"review"}
