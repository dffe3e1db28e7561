"""How many requests of one read or one bulk action are in flight: ``max_concurrency``, lowered by 429s.

Paging (the hook's and the triggers' reads) and the bulk actions both go through an
:class:`AdaptiveLimiter`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.wire import RawResponse, check_int

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from airflow_provider_clubcollect.transport import Outcome
    from airflow_provider_clubcollect.wire import ApiRequest

#: Requests in flight at once for paging and bulk actions.  Eight keeps a 1,000-invoice archive at 20 ms
#: latency near 2.5 s while staying far from rate limits a partner API is likely to have; raise it
#: when ClubCollect allows, lower it when you see 429s.
DEFAULT_MAX_CONCURRENCY = 8

log = logging.getLogger(__name__)


class AdaptiveLimiter:
    """
    How many requests of one read or one bulk action may be in flight, lowered by 429 answers.

    Every attempt of every request of the read or action goes through one limiter, from threads
    (:meth:`send`) or from tasks on one event loop (:meth:`asend`).  It starts at
    ``max_concurrency``.  A 429 halves the limit (not below 1), once per round: 429s of requests
    already in flight when it was lowered do not lower it again.  Then every ``limit``
    successful answers raise it by one, back up to ``max_concurrency`` (additive increase,
    multiplicative decrease, as TCP does).  The wait a 429 asks for (``Retry-After``) is the
    request back-off's business, per request.

    :param max_concurrency: the most requests in flight, at least 1.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = check_int(max_concurrency, "max_concurrency")
        self.limit = self.max_concurrency
        self.in_flight = 0
        self._round = 0
        self._successes = 0
        self._closed = False
        self._condition = threading.Condition()
        self._waiters: list[asyncio.Future[None]] = []

    def _has_room(self) -> bool:
        return self._closed or self.in_flight < self.limit

    def _start(self) -> int:
        if self._closed:
            raise ClubCollectError("The read or bulk action this request belonged to was abandoned.")
        self.in_flight += 1
        return self._round

    def _finish(self, started_in: int, outcome: Outcome | None) -> None:
        self.in_flight -= 1
        if not isinstance(outcome, RawResponse):
            return
        if outcome.status == 429:
            if started_in == self._round and self.limit > 1:
                self.limit = max(1, self.limit // 2)
                observability.gauge("limiter_window", self.limit)
                log.warning(
                    "ClubCollect answered 429 (too many requests): at most %d requests in flight now.", self.limit
                )
            self._round += 1
            self._successes = 0
        elif outcome.status < 400 and self.limit < self.max_concurrency:
            self._successes += 1
            if self._successes >= self.limit:
                self.limit += 1
                observability.gauge("limiter_window", self.limit)
                self._successes = 0

    def send(self, send: Callable[[ApiRequest], Outcome], request: ApiRequest) -> Outcome:
        """
        Send one attempt from a thread once there is room, and learn from its outcome.

        :param send: the transport's ``send``.
        :param request: what to send.
        """
        with self._condition:
            self._condition.wait_for(self._has_room)
            started_in = self._start()
        outcome = None
        try:
            outcome = send(request)
            return outcome
        finally:
            with self._condition:
                self._finish(started_in, outcome)
                self._condition.notify_all()

    async def asend(self, send: Callable[[ApiRequest], Awaitable[Outcome]], request: ApiRequest) -> Outcome:
        """
        Send one attempt from a task once there is room, and learn from its outcome.

        The tasks of one limiter share one event loop, so no lock is needed here.

        :param send: the async transport's ``send``.
        :param request: what to send.
        """
        import asyncio

        while not self._has_room():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        started_in = self._start()
        outcome = None
        try:
            outcome = await send(request)
            return outcome
        finally:
            # Also when the task is cancelled: the slot is given back.
            self._finish(started_in, outcome)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        """Refuse every attempt not yet started: the read or action was abandoned."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
