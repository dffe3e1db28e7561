"""The request budget: one cap on the requests made with an API key, per process or shared in Redis (docs/scale.rst)."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import importlib.util
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, shown
from airflow_provider_clubcollect.get_provider_info import DISTRIBUTION_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.connection import ClientSettings

__all__ = ["RequestBudget", "budget_for"]

log = logging.getLogger(__name__)

INSTALL_BUDGET_EXTRA = f"pip install '{DISTRIBUTION_NAME}[budget]'"
#: Seconds a process keeps the cap alone after the store failed, before it asks the store again.
STORE_RETRY_SECONDS = 30.0
#: Threads that ask the store for coroutines: a hanging store holds these, never the event loop's default executor.
STORE_THREADS = 4


def check_budget_url(value: Any, conn_id: str, max_requests_per_second: float | None) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    where = f"Connection {conn_id!r}: extra 'budget_url'"
    url = value.strip() if isinstance(value, str) else None
    parts = urlsplit(url or "")
    try:  # urlsplit refuses a port past 65535 or not a number
        ok = parts.scheme in ("redis", "rediss") and parts.hostname and parts.port != 0
    except ValueError:
        ok = False
    if not ok:
        raise ClubCollectValidationError(
            f"{where} must be a Redis URL such as redis://redis.internal:6379/0 or "
            f"rediss://:PASSWORD@redis.internal:6380/0 (scheme redis or rediss, a host, a port from 1 to "
            f"65535), got {shown(shown_budget_url(url) if url else value)}."
        )
    if max_requests_per_second is None:
        raise ClubCollectValidationError(
            f"{where} is set but 'max_requests_per_second' is not: set the requests per second "
            "the processes sharing the budget may send together, or leave the budget URL out."
        )
    missing = [name for name in ("limits", "redis") if importlib.util.find_spec(name) is None]
    if missing:
        raise ClubCollectValidationError(
            f"Connection {conn_id!r} sets 'budget_url', which needs {' and '.join(missing)}: install the "
            f"provider's 'budget' extra ({INSTALL_BUDGET_EXTRA}) where tasks and the triggerer run, "
            "or leave 'budget_url' out to keep the cap per process."
        )
    return url


def shown_budget_url(url: str | None) -> str | None:
    """A budget URL as logs, errors and reprs show it: its user and password replaced by ``***``."""
    if not url or "@" not in (netloc := urlsplit(url).netloc):
        return url
    return urlsplit(url)._replace(netloc=f"***@{netloc.rpartition('@')[2]}").geturl()


class RequestBudget:
    """The turns one API key's requests take: the per-process cap, or a share of a budget in Redis (:func:`budget_for`).

    :param max_requests_per_second: the cap; ``None`` for none (every turn is free).
    :param digest: names the key (its SHA-256), never the key itself.
    :param budget_url: a Redis URL to share the budget through; ``None`` keeps it per process.
    :param clock: a monotonic clock; ``sleep``: how :meth:`acquire` waits (both faked in tests).
    """

    def __init__(
        self,
        max_requests_per_second: float | None,
        *,
        digest: str = "",
        budget_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_requests_per_second = rate = max_requests_per_second
        self.digest = digest
        self.budget_url = budget_url
        #: Whether processes share this budget through a store (when it is up).
        self.shared = rate is not None and budget_url is not None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # when the turn after the last one reserved is due, saving none
        self._store_down_until: float | None = None  # while the clock is before it, the bucket serves
        self._store: tuple[Any, Any] | None = None
        # The store's pace: ``amount`` requests in each slot of ``seconds`` (about 0.1 s).
        self._amount, self._seconds = store_slot(rate) if rate else (1, 1.0)

    def acquire(self) -> float:
        """Wait, blocking the thread, until a request may go; return the seconds waited (never raises)."""
        waited, again = 0.0, True
        while again:
            wait, again = self._turn()
            if wait > 0:
                self._sleep(wait)
                waited += wait
        return waited

    async def aacquire(self) -> float:
        """:meth:`acquire` on an event loop, never blocking it (the store is asked from :data:`STORE_THREADS`)."""
        waited, again = 0.0, True
        while again:
            if self.shared:
                turn = contextvars.copy_context().run  # as asyncio.to_thread: the trigger's log context
                wait, again = await asyncio.get_running_loop().run_in_executor(_store_threads, turn, self._turn)
            else:
                wait, again = self._turn()
            if wait > 0:
                await asyncio.sleep(wait)
                waited += wait
        return waited

    def _turn(self) -> tuple[float, bool]:
        """The seconds to wait, and whether to ask again after: the store's slots, else this process's bucket."""
        if self.shared and (self._store_down_until is None or self._clock() >= self._store_down_until):
            try:
                limiter, item = self._limiter()
                slot = math.floor(time.time() / self._seconds)  # on the clock every process shares
                taken = limiter.hit(item, self.digest, str(slot))
            except Exception as error:  # whatever Redis raises, the DAG goes on (warned once per store and process)
                self._store_down_until = self._clock() + STORE_RETRY_SECONDS
                url, reason = self.budget_url or "", f"{type(error).__name__}: {error}"
                if password := urlsplit(url).password:
                    reason = reason.replace(password, "***")
                with _lock:
                    first = url not in _warned_stores
                    _warned_stores.add(url)
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "ClubCollect request budget: the budget store %s cannot be reached (%s). This process keeps "
                    "max_requests_per_second=%g on its own meanwhile (the deployment may then send more in all) and "
                    "asks the store again every %g s; nothing fails because of it.",
                    shown_budget_url(url),
                    reason,
                    self.max_requests_per_second,
                    STORE_RETRY_SECONDS,
                )
            else:
                if self._store_down_until is not None:
                    self._store_down_until = None
                    log.info(
                        "ClubCollect request budget: the budget store %s answers again; requests share it again.",
                        shown_budget_url(self.budget_url),
                    )
                # Jitter, so that waiting processes do not all ask at once when the next slot starts.
                wait = (slot + 1) * self._seconds - time.time() + random.uniform(0.0, 0.05 * self._seconds)
                return (0.0, False) if taken else (max(wait, 0.001), True)
        if self.max_requests_per_second is None:
            return 0.0, False
        interval, burst = 1.0 / self.max_requests_per_second, max(1, math.floor(self.max_requests_per_second))
        with self._lock:  # callers sleep outside it, served in the order they asked; ``burst`` saved turns go at once
            now = self._clock()
            due = now if self._next is None else max(self._next, now)
            self._next = due + interval
            return max(0.0, due - (burst - 1) * interval - now), False

    def _limiter(self) -> tuple[Any, Any]:  # a fixed-window limiter on Redis through ``limits``
        with self._lock:  # one store, also when threads ask at once
            if self._store is None:
                from limits import RateLimitItemPerSecond
                from limits.storage import RedisStorage
                from limits.strategies import FixedWindowRateLimiter

                # Short timeouts: a store that hangs must not hold a request long before the fallback.
                storage = RedisStorage(
                    str(self.budget_url),
                    key_prefix="clubcollect",
                    socket_connect_timeout=2.0,
                    socket_timeout=2.0,
                    wrap_exceptions=True,
                )
                # A fixed window per slot (the slot's number is part of its key), kept a little longer than the slot.
                item = RateLimitItemPerSecond(self._amount, math.ceil(self._seconds), namespace="budget")
                self._store = FixedWindowRateLimiter(storage), item
            return self._store


def store_slot(rate: float) -> tuple[int, float]:
    amount = max(1, math.floor(rate * 0.1))
    return amount, amount / rate


#: A budget that caps nothing, for connections without ``max_requests_per_second``.
NO_BUDGET = RequestBudget(None)

_budgets: dict[tuple[str, float, str | None], RequestBudget] = {}
_warned_stores: set[str] = set()
_lock = threading.Lock()
_store_threads = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="clubcollect-budget")


def budget_for(settings: ClientSettings) -> RequestBudget:
    """The budget every hook, trigger and bulk action of this process with a key shares (:data:`NO_BUDGET`: no cap).

    :param settings: the checked connection settings; one budget per key digest, rate and budget URL.
    """
    rate = settings.max_requests_per_second
    if rate is None:
        return NO_BUDGET
    key = (hashlib.sha256(settings.api_key.encode("utf-8")).hexdigest(), rate, settings.budget_url)
    with _lock:
        if key not in _budgets:
            _budgets[key] = RequestBudget(rate, digest=key[0], budget_url=settings.budget_url)
        return _budgets[key]


def forget_budgets() -> None:
    """Forget the budgets and warnings: in tests, and in a forked child (whose parent's lock and threads are gone)."""
    global _lock, _store_threads
    _lock = threading.Lock()
    _store_threads = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="clubcollect-budget")
    _budgets.clear()
    _warned_stores.clear()


os.register_at_fork(after_in_child=forget_budgets)
