"""The pager's progress line, as a person reads it in the task log."""

from __future__ import annotations

from airflow_provider_clubcollect.paging import CompanyTicketPager


def page(number: int, size: int, total: int, ids: list[str]) -> dict[str, object]:
    return {
        "tickets": [{"ticket_id": i, "invoice_id": "inv"} for i in ids],
        "page": {"page_number": number, "page_size": size, "total_entries": total, "total_pages": -(-total // size)},
    }


def test_progress_line_counts_pages_and_tickets() -> None:
    pager = CompanyTicketPager("co", "unanswered", page_size=100)
    for number in (1, 2, 3):
        request = pager.next_request()
        assert request is not None
        pager.accept(request, page(number, 100, 1180, [f"{number}-{n}" for n in range(100)]))
    assert pager.progress() == "page 3/12, 300 of 1,180 tickets"


def test_progress_line_for_an_empty_list() -> None:
    pager = CompanyTicketPager("co", "answered")
    request = pager.next_request()
    assert request is not None
    assert pager.accept(request, page(1, 100, 0, [])) == []
    assert pager.next_request() is None
    assert pager.progress() == "page 1/1, 0 of 0 tickets"
