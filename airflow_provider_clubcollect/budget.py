"""The request budget: one cap on the requests made with an API key, per process or shared in Redis (docs/scale.rst)."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import importlib.util
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, shown

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.connection import ClientSettings

__all__ = ["RequestBudget", "budget_for"]

log = logging.getLogger(__name__)

#: Seconds a process keeps the cap alone after the store failed, before it asks the store again.
STORE_RETRY_SECONDS = 30.0
#: Threads that ask the store for coroutines: a hanging store holds these, never the event loop's default executor.
STORE_THREADS = 4


def check_budget_url(value: Any, conn_id: str, max_requests_per_second: float | None) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    where = f"Connection {conn_id!r}: extra 'budget_url'"
    url = value.strip() if isinstance(value, str) else ""
    try:  # urlsplit refuses a port past 65535 or not a number
        ok = (parts := urlsplit(url)).scheme in ("redis", "rediss") and parts.hostname and parts.port != 0
    except ValueError:
        ok = False
    if not ok:
        raise ClubCollectValidationError(
            f"{where} must be a Redis URL such as redis://redis.internal:6379/0 or "
            f"rediss://:PASSWORD@redis.internal:6380/0 (scheme redis or rediss, a host, a port from 1 to "
            f"65535), got {shown(shown_budget_url(url) or value)}."
        )
    if max_requests_per_second is None:
        raise ClubCollectValidationError(
            f"{where} is set but 'max_requests_per_second' is not: set the requests per second "
            "the processes sharing the budget may send together, or leave the budget URL out."
        )
    if missing := [name for name in ("limits", "redis") if importlib.util.find_spec(name) is None]:
        raise ClubCollectValidationError(
            f"Connection {conn_id!r} sets 'budget_url', which needs {' and '.join(missing)}: install the provider's "
            "'budget' extra (pip install 'airflow-provider-clubcollect[budget]') where tasks and the triggerer run, "
            "or leave 'budget_url' out to keep the cap per process."
        )
    return url


def shown_budget_url(url: str | None) -> str | None:
    """A budget URL as logs, errors and reprs show it: its user and password replaced by ``***``."""
    try:
        parts = urlsplit(url or "")
    except ValueError:  # such as an unclosed IPv6 bracket: show none of it, it may hold a password
        return "<a URL that cannot be parsed>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}").geturl()


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
        self.shared = rate is not None and budget_url is not None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # when the turn after the last one reserved is due, saving none
        self._store_down_until: float | None = None  # while the clock is before it, the bucket serves
        self._store: Any = None
        # The store's pace: ``_amount`` requests (at least 1) in each slot of ``_seconds`` (about 0.1 s).
        self._amount = max(1, math.floor((rate or 1) * 0.1))
        self._seconds = self._amount / (rate or 1)

    def acquire(self) -> float:
        """Wait, blocking the thread, until a request may go; return the seconds waited (never raises)."""
        if (wait := self._turn()) > 0:
            self._sleep(wait)
        return wait

    async def aacquire(self) -> float:
        """:meth:`acquire` on an event loop, never blocking it (the store is asked from :data:`STORE_THREADS`)."""
        loop, turn = asyncio.get_running_loop(), contextvars.copy_context().run  # as to_thread: the log context
        wait = await loop.run_in_executor(_store_threads, turn, self._turn) if self.shared else self._turn()
        await asyncio.sleep(wait)
        return wait

    def _turn(self) -> float:
        """Reserve a turn and return the seconds until it: the store's first slot with room, else this process's."""
        if self.shared and (self._store_down_until is None or self._clock() >= self._store_down_until):
            try:
                store, slot = self._redis(), -1
                while True:  # the slots are numbered on every process's clock; a slow walk never books the past
                    slot = max(slot + 1, math.floor(time.time() / self._seconds))
                    ends_in = math.ceil((slot + 1) * self._seconds - time.time())  # the count outlives its slot
                    if store.incr(f"budget/{self.digest}/{slot}", ends_in + 1) <= self._amount:
                        break
            except Exception as error:  # whatever Redis raises, the DAG goes on (warned once per store and process)
                self._store_down_until = self._clock() + STORE_RETRY_SECONDS
                url, reason = self.budget_url or "", f"{type(error).__name__}: {error}"
                if password := urlsplit(url).password:
                    reason = reason.replace(password, "***")
                token = object()  # setdefault is atomic: of the threads failing at once, one warns
                log.log(
                    logging.WARNING if _warned_stores.setdefault(url, token) is token else logging.DEBUG,
                    "ClubCollect request budget: the budget store %s cannot be reached (%s). This process keeps "
                    "max_requests_per_second=%g on its own meanwhile, asking the store again every %g s.",
                    shown_budget_url(url),
                    reason,
                    self.max_requests_per_second,
                    STORE_RETRY_SECONDS,
                )
            else:
                if self._store_down_until is not None:
                    self._store_down_until = None
                    log.info("ClubCollect request budget: %s answers again.", shown_budget_url(self.budget_url))
                wait = slot * self._seconds - time.time()  # a millisecond more: sleep's clock is not the wall clock
                return wait + 0.001 if wait > 0 else 0.0
        if self.max_requests_per_second is None:
            return 0.0
        interval, burst = 1.0 / self.max_requests_per_second, max(1, math.floor(self.max_requests_per_second))
        with self._lock:  # callers sleep outside it, served in the order they asked; ``burst`` saved turns go at once
            now = self._clock()
            due = now if self._next is None else max(self._next, now)
            self._next = due + interval
            return max(0.0, due - (burst - 1) * interval - now)

    def _redis(self) -> Any:  # the counters of the slots on Redis, through ``limits``
        with self._lock:  # one store, also when threads ask at once
            if self._store is None:
                import redis  # noqa: F401  # whole before limits reads its version, also while another thread imports it
                from limits import storage

                # Short timeouts: a store that hangs must not hold a request long before the fallback.
                self._store = storage.RedisStorage(
                    str(self.budget_url), key_prefix="clubcollect", socket_connect_timeout=2.0, socket_timeout=2.0
                )
            return self._store


_budgets: dict[tuple[str, float | None, str | None], RequestBudget] = {}
_warned_stores: dict[str, object] = {}
_store_threads = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="clubcollect-budget")


def budget_for(settings: ClientSettings) -> RequestBudget:
    """The budget every hook, trigger and bulk action of this process with a key shares (no cap without a rate).

    :param settings: the checked connection settings; one budget per key digest, rate and budget URL.
    """
    rate, url = settings.max_requests_per_second, settings.budget_url
    key = (hashlib.sha256(settings.api_key.encode("utf-8")).hexdigest(), rate, url)
    # setdefault is atomic: a budget built beside it is dropped at once, every caller gets the one kept.
    return _budgets.setdefault(key, RequestBudget(rate, digest=key[0], budget_url=url))


def forget_budgets() -> None:
    """Forget the budgets and warnings: in tests, and in a forked child (whose parent's threads are gone)."""
    global _store_threads
    _store_threads = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="clubcollect-budget")
    _budgets.clear()
    _warned_stores.clear()


os.register_at_fork(after_in_child=forget_budgets)
