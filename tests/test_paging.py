"""The pager on its own (no I/O): its progress line, its read-ahead window, and restarts when
the list changes between reads that arrive out of order.  The same cases over HTTP, sync and
async, are in tests/hooks/test_clubcollect_paging.py."""

from __future__ import annotations

import math
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


def answer(request: ApiRequest, listing: list[str]) -> dict[str, object]:
    """What ``request`` asks for (a page, or a one-ticket look at the tail), cut from ``listing`` as it is now."""
    n, size = number_of(request), int(dict(request.params)["page_size"])
    return page(n, size, len(listing), listing[(n - 1) * size : n * size])


def is_look(request: ApiRequest) -> bool:
    return dict(request.params)["page_size"] == "1"


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


def run(pager: CompanyTicketPager, listing: list[str], change: Any = None) -> list[str]:
    """Drive a pager to the end, answering the newest request first (out of order), calling
    ``change(listing, answered)`` before each answer is cut."""
    out: list[str] = []
    pending: list[ApiRequest] = []
    answered = 0
    while not pager.done:
        pending += requests_now(pager)
        request = pending.pop()
        if change is not None:
            change(listing, answered)
        answered += 1
        pager.accept(request, answer(request, listing))
        out += handed_out(pager)
    return out


def test_progress_line_counts_pages_and_tickets() -> None:
    pager = CompanyTicketPager("co", "unanswered", page_size=100, max_concurrency=1)
    listing = [f"t{n}" for n in range(1180)]
    assert pager.progress() == "page 0/?, 0 of ? tickets"
    assert run(pager, listing) == listing
    assert pager.progress() == "page 12/12, 1,180 of 1,180 tickets"


def test_progress_line_for_an_empty_list() -> None:
    pager = CompanyTicketPager("co", "answered")
    (request,) = requests_now(pager)
    pager.accept(request, page(1, 100, 0, []))
    assert pager.pop() == []
    assert pager.done
    assert pager.next_request() is None
    assert pager.progress() == "page 1/1, 0 of 0 tickets"


def test_one_page_is_one_request() -> None:
    listing = [f"t{n}" for n in range(100)]
    pager = CompanyTicketPager("co", "unanswered", page_size=100)
    (request,) = requests_now(pager)
    pager.accept(request, answer(request, listing))
    assert handed_out(pager) == listing
    assert pager.done


def test_page_one_then_a_look_then_never_more_than_the_window_ahead() -> None:
    listing = [f"t{n:03d}" for n in range(100)]
    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    assert pager.window == 6
    (first,) = requests_now(pager)
    assert number_of(first) == 1, "page 1 alone: it gives the total"
    pager.accept(first, answer(first, listing))
    assert handed_out(pager) == [], "page 1 is read again once the tail is known"
    (look,) = requests_now(pager)
    assert (is_look(look), number_of(look)) == (True, 100), "then the tail alone: the baseline"
    pager.accept(look, answer(look, listing))

    # Page 1 hangs; every other answer arrives at once.
    sent = requests_now(pager)
    assert [number_of(r) for r in sent] == [1, 2, 3], "max_concurrency pages in flight"
    hanging, answered = sent[0], []
    while more := [r for r in sent[1:] if r not in answered]:
        for request in more:
            pager.accept(request, answer(request, listing))
            answered.append(request)
        assert handed_out(pager) == [], "page 2 waits for page 1"
        sent = [hanging, *answered, *requests_now(pager)]
    assert [number_of(r) for r in answered] == [2, 3, 4, 5, 6], "never more than the window ahead of page 1"

    pager.accept(hanging, answer(hanging, listing))
    assert handed_out(pager) == listing[:30]
    assert [number_of(r) for r in requests_now(pager) if not is_look(r)] == [7, 8, 9]


def test_growth_before_pages_read_out_of_order_is_not_skipped() -> None:
    listing = [f"t{n:03d}" for n in range(50)]
    original = list(listing)

    def grow(current: list[str], answered: int) -> None:
        if answered == 3:  # after page 7 was cut, before page 6: old threads join at the front
            current[0:0] = ["new-a", "new-b", "new-c"]

    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    out = run(pager, listing, grow)

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
    out = run(pager, listing, shrink)

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
        run(pager, listing, grow)


def test_bad_max_concurrency_is_refused() -> None:
    from airflow_provider_clubcollect.exceptions import ClubCollectValidationError

    for bad in (0, -1, 1.5, True, "8", None):
        with pytest.raises(
            ClubCollectValidationError, match=rf"max_concurrency must be an integer of at least 1, got {bad!r}"
        ):
            CompanyTicketPager("co", "unanswered", max_concurrency=bad)  # type: ignore[arg-type]


def test_the_issue_25_case_total_unchanged() -> None:
    """1,000 one-ticket threads at C=8; at the 8th page request the 120 oldest leave and 120 new
    join at the end, so the total stays 1,000: no ticket present throughout is skipped."""
    listing = [f"t{n:04d}" for n in range(1000)]
    original = list(listing)
    pages = 0

    def change(current: list[str], answered: int) -> None:
        nonlocal pages
        pages += 1
        if pages == 8:
            del current[:120]
            current += [f"new{n:03d}" for n in range(120)]

    pager = CompanyTicketPager("co", "unanswered", page_size=100, max_concurrency=8)
    out = run(pager, listing, change)

    assert len(out) == len(set(out))
    assert [t for t in out if t in original[120:]] == original[120:]
    assert pager.rewinds == 1


@pytest.mark.parametrize("seed", range(1000))
def test_property_every_ticket_present_throughout_comes_once(seed: int) -> None:
    """Random changes at random moments of a read answered in random order: threads leave
    anywhere, join at the end, and come back at their old places with a new ticket at the end;
    with the total unchanged or not.  Every ticket present throughout comes exactly once."""
    import random

    rng = random.Random(seed)
    size, concurrency = rng.choice([(5, 3), (10, 4), (7, 1), (10, 8)])
    keys = list(range(0, 10 * rng.randint(20, 120), 10))
    listing = [f"t{k:06d}" for k in keys]
    original, gone, touched = list(listing), [], set()
    newest = keys[-1]
    moments = {rng.randrange(60): rng.choice(["leave", "join", "back", "swap", "swap-back"]) for _ in range(3)}

    def change(current: list[str], answered: int) -> None:
        nonlocal newest
        kind = moments.get(answered)
        if kind is None or not current:
            return
        count = rng.randint(1, 2 * size)
        if kind in ("leave", "swap", "swap-back"):
            for ticket in rng.sample(current, min(count, len(current))):
                current.remove(ticket)
                gone.append(ticket)
                touched.add(ticket)
        if kind in ("back", "swap-back") and gone:
            for ticket in rng.sample(gone, min(count, len(gone))):
                gone.remove(ticket)
                current.append(ticket)
                newest += 1
                current.append(f"t{newest:06d}")  # a thread comes back with a new ticket at the end
            current.sort()
        if kind in ("join", "swap"):
            for _ in range(count):
                newest += 1
                current.append(f"t{newest:06d}")

    from airflow_provider_clubcollect.paging import _LAST_TOTALS

    if rng.random() < 0.5:  # a total from an earlier read: right, or not
        _LAST_TOTALS["co", "unanswered"] = rng.choice([len(listing), rng.randint(1, 2 * len(listing))])
    pager = CompanyTicketPager("co", "unanswered", page_size=size, max_concurrency=concurrency)
    out = []
    pending: list[ApiRequest] = []
    answered = 0
    while not pager.done:
        pending += requests_now(pager)
        request = pending.pop(rng.randrange(len(pending)))
        change(listing, answered)
        answered += 1
        pager.accept(request, answer(request, listing))
        out += handed_out(pager)

    assert len(out) == len(set(out)), "a ticket was handed out twice"
    throughout = [t for t in original if t not in touched]
    assert sorted(set(throughout) - set(out)) == [], "a ticket present throughout was skipped"


def test_a_later_read_of_the_list_starts_with_a_look_where_the_tail_was() -> None:
    listing = [f"t{n:03d}" for n in range(100)]
    assert run(CompanyTicketPager("co", "unanswered", page_size=5), listing) == listing

    pager = CompanyTicketPager("co", "unanswered", page_size=5)
    first = requests_now(pager)
    assert [(number_of(r), is_look(r)) for r in first] == [(100, True)], "no page 1 to size a list known to be long"
    for request in first:
        pager.accept(request, answer(request, listing))
    assert run(pager, listing) == listing


def rounds_of_a_still_read(pager: CompanyTicketPager, listing: list[str]) -> tuple[int, int]:
    """Drive a pager in lock step, as on a network where every request takes one round trip:
    each round sends everything the pager allows, then every answer of the round arrives (the
    requests the answers free go out in the next round).  Returns (round trips, requests)."""
    rounds = requests = 0
    in_flight = requests_now(pager)
    out: list[str] = []
    while in_flight:
        rounds += 1
        requests += len(in_flight)
        assert len(in_flight) <= pager.max_in_flight
        arriving, in_flight = in_flight, []
        for request in arriving:
            pager.accept(request, answer(request, listing))
            out += handed_out(pager)
            in_flight += requests_now(pager)
    assert pager.done
    assert out == listing
    return rounds, requests


@pytest.mark.parametrize(("pages", "concurrency"), [(100, 8), (37, 4), (2, 8)])
def test_a_still_list_costs_one_round_trip_beyond_the_bound(pages: int, concurrency: int) -> None:
    # make bench figure a: the bound is (1 + ceil((pages - 1) / C)) round trips (page 1, then the
    # rest at C).  A later read (the tail known) sends the baseline look, then pages 1..N at C
    # with the looks beside them, and one final look: 1 + ceil(pages / C) + 1.
    listing = [f"t{n:05d}" for n in range(pages * 10)]
    first = rounds_of_a_still_read(
        CompanyTicketPager("co", "unanswered", page_size=10, max_concurrency=concurrency), listing
    )
    later = rounds_of_a_still_read(
        CompanyTicketPager("co", "unanswered", page_size=10, max_concurrency=concurrency), listing
    )
    looks = 1 + pages // (2 * concurrency) + 1  # the baseline, one per window of answers, the final one
    assert later[0] == 1 + math.ceil(pages / concurrency) + 1
    assert first[0] == later[0] + 1, "the first read finds the tail after page 1"
    assert later[1] == pages + looks, "a later read does not size the list with page 1: the look does"
    assert first[1] == later[1] + 1


def test_page_one_read_before_the_baseline_is_read_again() -> None:
    """Why a first read sends page 1 twice (the sandbox log shows it: page 1, the look, pages 1..N,
    the look): two tickets of page 1 leave and two join at the end between page 1's answer and the
    baseline look, so the total holds; a page 1 kept from before the look would skip the two
    tickets that moved into it."""
    listing = [f"t{n:03d}" for n in range(15)]
    original = list(listing)
    sent: list[tuple[int, bool]] = []

    def change(current: list[str], answered: int) -> None:
        if answered == 1:  # page 1 is answered; the look is not yet
            del current[1:3]
            current += ["new1", "new2"]

    pager = CompanyTicketPager("co", "unanswered", page_size=5, max_concurrency=3)
    real_next = pager.next_request

    def recording_next() -> ApiRequest | None:
        request = real_next()
        if request is not None:
            sent.append((number_of(request), is_look(request)))
        return request

    pager.next_request = recording_next  # type: ignore[method-assign]
    out = run(pager, listing, change)

    throughout = [t for t in original if t not in ("t001", "t002")]
    assert [t for t in out if t in throughout] == throughout, "a ticket present throughout was skipped"
    assert sent[:2] == [(1, False), (15, True)]
    assert sorted(n for n, look in sent[2:] if not look) == [1, 2, 3], "page 1 again, after the baseline"
