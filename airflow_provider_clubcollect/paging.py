"""Reading every page of a company's ticket list, shared by the sync hook and the async trigger.

:class:`CompanyTicketPager` does no I/O: it says which pages to read, judges each answer and
hands the tickets out page by page, oldest first, each ``ticket_id`` once.  The drivers (threads
in the hook, tasks in the trigger) only send what it asks for, at most ``max_concurrency`` at a
time, and give back the answers in whatever order they arrive.

Page 1 comes first and gives the list's size.  The other pages are then read several at a time,
but never more than :attr:`~CompanyTicketPager.window` (``2 x max_concurrency``) pages ahead of
the page being handed out, so a lazy consumer holds a bounded number of pages in memory.

The list can change while it is read, and out-of-order reads make growth as dangerous as
shrinkage: a ticket pushed from page 5 onto page 6 is skipped if page 6 was read before the
change and page 5 after.  Every answer reports ``total_entries``.  The pages that report the same
total as the read so far (the *baseline*) are taken as one consistent snapshot.  When a page
reports another total, the pager starts over from the first page not yet handed out, less enough
pages to cover the shift (``ceil(difference / page_size)``), with the new total as the baseline:
pages read for the old baseline but not yet handed out are dropped, answers to requests sent
before the restart are ignored, and tickets handed out before are dropped by ``ticket_id`` when
re-read.  Tickets present throughout the read are thus all returned, once, in the list's order.
After :data:`MAX_REWINDS` restarts the read fails.

The blind spot: the API has no cursor or version, only the total.  When tickets are both added
and removed between two reads, the total understates how far tickets moved (in the extreme, as
many added as removed leave it unchanged and nothing is noticed), and a ticket can be skipped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.exceptions import ClubCollectServerError
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY, check_concurrency
from airflow_provider_clubcollect.wire import (
    MAX_PAGE_SIZE,
    company_tickets_page_request,
    parse_page_info,
    parse_tickets,
    validate_id,
    validate_page_size,
    validate_status,
)

if TYPE_CHECKING:
    from airflow_provider_clubcollect.wire import ApiRequest, CompanyTicket, Page

#: How often the pager may start over before it gives up on a list that will not hold still.
MAX_REWINDS = 50


class CompanyTicketPager:
    """
    The paging state of one read of a company's tickets in one status.

    A driver loops until :attr:`done`: it sends every request :meth:`next_request` gives (up to
    ``max_concurrency`` in flight), passes each answer to :meth:`accept`, and hands out what
    :meth:`pop` returns, page by page::

        while not pager.done:
            while (request := pager.next_request()) is not None:
                start(request)
            request, payload = wait_for_any_answer()
            pager.accept(request, payload)
            while (tickets := pager.pop()) is not None:
                yield from tickets

    :param company_id: the company.
    :param status: ``unanswered``, ``answered`` or ``archived``.
    :param page_size: tickets per page, 1 to 100.
    :param max_concurrency: pages in flight at once, at least 1; the read-ahead window is twice that.
    """

    def __init__(
        self,
        company_id: str,
        status: str,
        page_size: int = MAX_PAGE_SIZE,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.company_id = validate_id(company_id, "company_id")
        self.status = validate_status(status)
        self.page_size = validate_page_size(page_size)
        self.max_concurrency = check_concurrency(max_concurrency)
        #: Pages requested but not yet handed out, at most: the read-ahead of a lazy consumer.
        self.window = 2 * self.max_concurrency
        #: The last page handed out.
        self.last_page_read = 0
        #: The baseline: the list's size and pages as the current snapshot reports them.
        self.total_pages: int | None = None
        self.total_entries: int | None = None
        self.rewinds = 0
        self._epoch = 0
        self._next_request = 1
        self._next_out = 1
        self._ready: dict[int, list[CompanyTicket]] = {}
        # id(request) -> (request, page, epoch); the request is kept so that its id stays unique.
        self._sent: dict[int, tuple[ApiRequest, int, int]] = {}
        self._seen: set[str] = set()
        self._done = False

    @property
    def done(self) -> bool:
        """Whether every page has been handed out."""
        return self._done

    def next_request(self) -> ApiRequest | None:
        """
        The request for the next page to read, or ``None`` when nothing is to be sent now.

        ``None`` means: wait for an answer (page 1 is read alone; the window is full), or
        :attr:`done`.
        """
        page = self._next_request
        if (
            self._done
            or page - self._next_out >= self.window
            or (self.total_pages is None and page > 1)
            or (self.total_pages is not None and page > max(self.total_pages, 1))
        ):
            return None
        request = company_tickets_page_request(self.company_id, self.status, page, self.page_size)
        self._sent[id(request)] = (request, page, self._epoch)
        self._next_request += 1
        return request

    def accept(self, request: ApiRequest, payload: Any) -> None:
        """
        Take one page's answer, in any order.

        :param request: the request :meth:`next_request` gave.
        :param payload: the decoded JSON answer.
        :raises ClubCollectServerError: when the answer is not the documented shape, or the list
            kept changing for :data:`MAX_REWINDS` restarts.
        """
        _, page, epoch = self._sent.pop(id(request))
        if self._done or epoch != self._epoch:
            return  # sent before the last restart, or not needed any more
        tickets = parse_tickets(request, payload, company=True)
        info = parse_page_info(request, payload)
        if self.total_entries is None:
            self.total_entries, self.total_pages = info["total_entries"], info["total_pages"]
        elif info["total_entries"] != self.total_entries:
            self._restart(info)
            return
        self._ready[page] = tickets

    def _restart(self, info: Page) -> None:
        assert self.total_entries is not None
        self.rewinds += 1
        if self.rewinds > MAX_REWINDS:
            raise ClubCollectServerError(
                f"Could not read the {self.status} tickets of company {self.company_id!r}: the list "
                f"kept changing while it was read ({MAX_REWINDS} restarts). Try again later."
            )
        # Tickets moved by at most the change in the total (see the module's blind spot), so
        # every ticket not yet handed out is on this page or later.
        shift = math.ceil(abs(info["total_entries"] - self.total_entries) / self.page_size)
        start = max(1, self._next_out - shift)
        self._epoch += 1
        self._ready.clear()
        self._next_request = self._next_out = start
        self.total_entries, self.total_pages = info["total_entries"], info["total_pages"]
        # Shrunk below the pages handed out: every ticket still in the list was handed out.
        self._done = start > info["total_pages"]

    def pop(self) -> list[CompanyTicket] | None:
        """
        The next page's tickets not handed out before, in the API's order; ``None`` until it is read.

        An empty page ends the read, also when the server claimed more pages.
        """
        tickets = None if self._done else self._ready.pop(self._next_out, None)
        if tickets is None:
            return None
        assert self.total_pages is not None
        self.last_page_read = self._next_out
        self._next_out += 1
        seen = self._seen
        ids = {ticket["ticket_id"] for ticket in tickets}
        if len(ids) == len(tickets) and seen.isdisjoint(ids):
            seen |= ids
            fresh = tickets  # the common case, in set operations: every ticket new, none twice in the page
        else:
            fresh = []
            for ticket in tickets:
                ticket_id = ticket["ticket_id"]
                if ticket_id not in seen:
                    seen.add(ticket_id)
                    fresh.append(ticket)
        if not tickets or self.last_page_read >= self.total_pages:
            self._done = True
        return fresh

    def progress(self) -> str:
        """A log line such as ``page 3/12, 300 of 1,180 tickets``."""
        # An empty list has 0 pages but one (empty) page was read: say "page 1/1".
        pages = max(self.total_pages, self.last_page_read) if self.total_pages is not None else "?"
        total = f"{self.total_entries:,}" if self.total_entries is not None else "?"
        return f"page {self.last_page_read}/{pages}, {len(self._seen):,} of {total} tickets"
