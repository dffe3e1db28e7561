"""How many requests of one read or bulk action are in flight: ``max_concurrency``, lowered by 429s."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.wire import RawResponse, check_int

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_provider_clubcollect.transport import Outcome
    from airflow_provider_clubcollect.wire import ApiRequest

#: Requests in flight at once for paging and bulk actions (docs/performance.rst says why 8).
DEFAULT_MAX_CONCURRENCY = 8

log = logging.getLogger(__name__)


class AdaptiveLimiter:
    """How many requests of one read or bulk action may be in flight (docs/performance.rst: adaptive concurrency)."""

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = self.limit = check_int(max_concurrency, "max_concurrency")
        self.in_flight = self._round = self._successes = 0
        self._closed = False
        self._condition = threading.Condition()
        self._room = asyncio.Event()  # for tasks, which share one event loop

    def _has_room(self) -> bool:
        return self._closed or self.in_flight < self.limit

    def _start(self) -> int:
        if self._closed:
            raise ClubCollectError("The read or bulk action this request belonged to was abandoned.")
        self.in_flight += 1
        return self._round

    def _finish(self, started_in: int, outcome: Outcome | None) -> None:
        self.in_flight -= 1
        limit, status = self.limit, outcome.status if isinstance(outcome, RawResponse) else 0
        if status == 429:
            if started_in == self._round and limit > 1:
                limit //= 2
                log.warning("ClubCollect answered 429 (too many requests): at most %d requests in flight now.", limit)
            self._round, self._successes = self._round + 1, 0
        elif 0 < status < 400 and limit < self.max_concurrency:
            self._successes += 1
            if self._successes >= limit:
                limit, self._successes = limit + 1, 0
        if limit != self.limit:
            self.limit = limit
            observability.gauge("limiter_window", limit)

    def send(self, send: Callable[[ApiRequest], Outcome], request: ApiRequest) -> Outcome:
        """Send one attempt with ``send`` from a thread once there is room, and learn from its outcome."""
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
        """:meth:`send` from a task; the tasks of one limiter share one event loop, so no lock."""
        while not self._has_room():
            self._room.clear()
            await self._room.wait()
        started_in = self._start()
        outcome = None
        try:
            outcome = await send(request)
            return outcome
        finally:  # also when the task is cancelled: the slot is given back
            self._finish(started_in, outcome)
            self._room.set()

    def close(self) -> None:
        """Refuse every attempt not yet started: the read or action was abandoned."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
