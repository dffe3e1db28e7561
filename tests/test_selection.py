"""Thread selection at the edges of its window: *more than* ``more_than``, *at most* ``at_most``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_provider_clubcollect.selection import awaiting_answer_due, select_threads
from tests.conftest import NOW

DAY = timedelta(days=1)


def ticket(invoice_id: str, sender: str, age: timedelta) -> dict[str, Any]:
    return {
        "ticket_id": f"{invoice_id}-{age}",
        "invoice_id": invoice_id,
        "sender": sender,
        "date": (NOW - age).isoformat(),
    }


def test_a_thread_exactly_at_either_bound_is_more_than_neither_and_at_most_both() -> None:
    tickets = [
        ticket("at-least", "CUSTOMER", 2 * DAY),
        ticket("between", "CUSTOMER", 3 * DAY),
        ticket("at-most", "CUSTOMER", 4 * DAY),
        ticket("answered", "CUSTOMER", 9 * DAY),
        ticket("answered", "COMPANY", 3 * DAY),
    ]

    assert select_threads(tickets, 2 * DAY, NOW, 4 * DAY, unanswered=True) == ["at-most", "between"]
    assert select_threads(tickets, 2 * DAY, NOW, 4 * DAY) == ["answered", "at-most", "between"]
    assert select_threads(tickets, None, NOW, 2 * DAY, unanswered=True) == ["at-least"]


def test_a_ticket_is_due_once_its_thread_has_waited_long_enough_in_order_of_due_then_date() -> None:
    a5, b6, b4, c2 = (
        ticket("inv-a", "CUSTOMER", 5 * DAY),
        ticket("inv-b", "CUSTOMER", 6 * DAY),
        ticket("inv-b", "CUSTOMER", 4 * DAY),
        ticket("inv-c", "CUSTOMER", 2 * DAY),
    )

    due = awaiting_answer_due([a5, b6, b4, c2], 2 * DAY, NOW)

    assert [(moment, t["ticket_id"]) for moment, t in due] == [
        (NOW - 4 * DAY, b6["ticket_id"]),
        (NOW - 4 * DAY, b4["ticket_id"]),
        (NOW - 3 * DAY, a5["ticket_id"]),
    ], "inv-c has waited exactly 2 days: not more"
    assert [t for _, t in awaiting_answer_due([a5, b6, b4, c2], None, NOW)] == [b6, a5, b4, c2]
