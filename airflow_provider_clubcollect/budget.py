"""The request budget: one cap on the requests made with an API key (SPEC section 12).

A connection's ``max_requests_per_second`` caps every request the provider makes with its key.
:func:`budget_for` hands out one :class:`RequestBudget` per process for each key (by digest),
rate and budget URL, so every hook, trigger and bulk action in a process draws from the same one;
the transports take a turn (:meth:`RequestBudget.acquire`, :meth:`RequestBudget.aacquire`) before
each attempt.

- Without ``budget_url``, each process keeps the cap alone, with the small token bucket below
  (:class:`TokenBucket`).  It needs nothing installed, so ``max_requests_per_second`` works on a
  plain install, and it is also what a process falls back to when Redis is down: one bucket for
  both cases, where the ``limits`` library's in-memory storage would add a dependency and still
  need a wait computed beside it (``limits`` answers hit or miss; it never waits).
- With ``budget_url`` (Redis, which Celery deployments already run), every process draws from one
  budget per key: the ``limits`` library's moving window over Redis, sync in workers
  (``limits.storage.RedisStorage``) and async in the triggerer (``limits.aio.storage.RedisStorage``
  on ``redis.asyncio``).  Nothing written to Redis holds the key: the limit is named by its
  SHA-256 digest.  ``limits`` counts whole requests in windows of whole seconds: a rate of 1 or more
  allows its whole part per second (2.5 allows 2), a rate under 1 one request per window long
  enough (0.4 allows 1 per 3 s).  Neither ever exceeds the cap.
- When the store cannot be reached, the process says so once (a warning naming the store without
  its password, and never the key), keeps the cap alone with its bucket, and asks the store again
  after :data:`STORE_RETRY_SECONDS`: a Redis outage stops no DAG.

Nothing heavy is imported here: ``limits`` and ``redis`` are imported when a shared budget is first
used, and only with the ``budget`` extra installed.
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
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, shown
from airflow_provider_clubcollect.get_provider_info import (
    CONN_EXTRA_BUDGET_URL,
    CONN_EXTRA_MAX_REQUESTS_PER_SECOND,
    DISTRIBUTION_NAME,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.connection import ClientSettings

__all__ = [
    "RequestBudget",
    "budget_for",
]

log = logging.getLogger(__name__)

#: The optional dependencies a shared budget needs, as ``pip install`` takes them.
BUDGET_EXTRA: Final = "budget"
INSTALL_BUDGET_EXTRA: Final = f"pip install '{DISTRIBUTION_NAME}[{BUDGET_EXTRA}]'"
#: The schemes a ``budget_url`` may have.
BUDGET_URL_SCHEMES: Final = ("redis", "rediss")
#: Seconds a process keeps the cap alone after the store failed, before it asks the store again.
STORE_RETRY_SECONDS: Final = 30.0
#: Seconds one call to the store may take (connect, or answer) before it counts as down.
STORE_TIMEOUT_SECONDS: Final = 2.0
#: Names the provider's limits in the store: ``clubcollect:LIMITER/budget/<key digest>/...``.
STORE_KEY_PREFIX: Final = "clubcollect"
STORE_NAMESPACE: Final = "budget"


def key_digest(api_key: str) -> str:
    """
    What names a key's budget in memory and in Redis: the key's SHA-256, never the key.

    :param api_key: the API key.
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


# --- the connection's extras ----------------------------------------------------------------------


def check_max_requests_per_second(value: Any, conn_id: str) -> float | None:
    """
    The ``max_requests_per_second`` extra, checked: a number above 0, or ``None`` for no cap.

    :param value: the extra as stored (a number, or text from a form).
    :param conn_id: the connection, named in the error.
    :raises ClubCollectValidationError: for anything else.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0 < number < math.inf:
        raise ClubCollectValidationError(
            f"Connection {conn_id!r}: extra {CONN_EXTRA_MAX_REQUESTS_PER_SECOND!r} must be a number of requests "
            f"per second above 0 (such as 5 or 0.5), got {shown(value)}; leave it out for no cap."
        )
    return number


def check_budget_url(value: Any, conn_id: str, max_requests_per_second: float | None) -> str | None:
    """
    The ``budget_url`` extra, checked: a ``redis://`` or ``rediss://`` URL, or ``None``.

    Messages name the URL without its password (:func:`shown_budget_url`).

    :param value: the extra as stored.
    :param conn_id: the connection, named in the error.
    :param max_requests_per_second: the connection's cap: a budget URL without one has nothing to share.
    :raises ClubCollectValidationError: for a URL that is not Redis's, without a host, with no cap
        beside it, or when the ``budget`` extra is not installed.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    where = f"Connection {conn_id!r}: extra {CONN_EXTRA_BUDGET_URL!r}"
    if not isinstance(value, str):
        raise ClubCollectValidationError(
            f"{where} must be a redis:// or rediss:// URL, got {type(value).__name__} {shown(value)}."
        )
    url = value.strip()
    parts = urlsplit(url)
    named = shown_budget_url(url)
    try:
        port_ok = parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        port_ok = False
    if parts.scheme not in BUDGET_URL_SCHEMES or not parts.hostname or not port_ok:
        raise ClubCollectValidationError(
            f"{where} must be a Redis URL such as redis://redis.internal:6379/0 or "
            f"rediss://:PASSWORD@redis.internal:6380/0 (scheme redis or rediss, a host, a port from 1 to "
            f"65535), got {shown(named)}."
        )
    if max_requests_per_second is None:
        raise ClubCollectValidationError(
            f"{where} is set but {CONN_EXTRA_MAX_REQUESTS_PER_SECOND!r} is not: set the requests per second "
            "the processes sharing the budget may send together, or leave the budget URL out."
        )
    require_budget_extra(conn_id)
    return url


def require_budget_extra(conn_id: str) -> None:
    """
    Check that a shared budget can be built: ``limits`` and ``redis`` importable (not imported).

    :param conn_id: the connection, named in the error.
    :raises ClubCollectValidationError: naming the extra to install.
    """
    missing = [name for name in ("limits", "redis") if importlib.util.find_spec(name) is None]
    if missing:
        raise ClubCollectValidationError(
            f"Connection {conn_id!r} sets {CONN_EXTRA_BUDGET_URL!r}, which needs {' and '.join(missing)}: "
            f"install the provider's {BUDGET_EXTRA!r} extra ({INSTALL_BUDGET_EXTRA}) where tasks and the "
            f"triggerer run, or leave {CONN_EXTRA_BUDGET_URL!r} out to keep the cap per process."
        )


def budget_url_password(url: str | None) -> str | None:
    """
    The password in a budget URL, to mask in logs; ``None`` when it has none.

    :param url: the URL, or ``None``.
    """
    if not url:
        return None
    return urlsplit(url).password or None


def shown_budget_url(url: str | None) -> str | None:
    """
    A budget URL as logs, errors and reprs show it: its user and password replaced by ``***``.

    :param url: the URL, or ``None``.
    """
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}").geturl()


# --- one process's cap ----------------------------------------------------------------------------


class TokenBucket:
    """
    A token bucket for one process, safe to share between threads and event loops.

    Each call reserves the next turn and says how long to wait for it, so callers sleep outside
    the lock (``time.sleep`` or ``asyncio.sleep``) and are served in the order they asked.  A full
    bucket holds ``burst`` turns; it refills at ``rate`` per second.

    :param rate: turns per second.
    :param burst: turns served at once from a full bucket.
    :param clock: seconds on a monotonic clock (a fake one in tests).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        #: When the turn after the last one reserved is due, had the bucket no room to save turns in.
        self._next: float | None = None

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst})"

    def reserve(self) -> float:
        """Reserve a turn: the seconds to wait before using it (0 when a saved one is there)."""
        interval = 1.0 / self.rate
        with self._lock:
            now = self._clock()
            due = now if self._next is None else max(self._next, now)
            # A full bucket lets `burst` turns go at once: the turn due now may be taken that much earlier.
            wait = max(0.0, due - (self.burst - 1) * interval - now)
            self._next = due + interval
            return wait


# --- the budget -----------------------------------------------------------------------------------


class RequestBudget:
    """
    The turns one API key's requests take: the per-process cap, or a share of a budget in Redis.

    Build it with :func:`budget_for`, which keeps one per process for each key, rate and URL.

    :param max_requests_per_second: the cap; ``None`` for none (every turn is free).
    :param digest: names the key (:func:`key_digest`), never the key itself.
    :param budget_url: a Redis URL the processes share the budget through; ``None`` keeps it per process.
    :param clock: seconds on a monotonic clock, for the per-process bucket and the store's retry.
    :param sleep: how :meth:`acquire` waits (``time.sleep``; a fake one in tests).
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
        self.max_requests_per_second = max_requests_per_second
        self.digest = digest
        self.budget_url = budget_url
        self._clock = clock
        self._sleep = sleep
        self._bucket: TokenBucket | None = None
        self._shared: _SharedBudget | None = None
        if max_requests_per_second is not None:
            self._bucket = TokenBucket(max_requests_per_second, max(1, math.floor(max_requests_per_second)), clock)
            if budget_url is not None:
                self._shared = _SharedBudget(budget_url, digest, max_requests_per_second)
        self._store_lock = threading.Lock()
        #: While the clock is before this, the store is taken for down and the bucket used.
        self._store_down_until = -math.inf
        self._store_was_down = False

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
        """
        Wait, blocking the thread, until a request may go; return the seconds waited.

        Never raises for the store: when it is down the process keeps the cap alone.
        """
        if self._bucket is None:
            return 0.0
        if self._shared is not None and self._store_usable():
            try:
                waited = self._shared.acquire(self._sleep)
            except Exception as error:  # whatever Redis raises, the DAG goes on
                self._store_failed(error)
            else:
                self._store_answered()
                return waited
        wait = self._bucket.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    async def aacquire(self) -> float:
        """:meth:`acquire` on an event loop, never blocking it."""
        if self._bucket is None:
            return 0.0
        if self._shared is not None and self._store_usable():
            try:
                waited = await self._shared.aacquire()
            except Exception as error:  # whatever Redis raises, the trigger goes on
                self._store_failed(error)
            else:
                self._store_answered()
                return waited
        wait = self._bucket.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    # --- the store's health ---------------------------------------------------------------------

    def _store_usable(self) -> bool:
        with self._store_lock:
            return self._clock() >= self._store_down_until

    def _store_failed(self, error: Exception) -> None:
        with self._store_lock:
            self._store_down_until = self._clock() + STORE_RETRY_SECONDS
            self._store_was_down = True
        _warn_store_down(self.budget_url or "", error, self.max_requests_per_second)

    def _store_answered(self) -> None:
        with self._store_lock:
            was_down, self._store_was_down = self._store_was_down, False
        if was_down:
            log.info(
                "ClubCollect request budget: the budget store %s answers again; requests share its budget again.",
                shown_budget_url(self.budget_url),
            )


#: Budget stores this process has warned about: one warning per store and process.
_warned_stores: set[str] = set()
_warned_lock = threading.Lock()


def _warn_store_down(url: str, error: Exception, rate: float | None) -> None:
    shown_url = shown_budget_url(url) or ""
    reason = f"{type(error).__name__}: {error}"
    password = budget_url_password(url)
    if password:
        reason = reason.replace(password, "***")
    with _warned_lock:
        first = url not in _warned_stores
        _warned_stores.add(url)
    if first:
        log.warning(
            "ClubCollect request budget: the budget store %s cannot be reached (%s). This process keeps "
            "max_requests_per_second=%g on its own meanwhile (the deployment may then send more in all) and "
            "asks the store again every %g s; nothing fails because of it. Said once per process.",
            shown_url,
            reason,
            rate,
            STORE_RETRY_SECONDS,
        )
    else:
        log.debug("ClubCollect request budget: the budget store %s is still down (%s).", shown_url, reason)


# --- a budget shared through Redis --------------------------------------------------------------


#: The deployment's requests are spread over slots of about this many seconds (see :func:`store_slot`).
SLOT_SECONDS: Final = 0.1


def store_slot(rate: float) -> tuple[int, float]:
    """
    The pace of a shared budget: ``(requests, seconds)``, at most that many requests in each slot of that length.

    A window of a second lets every process start at once, a second's worth of requests in the
    same instant, which an API metering with a token bucket of a smaller burst refuses (the sandbox
    at 40 requests/s and a burst of 10 refused 60% of them).  Slots of about :data:`SLOT_SECONDS`
    (one request per slot below 10 requests/s) spread the requests evenly: any interval of ``T``
    seconds holds at most ``rate x T + requests``, and a slot never holds more than ``requests``.

    :param rate: requests per second, above 0.
    """
    amount = max(1, math.floor(rate * SLOT_SECONDS))
    return amount, amount / rate


class _SharedBudget:
    """One key's budget in Redis, through ``limits``: sync storage for threads, async per event loop."""

    def __init__(self, url: str, digest: str, rate: float) -> None:
        self.url = url
        self.digest = digest
        self.amount, self.seconds = store_slot(rate)
        self._lock = threading.Lock()
        self._sync: tuple[Any, Any] | None = None
        # redis.asyncio connections belong to the loop that made them: one limiter per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = weakref.WeakKeyDictionary()

    def _item(self) -> Any:
        from limits import RateLimitItemPerSecond

        # A fixed window per slot (the slot's number is part of its key), kept a little longer than the slot.
        return RateLimitItemPerSecond(self.amount, math.ceil(self.seconds), namespace=STORE_NAMESPACE)

    def _sync_limiter(self) -> tuple[Any, Any]:
        with self._lock:
            if self._sync is None:
                from limits.storage import RedisStorage
                from limits.strategies import FixedWindowRateLimiter

                storage = RedisStorage(self.url, key_prefix=STORE_KEY_PREFIX, wrap_exceptions=True, **_store_options())
                self._sync = (FixedWindowRateLimiter(storage), self._item())
            return self._sync

    def _async_limiter(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._async.get(loop)
            if made is None:
                from limits.aio.storage import RedisStorage
                from limits.aio.strategies import FixedWindowRateLimiter

                storage = RedisStorage(
                    f"async+{self.url}",
                    implementation="redispy",
                    key_prefix=STORE_KEY_PREFIX,
                    wrap_exceptions=True,
                    **_store_options(),
                )
                made = self._async[loop] = (FixedWindowRateLimiter(storage), self._item())
            return made

    def acquire(self, sleep: Callable[[float], None]) -> float:
        limiter, item = self._sync_limiter()
        waited = 0.0
        while not limiter.hit(item, self.digest, str(slot := self._slot())):
            wait = self._until(slot + 1)
            sleep(wait)
            waited += wait
        return waited

    async def aacquire(self) -> float:
        limiter, item = self._async_limiter()
        waited = 0.0
        while not await limiter.hit(item, self.digest, str(slot := self._slot())):
            wait = self._until(slot + 1)
            await asyncio.sleep(wait)
            waited += wait
        return waited

    def _slot(self) -> int:
        # Slots are numbered on the epoch clock, which every process of the deployment shares.
        return math.floor(time.time() / self.seconds)

    def _until(self, slot: int) -> float:
        # Until the slot starts, plus a little jitter so that the waiting processes do not all ask
        # again at the same instant.
        return max(slot * self.seconds - time.time(), 0.001) + random.uniform(0.0, 0.05 * self.seconds)


def _store_options() -> dict[str, Any]:
    # Short timeouts: a store that hangs must not hold a request for long before the fallback.
    return {"socket_connect_timeout": STORE_TIMEOUT_SECONDS, "socket_timeout": STORE_TIMEOUT_SECONDS}


# --- one budget per key in a process ------------------------------------------------------------

#: A budget that caps nothing, for connections without ``max_requests_per_second``.
NO_BUDGET: Final = RequestBudget(None)

_budgets: dict[tuple[str, float, str | None], RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(settings: ClientSettings) -> RequestBudget:
    """
    This process's budget for a connection's key: one per key digest, rate and budget URL.

    Every hook, trigger and bulk action of the process that uses the same key and settings gets
    the same object, so they share one cap (and, with a budget URL, one share of Redis's).

    :param settings: the checked connection settings.
    :return: the budget; :data:`NO_BUDGET` when the connection sets no ``max_requests_per_second``.
    """
    rate = settings.max_requests_per_second
    if rate is None:
        return NO_BUDGET
    key = (key_digest(settings.api_key), rate, settings.budget_url)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = RequestBudget(rate, digest=key[0], budget_url=settings.budget_url)
        return budget


def forget_budgets() -> None:
    """Forget this process's budgets and store warnings: the next :func:`budget_for` starts afresh (for tests)."""
    with _budgets_lock:
        _budgets.clear()
    with _warned_lock:
        _warned_stores.clear()


def _after_fork_in_child() -> None:
    # A forked child (a Celery prefork worker, a task process) keeps no bucket, lock or Redis
    # connection of its parent: it starts with budgets of its own.  New locks, not the parent's,
    # which another thread may have held at the fork.
    global _budgets_lock, _warned_lock
    _budgets_lock, _warned_lock = threading.Lock(), threading.Lock()
    _budgets.clear()
    _warned_stores.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
