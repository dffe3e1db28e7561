"""The pager on its own (no I/O): its progress line, its read-ahead window, and restarts when
the list changes between reads that arrive out of order.  The same cases over HTTP, sync and
async, are in tests/hooks/test_clubcollect_paging.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import ClubCollectServerError
from airflow_provider_clubcollect.paging import MAX_REWINDS, CompanyTicketPager

if TYPE_CHECKING:
    from airflow_provider_clubcollect.wire import ApiRequest


def page(number: int, size: int, total: int, ids: list[str]) -> dict[str, object]:
    return {
        "tickets": [{"ticket_id": i, "invoice_id": "inv"} for i in ids],
        "page": {"page_number": number, "page_size": size, "total_entries": total, "total_pages": -(-total // size)},
    }


def number_of(request: ApiRequest) -> int:
    return int(dict(request.params)["page_number"])


def answer(request: ApiRequest, listing: list[str], size: int) -> dict[str, object]:
    """The page ``request`` asks for, cut from ``listing`` as it is now."""
    n = number_of(request)
    return page(n, size, len(listing), listing[(n - 1) * size : n * size])


def requests_now(pager: CompanyTicketPager) -> list[ApiRequest]:
    sent = []
    while (request := pager.next_request()) is not None:
        sent.append(request)
    return sent


def handed_out(pager: CompanyTicketPager) -> list[str]:
    out: list[str] = []
    while (tickets := pager.pop()) is not None:
        out += [t["ticket_id"] for t in tickets]
    return out


def test_progress_line_counts_pages_and_tickets() -> None:
    pager = CompanyTicketPager("co", "unanswered", page_size=100, max_concurrency=1)
    for number in (1, 2, 3):
        request = pager.next_request()
        assert request is not None
        pager.accept(request, page(number, 100, 1180, [f"{number}-{n}" for n in range(100)]))
        assert len(handed_out(pager)) == 100
    assert pager.progress() == "page 3/12, 300 of 1,180 tickets"


def test_progress_line_for_an_empty_list() -> None:
    pager = CompanyTicketPager("co", "answered")
    (request,) = requests_now(pager)
    pager.accept(request, page(1, 100, 0, []))
    assert pager.pop() == []
    assert pager.done
    assert pager.next_request() is None
    assert pager.progress() == "page 1/1, 0 of 0 tickets"


def test_page_one_alone_then_never_more_than_the_window_ahead() -> None:
    listing = [f"t{n:03d}" for n in range(100)]
    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    assert pager.window == 6
    (first,) = requests_now(pager)
    assert number_of(first) == 1, "page 1 alone: it gives the total"
    pager.accept(first, answer(first, listing, 5))
    assert handed_out(pager) == listing[:5]

    # Page 2 hangs; every other answer arrives at once.
    sent = requests_now(pager)
    assert [number_of(r) for r in sent] == [2, 3, 4, 5, 6, 7], "at most the window ahead of page 1"
    for request in sent[1:]:
        pager.accept(request, answer(request, listing, 5))
    assert handed_out(pager) == [], "page 3 waits for page 2"
    assert requests_now(pager) == [], "nothing more while page 2 is missing"

    pager.accept(sent[0], answer(sent[0], listing, 5))
    assert handed_out(pager) == listing[5:35]
    assert [number_of(r) for r in requests_now(pager)] == [8, 9, 10, 11, 12, 13]


def run(pager: CompanyTicketPager, listing: list[str], size: int, change: Any) -> list[str]:
    """Drive a pager to the end, answering the newest request first (out of order), calling
    ``change(listing, answered)`` before each answer is cut."""
    out: list[str] = []
    pending: list[ApiRequest] = []
    answered = 0
    while not pager.done:
        pending += requests_now(pager)
        request = pending.pop()
        change(listing, answered)
        answered += 1
        pager.accept(request, answer(request, listing, size))
        out += handed_out(pager)
    return out


def test_growth_before_pages_read_out_of_order_is_not_skipped() -> None:
    listing = [f"t{n:03d}" for n in range(50)]
    original = list(listing)

    def grow(current: list[str], answered: int) -> None:
        if answered == 3:  # after page 7 was cut, before page 6: old threads join at the front
            current[0:0] = ["new-a", "new-b", "new-c"]

    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    out = run(pager, listing, 5, grow)

    assert pager.rewinds == 1
    assert len(out) == len(set(out)), "a ticket was handed out twice"
    assert [t for t in out if t in original] == original, "a ticket was skipped, or out of order"


def test_shrink_before_the_current_page_is_not_skipped() -> None:
    listing = [f"t{n:03d}" for n in range(50)]
    original = list(listing)

    def shrink(current: list[str], answered: int) -> None:
        if answered in (2, 5):
            del current[1:4]

    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    out = run(pager, listing, 5, shrink)

    assert pager.rewinds == 2
    removed = set(original) - set(listing)
    assert len(out) == len(set(out))
    assert [t for t in out if t not in removed] == listing


def test_a_list_that_never_holds_still_fails_clearly() -> None:
    listing = [f"t{n:03d}" for n in range(50)]

    def grow(current: list[str], answered: int) -> None:
        current.append(f"late-{answered}")

    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    with pytest.raises(ClubCollectServerError, match=rf"kept changing while it was read \({MAX_REWINDS} restarts\)"):
        run(pager, listing, 5, grow)


def test_bad_max_concurrency_is_refused() -> None:
    from airflow_provider_clubcollect.exceptions import ClubCollectValidationError

    for bad in (0, -1, 1.5, True, "8", None):
        with pytest.raises(
            ClubCollectValidationError, match=rf"max_concurrency must be an integer of at least 1, got {bad!r}"
        ):
            CompanyTicketPager("co", "unanswered", max_concurrency=bad)  # type: ignore[arg-type]
