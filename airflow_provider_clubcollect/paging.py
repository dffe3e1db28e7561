"""Reading every page of a company's ticket list, each ticket once, while it changes; no I/O (docs/hook.rst)."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.exceptions import ClubCollectServerError
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.wire import (
    MAX_PAGE_SIZE,
    check_int,
    company_tickets_page_request,
    parse_page_info,
    parse_tickets,
)

if TYPE_CHECKING:
    from airflow_provider_clubcollect.wire import ApiRequest, CompanyTicket

MAX_REWINDS = 50
# Where the tail probably is, per (company, status): the last read's total, so that a later read
# sends its first look instead of page 1.  A look that misses the tail is sent again where it is.
_LAST_TOTALS: dict[tuple[str, str], int] = {}


class CompanyTicketPager:
    """The paging state of one read of a company's tickets in one status."""

    def __init__(
        self,
        company_id: str,
        status: str,
        page_size: int = MAX_PAGE_SIZE,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        company_tickets_page_request(company_id, status, 1, page_size)  # checks them before any request is sent
        self.company_id, self.status, self.page_size = company_id, status, page_size
        self.max_concurrency = check_int(max_concurrency, "max_concurrency")
        #: Requests in flight at most: ``max_concurrency`` pages and one look at the tail.
        self.max_in_flight = self.max_concurrency + 1
        #: Pages requested but not yet handed out, at most: the read-ahead of a lazy consumer.
        self.window = 2 * self.max_concurrency
        self.last_page_read = 0
        #: The baseline: the list's size (``None`` until known) and pages as the current snapshot reports them.
        self.total_entries: int | None = None
        self.total_pages = 0
        self.rewinds = 0  # also the epoch: answers to requests sent before the last restart are dropped
        self._tail: str | None = None
        self._baseline = False  # whether a look has fixed total_entries and _tail
        self._looks = 0  # looks sent
        self._agreed = 0  # the last look that agreed with the baseline (pages answered before it are verified)
        self._answers = 0  # page answers since the last look
        self._next_out = 1
        self._sizing = True  # page 1 is being read for the total
        self._ready: dict[int, tuple[list[CompanyTicket], int]] = {}  # page -> (tickets, looks sent before)
        # Pages handed out, not yet in the verified prefix: page -> (looks sent before, ticket_ids).
        self._handed: dict[int, tuple[int, list[str]]] = {}
        self._anchored = True
        self._finished = False
        # id(request) -> (request, page or 0 for a look, epoch); the request is kept so that its id stays unique.
        self._sent: dict[int, tuple[ApiRequest, int, int]] = {}
        self._seen: set[str] = set()
        self._untrusted: set[str] = set()  # handed out from pages never verified

    @property
    def done(self) -> bool:
        """Whether every page has been handed out and verified."""
        return self._finished and not self._handed

    def next_request(self) -> ApiRequest | None:
        """The next request to send, or ``None`` when nothing is to be sent now."""
        if self.done:
            return None
        if self._sizing:
            guess = _LAST_TOTALS.get((self.company_id, self.status))
            if guess and guess > self.page_size:  # more than a page at the last read: the look sizes it
                self._sizing = False
                self._set_total(guess)
            elif 1 not in self._requested():  # page 1 first, and a look where the tail was at the last read
                return self._send(1)
            else:
                return self._send(guess, look=True) if guess and not self._looks else None
        assert self.total_entries is not None
        pages = sum(1 for _, page, _ in self._sent.values() if page)  # in flight, whatever their epoch
        looking = any(not page and epoch == self.rewinds for _, page, epoch in self._sent.values())
        if not looking and (
            not self._baseline
            or self._answers >= self.window
            or (self._answers and not pages and self._next_page() is None)
        ):
            return self._send(max(self.total_entries, 1), look=True)
        page = self._next_page()
        if page is None or not self._baseline or pages >= self.max_concurrency:
            return None
        return self._send(page)

    def _next_page(self) -> int | None:
        if self._finished:
            return None
        last, requested = min(self.total_pages, self._next_out + self.window - 1), self._requested()
        return next((p for p in range(self._next_out, last + 1) if p not in requested), None)

    def _requested(self) -> set[int]:
        return {page for _, page, epoch in self._sent.values() if epoch == self.rewinds} | set(self._ready)

    def _send(self, page: int, *, look: bool = False) -> ApiRequest:
        if look:  # one ticket, at entry ``page``
            self._looks += 1
            self._answers = 0
        request = company_tickets_page_request(self.company_id, self.status, page, 1 if look else self.page_size)
        self._sent[id(request)] = (request, 0 if look else page, self.rewinds)
        return request

    def accept(self, request: ApiRequest, payload: Any) -> None:
        """Take one answer, in any order."""
        _, page, epoch = self._sent.pop(id(request))
        if self.done or epoch != self.rewinds:
            return  # sent before the last restart, or not needed any more
        tickets = parse_tickets(request, payload, company=True)
        total = parse_page_info(request, payload)["total_entries"]
        if not page:
            self._look(int(dict(request.params)["page_number"]), total, tickets)
        elif self._sizing:  # page 1, read first
            self._sizing = False
            if total <= self.page_size:  # the whole list in one answer: that is the read
                self._set_total(total)
                self._ready[1] = (tickets, -1)  # verified by itself, as if before any look
            elif not self._baseline:  # every page is read once a look has fixed the baseline (page 1 again)
                self._set_total(total)
        elif total != self.total_entries:
            self._restart(total)
        else:
            self._answers += 1
            self._ready[page] = (tickets, self._looks)

    def _look(self, position: int, total: int, tickets: list[CompanyTicket]) -> None:
        tail = tickets[0]["ticket_id"] if tickets and position == total else None
        seen_tail = position == total or total == 0
        if self._baseline and total == self.total_entries and tail == self._tail:
            self._agreed = self._looks  # every page answered before this look was sent is verified
            # The verified prefix grows (pages are handed out in order).
            self._handed = dict(itertools.dropwhile(lambda item: item[1][0] < self._agreed, self._handed.items()))
            return
        if self._baseline or not seen_tail:
            self._restart(total)
        self._set_total(total)
        if seen_tail:  # the look saw the tail: it is the (new) baseline
            self._baseline, self._tail, self._agreed = True, tail, self._looks
            if len(_LAST_TOTALS) >= 1000:
                _LAST_TOTALS.clear()
            _LAST_TOTALS[self.company_id, self.status] = total

    def _set_total(self, total: int) -> None:
        self.total_entries, self.total_pages = total, max(math.ceil(total / self.page_size), 1)  # empty: one page
        self._next_out = min(self._next_out, self.total_pages)  # resume no further than the list's last page

    def _restart(self, total: int) -> None:
        self.rewinds += 1
        if self.rewinds > MAX_REWINDS:
            raise ClubCollectServerError(
                f"Could not read the {self.status} tickets of company {self.company_id!r}: the list "
                f"kept changing while it was read ({MAX_REWINDS} restarts). Try again later."
            )
        # Read again from the first page not verified; what it handed out may not be trusted.
        self._untrusted.update(*(ids for _, ids in self._handed.values()))
        self._next_out = min([*self._handed, self._next_out])
        self._handed.clear()
        self._ready.clear()
        self._baseline = self._finished = self._sizing = self._anchored = False  # the next request is a look
        self._set_total(total)

    def pop(self) -> list[CompanyTicket] | None:
        """The next page's tickets not handed out before, in the API's order; ``None`` until it is read."""
        if self._finished or self._next_out not in self._ready:
            return None
        tickets, looks = self._ready[self._next_out]
        if not self._anchored:
            # Resume where the page begins with a ticket handed out from a verified page: every
            # ticket before it was handed out.  Else read the page before it too.
            first = tickets[0]["ticket_id"] if tickets else None
            if self._next_out > 1 and (first not in self._seen or first in self._untrusted):
                self._next_out -= 1
                return None
            self._anchored = True
        del self._ready[self._next_out]
        self.last_page_read = self._next_out
        self._next_out += 1
        ids = [ticket["ticket_id"] for ticket in tickets]
        if looks >= self._agreed or self._handed:  # not verified, or after one that is not
            self._handed[self.last_page_read] = (looks, ids)
        fresh = {t["ticket_id"]: t for t in tickets if t["ticket_id"] not in self._seen}  # once each, in order
        self._seen.update(ids)
        if not tickets or self.last_page_read >= self.total_pages:
            self._finished = True
        return list(fresh.values())

    def progress(self) -> str:
        """A log line such as ``page 3/12, 300 of 1,180 tickets``."""
        pages = max(self.total_pages, self.last_page_read) if self.total_entries is not None else "?"
        total = f"{self.total_entries:,}" if self.total_entries is not None else "?"
        return f"page {self.last_page_read}/{pages}, {len(self._seen):,} of {total} tickets"
