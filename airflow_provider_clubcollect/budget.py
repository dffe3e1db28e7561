"""The request budget: one cap on the requests made with an API key, per process or shared in Redis.

``limits`` and ``redis`` are imported on first use of a shared budget only; docs/scale.rst explains it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import math
import os
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, shown
from airflow_provider_clubcollect.get_provider_info import DISTRIBUTION_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.connection import ClientSettings

__all__ = [
    "RequestBudget",
    "budget_for",
]

log = logging.getLogger(__name__)

INSTALL_BUDGET_EXTRA = f"pip install '{DISTRIBUTION_NAME}[budget]'"
#: Seconds a process keeps the cap alone after the store failed, before it asks the store again.
STORE_RETRY_SECONDS = 30.0


def key_digest(api_key: str) -> str:
    """What names a key's budget in memory and in Redis: the key's SHA-256, never the key."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def check_budget_url(value: Any, conn_id: str, max_requests_per_second: float | None) -> str | None:
    """The ``budget_url`` extra, checked: a ``redis://`` or ``rediss://`` URL, or ``None``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    where = f"Connection {conn_id!r}: extra 'budget_url'"
    url = value.strip() if isinstance(value, str) else None
    parts = urlsplit(url or "")
    try:
        port_ok = parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        port_ok = False
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or not port_ok:
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


def budget_url_password(url: str | None) -> str | None:
    """The password in a budget URL, to mask in logs; ``None`` when it has none."""
    return (urlsplit(url).password or None) if url else None


def shown_budget_url(url: str | None) -> str | None:
    """A budget URL as logs, errors and reprs show it: its user and password replaced by ``***``."""
    if not url or "@" not in (netloc := urlsplit(url).netloc):
        return url
    return urlsplit(url)._replace(netloc=f"***@{netloc.rpartition('@')[2]}").geturl()


class RequestBudget:
    """
    The turns one API key's requests take: the per-process cap, or a share of a budget in Redis.

    Build it with :func:`budget_for`.  When the store cannot be reached, the process warns once,
    keeps the cap alone, and asks the store again after :data:`STORE_RETRY_SECONDS`.

    :param max_requests_per_second: the cap; ``None`` for none (every turn is free).
    :param digest: names the key (:func:`key_digest`), never the key itself.
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
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # when the turn after the last one reserved is due, saving none
        self._shared = None if rate is None or budget_url is None else _SharedBudget(budget_url, digest, rate)
        self._store_down_until: float | None = None  # while the clock is before it, the bucket serves

    def __repr__(self) -> str:
        if self.max_requests_per_second is None:
            return "RequestBudget(no cap)"
        where = "per process" if self.budget_url is None else f"shared at {shown_budget_url(self.budget_url)}"
        return f"RequestBudget({self.max_requests_per_second:g} requests per second, {where})"

    @property
    def shared(self) -> bool:
        """Whether processes share this budget through a store (when it is up)."""
        return self._shared is not None

    def acquire(self) -> float:
        """Wait, blocking the thread, until a request may go; return the seconds waited (never raises)."""
        if self._shared is not None and self._store_usable():
            try:
                return self._store_answered(self._shared.acquire(self._sleep))
            except Exception as error:  # whatever Redis raises, the DAG goes on
                self._store_failed(error)
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    async def aacquire(self) -> float:
        """:meth:`acquire` on an event loop, never blocking it."""
        if self._shared is not None and self._store_usable():
            try:
                return self._store_answered(await self._shared.aacquire())
            except Exception as error:  # whatever Redis raises, the trigger goes on
                self._store_failed(error)
        wait = self._reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def _reserve(self) -> float:
        """Reserve this process's next turn: the seconds to wait for it; ``burst`` saved turns go at once."""
        if self.max_requests_per_second is None:
            return 0.0
        interval, burst = 1.0 / self.max_requests_per_second, max(1, math.floor(self.max_requests_per_second))
        with self._lock:  # callers sleep outside it, served in the order they asked
            now = self._clock()
            due = now if self._next is None else max(self._next, now)
            self._next = due + interval
            return max(0.0, due - (burst - 1) * interval - now)

    def _store_usable(self) -> bool:
        """Whether to ask the store: never failed, or failed long enough ago."""
        return self._store_down_until is None or self._clock() >= self._store_down_until

    def _store_failed(self, error: Exception) -> None:
        """Take the store for down a while; warn once per store and process, without its password."""
        self._store_down_until = self._clock() + STORE_RETRY_SECONDS
        url = self.budget_url or ""
        reason = f"{type(error).__name__}: {error}"
        if password := budget_url_password(url):
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

    def _store_answered(self, waited: float) -> float:
        """Note that the store answers (saying so once after it was down); return ``waited``."""
        if self._store_down_until is not None:
            self._store_down_until = None
            log.info(
                "ClubCollect request budget: the budget store %s answers again; requests share its budget again.",
                shown_budget_url(self.budget_url),
            )
        return waited


def store_slot(rate: float) -> tuple[int, float]:
    """The pace of a shared budget: at most ``requests`` in each slot of ``seconds`` (about 0.1 s)."""
    amount = max(1, math.floor(rate * 0.1))
    return amount, amount / rate


class _SharedBudget:
    """One key's budget in Redis, through ``limits``: sync storage for threads, async per event loop."""

    def __init__(self, url: str, digest: str, rate: float) -> None:
        self.url = url
        self.digest = digest
        self.amount, self.seconds = store_slot(rate)
        self._sync: tuple[Any, Any] | None = None
        # redis.asyncio connections belong to the loop that made them: one limiter per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = weakref.WeakKeyDictionary()

    def _limiter(self, aio: bool) -> tuple[Any, Any]:
        """A fixed-window limiter on Redis (sync, or async for this loop) and the slot's limit item."""
        from limits import RateLimitItemPerSecond

        if aio:
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import FixedWindowRateLimiter
        else:
            from limits.storage import RedisStorage  # type: ignore[assignment]
            from limits.strategies import FixedWindowRateLimiter  # type: ignore[assignment]
        # Short timeouts: a store that hangs must not hold a request long before the fallback.
        options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0, "wrap_exceptions": True}
        if aio:
            options["implementation"] = "redispy"
        storage = RedisStorage(f"async+{self.url}" if aio else self.url, key_prefix="clubcollect", **options)
        # A fixed window per slot (the slot's number is part of its key), kept a little longer than the slot.
        return FixedWindowRateLimiter(storage), RateLimitItemPerSecond(
            self.amount, math.ceil(self.seconds), namespace="budget"
        )

    def acquire(self, sleep: Callable[[float], None]) -> float:
        """Wait for a turn in the shared slots, blocking the thread."""
        with _lock:
            if self._sync is None:
                self._sync = self._limiter(aio=False)
        limiter, item = self._sync
        waited = 0.0
        while not limiter.hit(item, self.digest, str(slot := self._slot())):
            sleep(wait := self._until(slot + 1))
            waited += wait
        return waited

    async def aacquire(self) -> float:
        """Wait for a turn in the shared slots on the running loop."""
        loop = asyncio.get_running_loop()
        with _lock:
            made = self._async.get(loop) or self._async.setdefault(loop, self._limiter(aio=True))
        limiter, item = made
        waited = 0.0
        while not await limiter.hit(item, self.digest, str(slot := self._slot())):
            await asyncio.sleep(wait := self._until(slot + 1))
            waited += wait
        return waited

    def _slot(self) -> int:
        """The current slot's number, on the epoch clock every process of the deployment shares."""
        return math.floor(time.time() / self.seconds)

    def _until(self, slot: int) -> float:
        """Seconds until ``slot`` starts, plus jitter so that waiting processes do not all ask at once."""
        return max(slot * self.seconds - time.time(), 0.001) + random.uniform(0.0, 0.05 * self.seconds)


#: A budget that caps nothing, for connections without ``max_requests_per_second``.
NO_BUDGET = RequestBudget(None)

_budgets: dict[tuple[str, float, str | None], RequestBudget] = {}
_warned_stores: set[str] = set()
_lock = threading.Lock()


def budget_for(settings: ClientSettings) -> RequestBudget:
    """
    This process's budget for a connection's key: one per key digest, rate and budget URL.

    :param settings: the checked connection settings.
    :return: the budget every hook, trigger and bulk action with that key shares; :data:`NO_BUDGET`
        when the connection sets no ``max_requests_per_second``.
    """
    rate = settings.max_requests_per_second
    if rate is None:
        return NO_BUDGET
    key = (key_digest(settings.api_key), rate, settings.budget_url)
    with _lock:
        if key not in _budgets:
            _budgets[key] = RequestBudget(rate, digest=key[0], budget_url=settings.budget_url)
        return _budgets[key]


def forget_budgets() -> None:
    """Forget this process's budgets and store warnings: for tests, and in a forked child, which keeps
    no bucket, lock or Redis connection of its parent (another thread may have held the lock at the fork)."""
    global _lock
    _lock = threading.Lock()
    _budgets.clear()
    _warned_stores.clear()


os.register_at_fork(after_in_child=forget_budgets)
