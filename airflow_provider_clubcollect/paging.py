"""Reading every page of a company's ticket list, shared by the sync hook and the async trigger.

:class:`CompanyTicketPager` does no I/O: it says which page to read next and takes each page's
answer, returning the tickets not seen before.  The list is sorted oldest first and can change
while it is read.  When it shrinks (a thread left the status), later tickets move onto pages
already read and paging by number would skip them, so the pager steps back and reads those pages
again; tickets seen twice are dropped by ``ticket_id``.  Each ticket is thus returned once, in the
API's order, oldest first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.exceptions import ClubCollectServerError
from airflow_provider_clubcollect.wire import (
    FIELD_TICKET_ID,
    MAX_PAGE_SIZE,
    company_tickets_page_request,
    parse_page_info,
    parse_tickets,
    validate_id,
    validate_page_size,
    validate_status,
)

if TYPE_CHECKING:
    from airflow_provider_clubcollect.wire import (
        ApiRequest,
    )

#: How often the pager may step back before it gives up on a list that will not hold still.
MAX_REWINDS = 50


class CompanyTicketPager:
    """
    The paging state of one read of a company's tickets in one status.

    Use it as: ``while (request := pager.next_request()) is not None: tickets = pager.accept(request, send(request))``.

    :param company_id: the company.
    :param status: ``unanswered``, ``answered`` or ``archived``.
    :param page_size: tickets per page, 1 to 100.
    """

    def __init__(self, company_id: str, status: str, page_size: int = MAX_PAGE_SIZE) -> None:
        self.company_id = validate_id(company_id, "company_id")
        self.status = validate_status(status)
        self.page_size = validate_page_size(page_size)
        self.page_number = 1
        self.last_page_read = 0
        self.total_pages: int | None = None
        self.total_entries: int | None = None
        self.rewinds = 0
        self._seen: set[str] = set()
        self._done = False

    def next_request(self) -> ApiRequest | None:
        """The request for the next page, or ``None`` when every page has been read."""
        if self._done:
            return None
        return company_tickets_page_request(self.company_id, self.status, self.page_number, self.page_size)

    def accept(self, request: ApiRequest, payload: Any) -> list[dict[str, Any]]:
        """
        Take one page's answer.

        :param request: the request :meth:`next_request` gave.
        :param payload: the decoded JSON answer.
        :return: the tickets of that page not returned before, in the API's order.
        :raises ClubCollectServerError: when the answer is not the documented shape, or the list
            kept shrinking for :data:`MAX_REWINDS` steps back.
        """
        tickets = parse_tickets(request, payload, company=True)
        info = parse_page_info(request, payload)
        self.last_page_read = self.page_number
        previous_total = self.total_entries
        self.total_entries = info.total_entries
        self.total_pages = info.total_pages
        if previous_total is not None and info.total_entries < previous_total and self.page_number > 1:
            # The list shrank since the last page: tickets we have not seen may now sit on pages
            # already read.  Step back far enough to cover the shift, and read forward again.
            self.rewinds += 1
            if self.rewinds > MAX_REWINDS:
                raise ClubCollectServerError(
                    f"Could not read the {self.status} tickets of company {self.company_id!r}: the list "
                    f"kept shrinking while it was read ({MAX_REWINDS} steps back). Try again later."
                )
            back = math.ceil((previous_total - info.total_entries) / self.page_size)
            self.page_number = max(1, self.page_number - back)
            return []
        fresh = []
        for ticket in tickets:
            ticket_id = ticket[FIELD_TICKET_ID]
            if ticket_id not in self._seen:
                self._seen.add(ticket_id)
                fresh.append(ticket)
        if not tickets or self.page_number >= info.total_pages:
            self._done = True
        else:
            self.page_number += 1
        return fresh

    def progress(self) -> str:
        """A log line such as ``page 3/12, 300 of 1,180 tickets``."""
        # An empty list has 0 pages but one (empty) page was read: say "page 1/1".
        pages = max(self.total_pages, self.last_page_read) if self.total_pages is not None else "?"
        total = f"{self.total_entries:,}" if self.total_entries is not None else "?"
        return f"page {self.last_page_read}/{pages}, {len(self._seen):,} of {total} tickets"
