"""How many requests of one read or bulk action are in flight: ``max_concurrency``, lowered by 429s."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.wire import RawResponse, check_int

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_provider_clubcollect.transport import Outcome
    from airflow_provider_clubcollect.wire import ApiRequest

#: Requests in flight at once for paging and bulk actions (docs/performance.rst says why 8).
DEFAULT_MAX_CONCURRENCY = 8

log = logging.getLogger(__name__)


class AdaptiveLimiter:
    """How many calls of one read or bulk action may be in flight: :attr:`limit`, learned from every attempt's answer.

    The caller sends a call only while fewer than :attr:`limit` are in flight (docs/performance.rst: adaptive
    concurrency); a call's retries keep its place.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = self.limit = check_int(max_concurrency, "max_concurrency")
        self._round = self._successes = 0
        self._lock = threading.Lock()  # threads share it; tasks of one loop take it between awaits only

    def _learn(self, started_in: int, outcome: Outcome) -> Outcome:
        with self._lock:
            limit, status = self.limit, outcome.status if isinstance(outcome, RawResponse) else 0
            if status == 429:
                if started_in == self._round and limit > 1:
                    limit //= 2
                    log.warning(
                        "ClubCollect answered 429 (too many requests): at most %d requests in flight now.", limit
                    )
                self._round, self._successes = self._round + 1, 0
            elif 0 < status < 400 and limit < self.max_concurrency:
                self._successes += 1
                if self._successes >= limit:
                    limit, self._successes = limit + 1, 0
            if limit != self.limit:
                self.limit = limit
                observability.gauge("limiter_window", limit)
        return outcome

    def send(self, send: Callable[[ApiRequest], Outcome], request: ApiRequest) -> Outcome:
        """Send one attempt with ``send`` and learn from its outcome."""
        return self._learn(self._round, send(request))

    async def asend(self, send: Callable[[ApiRequest], Awaitable[Outcome]], request: ApiRequest) -> Outcome:
        """:meth:`send` on an event loop."""
        return self._learn(self._round, await send(request))
