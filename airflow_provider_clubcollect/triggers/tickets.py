"""The triggers that wait, in the triggerer, for tickets awaiting an answer.

:class:`UnansweredTicketsTrigger` serves the deferrable sensor; :class:`UnansweredTicketsEventTrigger`
serves asset watchers.  They only read (GET): nothing that changes ClubCollect runs here, where a
triggerer restart can run the same code twice.  They use the same request flow, retries,
paging and selection as the sync hook, over ``httpx.AsyncClient``, and never block the event
loop: the connection is read with ``aget_connection`` and waits are ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import weakref
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.exceptions import (
    ClubCollectError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
    ClubCollectValidationError,
    shorten,
    shown,
)
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.paging import CompanyTicketPager
from airflow_provider_clubcollect.retry import Backoff, as_backoff
from airflow_provider_clubcollect.selection import (
    awaiting_answer,
    awaiting_answer_due,
    ticket_date,
    to_utc,
    waiting_summary,
)
from airflow_provider_clubcollect.transport import RequestRetries
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_clubcollect.wire import STATUS_UNANSWERED, check_id, check_int, parse_iso_datetime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable, Mapping

    from airflow_provider_clubcollect.connection import ClientSettings
    from airflow_provider_clubcollect.transport import AsyncTransport
    from airflow_provider_clubcollect.wire import ApiRequest, CompanyTicket

__all__ = [
    "UnansweredTicketsEventTrigger",
    "UnansweredTicketsTrigger",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Event ``status`` values.
EVENT_SUCCESS = "success"
EVENT_ERROR = "error"
#: The trigger's own deadline (``timeout_at``) passed: the sensor ends as a timed-out poking sensor does.
EVENT_TIMEOUT = "timeout"


class UnansweredTicketsTrigger(BaseTrigger):
    """
    Poll a company's unanswered tickets until at least ``min_tickets`` await an answer.

    Fires one event: ``{"status": "success", "tickets": [...]}`` with the tickets that await an
    answer (oldest first), ``{"status": "error", "error_class": ..., "message": ...,
    "status_code": ..., "error_code": ...}`` when the API fails after every retry, or
    ``{"status": "timeout", "message": ...}`` once ``timeout_at`` has passed.

    :param str company_id: the company.
    :param int min_tickets: how many tickets must await an answer.
    :param float | None unanswered_for_seconds: count only threads unanswered for longer than this; ``None`` for all.
    :param str | None reference_time: fixed ISO 8601 "now" for the selection; ``None`` for the current
        time at each poll.
    :param float poke_interval: seconds between two polls.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``; the key is read
        from it in the triggerer and never serialized.
    :param Backoff | dict | None backoff: the waits between retries of each request, a
        :class:`~airflow_provider_clubcollect.retry.Backoff` or its fields as a dict (how it is
        serialized); the connection's ``max_retries`` sets the count.
    :param str | None timeout_at: ISO 8601 moment after which the trigger stops polling and fires a timeout
        event; the sensor sets it from its ``timeout``.  ``None`` polls until cancelled.
    :param int max_concurrency: pages in flight at once, at least 1 (default 8).

    .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
    """

    def __init__(
        self,
        company_id: str,
        *,
        min_tickets: int = 1,
        unanswered_for_seconds: float | None = None,
        reference_time: str | None = None,
        poke_interval: float = 60.0,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | Mapping[str, Any] | None = None,
        timeout_at: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        super().__init__()
        self.backoff = as_backoff(backoff)
        self.timeout_at = timeout_at
        self.company_id = company_id
        self.min_tickets = min_tickets
        self.unanswered_for_seconds = unanswered_for_seconds
        self.reference_time = reference_time
        self.poke_interval = poke_interval
        self.clubcollect_conn_id = clubcollect_conn_id
        self.max_concurrency = check_int(max_concurrency, "max_concurrency")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """
        The class path and plain keyword arguments: the connection id, never the key.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "company_id": self.company_id,
                "min_tickets": self.min_tickets,
                "unanswered_for_seconds": self.unanswered_for_seconds,
                "reference_time": self.reference_time,
                "poke_interval": self.poke_interval,
                "clubcollect_conn_id": self.clubcollect_conn_id,
                "backoff": _plain(self.backoff),
                "timeout_at": self.timeout_at,
                "max_concurrency": self.max_concurrency,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Poll until enough tickets await an answer, then fire one event.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        try:
            deadline = None if self.timeout_at is None else to_utc(self.timeout_at)
            async with _shared_connection(self.clubcollect_conn_id) as connection:
                while True:
                    try:
                        # A poll is read-only, so cutting one short at the deadline loses nothing.
                        waiting = await asyncio.wait_for(self._poll_shared(connection), _seconds_until(deadline))
                    except asyncio.TimeoutError:
                        waiting = None
                    if waiting is not None and len(waiting) >= self.min_tickets:
                        yield TriggerEvent({"status": EVENT_SUCCESS, "tickets": waiting})
                        return
                    left = _seconds_until(deadline)
                    if waiting is None or (left is not None and left <= 0):
                        yield TriggerEvent(
                            {"status": EVENT_TIMEOUT, "message": f"No {self.min_tickets} tickets by {self.timeout_at}."}
                        )
                        return
                    self.log.info(
                        "%s Next poll in %g s.",
                        waiting_summary(len(waiting), self.company_id, self.unanswered_for_seconds, self.min_tickets),
                        self.poke_interval,
                    )
                    await asyncio.sleep(self.poke_interval if left is None else min(self.poke_interval, left))
        except Exception as exc:
            # Every failure, a missing connection included, becomes an error event, so that the
            # sensor handles it as a failed poke (a crashed trigger would reach the task as a
            # TaskDeferralError instead).  Leaving the shared connection also runs when the
            # triggerer cancels the trigger (task timeout, cleared task).
            yield TriggerEvent({"status": EVENT_ERROR, **_as_clubcollect_error(exc).to_payload()})

    async def _poll_shared(self, connection: _SharedConnection) -> list[dict[str, Any]]:
        async with connection.transport() as transport:
            return await self.poll(transport, RequestRetries(self.backoff or Backoff(), transport.settings.max_retries))

    async def _connect(self) -> tuple[AsyncTransport, RequestRetries]:
        return await _aconnect(self.clubcollect_conn_id, self.backoff)

    async def poll(self, transport: AsyncTransport, retries: RequestRetries) -> list[dict[str, Any]]:
        """
        Read every page (up to ``max_concurrency`` at a time) and select the tickets awaiting an answer.

        :param AsyncTransport transport: the async transport.
        :param RequestRetries retries: the back-off and the connection's ``max_retries``.
        :return: the tickets awaiting an answer, oldest first.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        pager = CompanyTicketPager(self.company_id, STATUS_UNANSWERED, max_concurrency=self.max_concurrency)
        with observability.span("poll", trigger=type(self).__name__):
            tickets = await read_pages(pager, transport, retries)
        unanswered_for = None if self.unanswered_for_seconds is None else timedelta(seconds=self.unanswered_for_seconds)
        return await _off_loop(len(tickets), awaiting_answer, tickets, unanswered_for, to_utc(self.reference_time))


def _seconds_until(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, (deadline - datetime.now(timezone.utc)).total_seconds())


def _as_clubcollect_error(exc: Exception) -> ClubCollectError:
    if isinstance(exc, ClubCollectError):
        return exc
    return ClubCollectError(f"UnansweredTicketsTrigger failed: {type(exc).__name__}: {shorten(str(exc), 1000)}")


async def _aconnect(conn_id: str, backoff: Backoff | None = None) -> tuple[AsyncTransport, RequestRetries]:
    """
    Read and check the connection without blocking the loop, and build an async transport of its own.

    :param conn_id: the Airflow connection of type ``clubcollect``.
    :param backoff: the waits between retries; ``None`` for the defaults.
    :return: the transport, and how to retry its requests (the connection's ``max_retries``, as in the hook).
    """
    transport = await _new_transport(await _asettings(conn_id))
    return transport, RequestRetries(backoff or Backoff(), transport.settings.max_retries)


async def _asettings(conn_id: str) -> ClientSettings:
    """The connection's checked settings, read without blocking the loop, its secrets masked."""
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    from airflow_provider_clubcollect.connection import missing_connection, settings_from_airflow_connection
    from airflow_provider_clubcollect.version_compat import aget_connection, amask_secret

    try:
        conn = await aget_connection(conn_id)
    except AirflowNotFoundException:
        raise missing_connection(conn_id) from None
    settings = settings_from_airflow_connection(conn)
    # Airflow masks the passwords it hands out; this also covers a key stripped of whitespace.
    for secret in settings.secrets:
        await amask_secret(secret)
    return settings


async def _new_transport(settings: ClientSettings) -> AsyncTransport:
    from airflow_provider_clubcollect.transport import AsyncTransport

    # Importing httpx and building its TLS context take a tenth of a second or more: off the loop.
    return await asyncio.to_thread(AsyncTransport, settings)


#: Seconds the triggers of one event loop reuse a read of their connection before reading it again:
#: a changed connection (key, base URL, budget, retries) is picked up within this time.
CONNECTION_TTL = 60.0


def _built_from(settings: ClientSettings) -> tuple[Any, ...]:
    from airflow_provider_clubcollect.budget import key_digest

    return (
        settings.base_url,
        key_digest(settings.api_key),
        settings.timeout,
        settings.max_retries,
        settings.max_requests_per_second,
        settings.budget_url,
    )


#: Polls on one connection and event loop in flight at once.  Hundreds of watchers polling together
#: would otherwise open as many connections, and the HTTP pool closes all but 20 after each poll and
#: scans every connection for every request: a handful at a time keep their connections alive.
POLLS_IN_FLIGHT = 8


class _Client(NamedTuple):
    """A transport and what it was built from (the key only as a digest), to tell a changed connection."""

    transport: AsyncTransport
    built_from: tuple[Any, ...]


class _SharedConnection:
    """
    One connection as every trigger on one event loop uses it: one read, one HTTP client and pool.

    A thousand watchers on one connection share one ``httpx.AsyncClient`` (and its TLS context and
    keep-alive pool) instead of building a client each.  The connection is read again at most every
    :data:`CONNECTION_TTL` seconds, by one poll while the others keep the client they have; when it
    changed, the next polls use a new client, and the old one is closed once no poll uses it.  The
    key stays in the client's ``Authorization`` header; what tells two reads apart holds its digest.
    Get it with :func:`_shared_connection`.

    :param str conn_id: the Airflow connection of type ``clubcollect``.
    """

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.users = 0
        self._client: _Client | None = None
        self._read_at = -math.inf
        self._in_use: dict[AsyncTransport, int] = {}
        self._lock = asyncio.Lock()
        self._polls = asyncio.Semaphore(POLLS_IN_FLIGHT)

    @contextlib.asynccontextmanager
    async def transport(self) -> AsyncIterator[AsyncTransport]:
        """
        The current client, for one poll; a client the connection replaced is closed after its last poll.

        :raises ClubCollectError: the connection is missing or invalid (at its first read, or after it changed).
        """
        await self._polls.acquire()
        try:
            transport = await self._current()
        except BaseException:
            self._polls.release()
            raise
        self._in_use[transport] = self._in_use.get(transport, 0) + 1
        try:
            yield transport
        finally:
            self._polls.release()
            self._in_use[transport] -= 1
            if not self._in_use[transport]:
                del self._in_use[transport]
                if self._client is None or transport is not self._client.transport:
                    await asyncio.shield(transport.aclose())

    async def _current(self) -> AsyncTransport:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._client is None or loop.time() - self._read_at >= CONNECTION_TTL:
                try:
                    settings = await _asettings(self.conn_id)
                except ClubCollectError:
                    raise  # missing or invalid: as for a trigger reading it the first time
                except Exception as exc:
                    if self._client is None:
                        raise
                    # A read that failed for want of Airflow (its API server restarting): keep the
                    # client, read again at the next poll.
                    log.warning("Could not read connection %r again (%s); keeping the last read.", self.conn_id, exc)
                    return self._client.transport
                self._read_at = loop.time()
                built_from = _built_from(settings)
                if self._client is None or self._client.built_from != built_from:
                    old, self._client = self._client, _Client(await _new_transport(settings), built_from)
                    if old is not None and old.transport not in self._in_use:
                        await old.transport.aclose()
            return self._client.transport

    async def aclose(self) -> None:
        """Close the client (when the last trigger using the connection on this loop has left)."""
        client, self._client = self._client, None
        if client is not None and client.transport not in self._in_use:
            await client.transport.aclose()


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _SharedConnection]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _shared_connection(conn_id: str) -> AsyncIterator[_SharedConnection]:
    """
    The :class:`_SharedConnection` of ``conn_id`` on the running loop, for as long as a trigger runs.

    :param str conn_id: the Airflow connection of type ``clubcollect``.
    """
    connections = _shared.setdefault(asyncio.get_running_loop(), {})
    connection = connections.get(conn_id)
    if connection is None:
        connection = connections[conn_id] = _SharedConnection(conn_id)
    connection.users += 1
    try:
        yield connection
    finally:
        connection.users -= 1
        if not connection.users:
            del connections[conn_id]
            await asyncio.shield(connection.aclose())


async def _off_loop(size: int, func: Callable[..., _T], *args: Any) -> _T:
    """
    Run CPU work proportional to ``size`` tickets: in a thread when large, so as not to hold the loop,
    inline when small, where the hop to a thread would cost more than the work.
    """
    if size <= INLINE_TICKETS:
        return func(*args)
    return await asyncio.to_thread(func, *args)


#: Up to this many tickets, a poll selects on the loop (well under a millisecond); more go to a thread.
INLINE_TICKETS = 500


async def read_pages(
    pager: CompanyTicketPager, transport: AsyncTransport, retries: RequestRetries
) -> list[CompanyTicket]:
    """
    Read every page a pager asks for, up to its ``max_concurrency`` at a time, on the event loop.

    The async twin of the hook's paging: the same pager, and one adaptive limiter for every
    request of the read (a 429 halves the number in flight).

    :param CompanyTicketPager pager: a fresh pager.
    :param AsyncTransport transport: the async transport.
    :param RequestRetries retries: the back-off and the count, applied to each page request.
    :return: every ticket, oldest first, each once.
    """
    from functools import partial

    from airflow_provider_clubcollect.limiter import AdaptiveLimiter
    from airflow_provider_clubcollect.transport import call_async

    limiter = AdaptiveLimiter(pager.max_in_flight)
    send = partial(limiter.asend, transport.send)
    tickets: list[CompanyTicket] = []
    pending: dict[asyncio.Task[Any], ApiRequest] = {}
    try:
        while not pager.done:
            while len(pending) < pager.max_in_flight and (request := pager.next_request()) is not None:
                pending[asyncio.create_task(call_async(request, retries, send))] = request
            if not pending:  # pragma: no cover - a pager bug; never spin
                raise ClubCollectError(f"Paging stalled at {pager.progress()}.")
            answered, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in answered:
                pager.accept(pending.pop(task), task.result())
            while (page := pager.pop()) is not None:
                tickets.extend(page)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return tickets


#: How far behind the newest reported ticket a ticket that shows up late is still recognised as
#: new (clock skew between the triggerer and ClubCollect, writes that become visible late).
LOOKBACK = timedelta(minutes=10)
#: The most reported tickets remembered above the watermark; older ones fold into the watermark.
#: Bounds the stored state to about 35 KB, under Airflow's 64 KB default for a stored value.
MAX_RECENT = 300
#: The asset state store's key column holds 512 characters.
_MAX_STATE_KEY = 512
_STATE_VERSION = 1

#: A reported ticket in the state: (due, date, ticket_id), ISO dates in UTC with microseconds, so
#: that comparing the strings compares the moments.
_Key = tuple[str, str, str]


class _Poll(NamedTuple):
    """One read of a company's unanswered list: what the shared poll hands every watcher."""

    polled_at: datetime
    tickets: tuple[CompanyTicket, ...]


class _Reported(NamedTuple):
    """
    What a watcher has reported: every key at or below ``watermark``, and each key in ``recent``.

    ``recent`` holds the keys reported above the watermark within :data:`LOOKBACK` of the newest:
    this tells apart tickets that share a date (or arrive a little late) which a plain watermark
    would skip.  Older keys fold into the watermark, and at most :data:`MAX_RECENT` are kept.
    """

    watermark: _Key | None = None
    recent: frozenset[_Key] = frozenset()

    def __contains__(self, key: object) -> bool:
        # Not a tuple's membership: whether the key was reported, at or below the watermark or recent.
        return key in self.recent or (
            self.watermark is not None and isinstance(key, tuple) and cast("_Key", key) <= self.watermark
        )

    def add(self, *keys: _Key) -> _Reported:
        """This state with ``keys`` reported, folded to stay within its bound."""
        recent = sorted(self.recent.union(keys))
        try:
            horizon = _iso(datetime.fromisoformat(recent[-1][0]) - LOOKBACK)
        except OverflowError:  # the newest is within LOOKBACK of the calendar's start: nothing is older
            horizon = ""
        folded = recent[: max(0, len(recent) - MAX_RECENT)]
        folded += [k for k in recent[len(folded) :] if k[0] < horizon]
        if not folded:
            return _Reported(self.watermark, frozenset(recent))
        watermark = max(folded[-1], self.watermark) if self.watermark is not None else folded[-1]
        return _Reported(watermark, frozenset(k for k in recent if k > watermark))

    def to_json(self) -> dict[str, Any]:
        """The state as plain JSON, for the asset state store."""
        return {
            "version": _STATE_VERSION,
            "watermark": list(self.watermark) if self.watermark else None,
            "recent": [list(k) for k in sorted(self.recent)],
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> _Reported:
        """
        Read a state written by :meth:`to_json`.

        :param value: the stored value, ``None`` when nothing was stored yet.
        :param where: the store key, for the error.
        :raises ClubCollectError: for a value this version cannot read; reporting everything again
            would flood the DAG, so the watcher stops instead.
        """
        if value is None:
            return cls()
        if isinstance(value, dict) and value.get("version") == _STATE_VERSION:
            try:
                watermark = value["watermark"]
                return cls(
                    _as_key(watermark) if watermark is not None else None,
                    frozenset(_as_key(k) for k in value["recent"]),
                )
            except (KeyError, TypeError, ValueError):
                pass
        raise ClubCollectError(
            f"The asset state store holds an unreadable record under {where!r} ({value!r:.200}); "
            "delete that key to start over (tickets awaiting an answer will then be reported again)."
        )


def _as_key(value: Any) -> _Key:
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(part, str) for part in value):
        raise ValueError(value)
    return (value[0], value[1], value[2])


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


class UnansweredTicketsEventTrigger(BaseEventTrigger):
    """
    Fire one event per ticket that newly awaits an answer, to schedule DAGs through an asset watcher.

    Use it in an ``AssetWatcher`` so that a DAG runs when a member writes (or, with
    ``unanswered_for_seconds``, when a thread has waited too long), instead of a sensor holding a
    DAG run open or a schedule that polls.  It polls the company's unanswered list every
    ``poll_interval`` seconds, with the request layer, retries, pager and selection of
    :class:`UnansweredTicketsTrigger`, and only reads (GET).

    Each event's payload is ``{"ticket_id", "invoice_id", "ticket"}`` (the CompanyTicket dict), in
    the order the tickets became due (oldest first).  Use ``ticket_id`` to de-duplicate: Airflow may
    fold several events into one DAG run, and may deliver one again.

    **Reported once.**  A ticket becomes *due* when it awaits an answer and its thread has been
    unanswered for longer than ``unanswered_for_seconds``: at ``max(date, unanswered since +
    unanswered_for_seconds)``; without ``unanswered_for_seconds``, at its date.  The watcher
    remembers what it reported by that moment, not by the ticket's date, so a thread that only now
    has waited long enough is reported even when its tickets are older than ones reported before.
    The record is a watermark (every ``(due, date, ticket_id)`` at or below it counts as reported)
    plus the tickets reported above it within :data:`LOOKBACK` of the newest, which tells apart
    tickets sharing a date and tickets that show up a little late; older entries fold into the
    watermark and at most :data:`MAX_RECENT` are kept, so the record stays small however long the
    watcher runs.  A ticket that appears more than :data:`LOOKBACK` behind the newest reported one
    may be taken as reported.  On Airflow 3.3+ the record lives in the asset state store that the
    triggerer injects (``self.asset_state_store``), under a key naming the connection, company and
    ``unanswered_for_seconds``, and is written **before** each event is yielded: a triggerer
    restart repeats no event, and a crash between the write and the event being stored loses at
    most that one event.  Without a store (Airflow 3.2, or a watcher on several assets) the record
    is kept in memory, and a restart reports every ticket that awaits an answer again.

    **Shared poll.**  Watchers with the same connection, company, ``poll_interval``,
    ``max_concurrency`` and ``backoff`` share one poll loop in the triggerer (Airflow 3.3+):
    one read of the list per interval, which each watcher filters with its own
    ``unanswered_for_seconds``, ``since`` and record.

    **Stays up.**  429s, 5xx and lost connections are retried within a poll; when a poll still
    fails, it logs a warning and polls again after a back-off.  What cannot heal ends the watcher
    with a :class:`~airflow_provider_clubcollect.exceptions.ClubCollectError` in the triggerer's
    log: a refused key (401/403), an unknown company (404), a missing connection or one that fails
    validation.

    .. seealso:: :doc:`/event-driven` and the example DAG
        ``example_dags/clubcollect_acknowledge_new_messages.py``.

    :param str company_id: the company.
    :param float | None unanswered_for_seconds: report a ticket once its thread has been unanswered for longer
        than this many seconds; ``None`` to report each ticket as soon as it awaits an answer.
    :param str | None since: ISO 8601 date; only tickets dated after it are reported.  ``None`` reports every
        ticket awaiting an answer at the first poll.
    :param float poll_interval: seconds between two polls.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``; the key is read
        from it in the triggerer and never serialized.
    :param int max_concurrency: pages in flight at once, at least 1 (default 8); a 429 halves it for the
        rest of that poll.
    :param Backoff | dict | None backoff: the waits between retries of each request, a
        :class:`~airflow_provider_clubcollect.retry.Backoff` or its fields as a dict (how it is
        serialized); the connection's ``max_retries`` sets the count, as in the hook.
    """

    def __init__(
        self,
        company_id: str,
        *,
        unanswered_for_seconds: float | None = None,
        since: str | None = None,
        poll_interval: float = 60.0,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        backoff: Backoff | Mapping[str, Any] | None = None,
    ) -> None:
        if not AIRFLOW_V_3_0_PLUS:
            from airflow import __version__

            raise ClubCollectError(
                f"{type(self).__name__} needs Airflow 3.0 or later (asset watchers); this is Airflow {__version__}. "
                "On Airflow 2.11 wait with UnansweredTicketsSensor(deferrable=True) instead."
            )
        super().__init__()
        self.company_id = check_id(company_id, "company_id")
        if unanswered_for_seconds is not None:
            unanswered_for_seconds = _seconds(unanswered_for_seconds, "unanswered_for_seconds", minimum_inclusive=True)
        self.unanswered_for_seconds = unanswered_for_seconds
        self.since = None if since is None else _iso_since(since)
        self.poll_interval = _seconds(poll_interval, "poll_interval", minimum_inclusive=False)
        if not isinstance(clubcollect_conn_id, str) or not clubcollect_conn_id.strip():
            raise ClubCollectValidationError(
                f"clubcollect_conn_id must be a connection id, got {clubcollect_conn_id!r}."
            )
        self.clubcollect_conn_id = clubcollect_conn_id
        self.max_concurrency = check_int(max_concurrency, "max_concurrency")
        self.backoff = as_backoff(backoff)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the configuration: the connection id, never the key, and no state."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "company_id": self.company_id,
                "unanswered_for_seconds": self.unanswered_for_seconds,
                "since": self.since,
                "poll_interval": self.poll_interval,
                "clubcollect_conn_id": self.clubcollect_conn_id,
                "max_concurrency": self.max_concurrency,
                "backoff": _plain(self.backoff),
            },
        )

    def shared_stream_key(self) -> Hashable:
        """
        Watchers reading the same list the same way share one poll (Airflow 3.3+).

        .. seealso:: :doc:`/event-driven`
        """
        return (
            type(self).__qualname__,
            self.clubcollect_conn_id,
            self.company_id,
            self.poll_interval,
            self.max_concurrency,
            self.backoff,
        )

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[_Poll]:
        """
        Poll the company's unanswered list forever, yielding each read.

        Runs once per group of watchers sharing a :meth:`shared_stream_key`, so it uses only the
        fields that make up the key.  Failures that may heal are logged and polled through; the
        others end the stream, and every watcher of the group, with a ``ClubCollectError``.

        :param dict[str, Any] kwargs: one watcher's serialized keyword arguments.

        .. seealso:: :doc:`/event-driven`
        """
        watcher = cls(**kwargs)
        backoff = watcher.backoff or Backoff()
        async with _shared_connection(watcher.clubcollect_conn_id) as connection:
            failures = 0
            while True:
                polled_at = datetime.now(timezone.utc)
                try:
                    async with connection.transport() as transport:
                        pager = CompanyTicketPager(
                            watcher.company_id, STATUS_UNANSWERED, max_concurrency=watcher.max_concurrency
                        )
                        retries = RequestRetries(backoff, transport.settings.max_retries)
                        with observability.span("poll", trigger=cls.__name__):
                            tickets = await read_pages(pager, transport, retries)
                except (ClubCollectServerError, ClubCollectRateLimitError) as exc:
                    failures += 1
                    observability.count("watcher.polls.failed", conn_id=watcher.clubcollect_conn_id)
                    wait = max(watcher.poll_interval, backoff.delay(failures))
                    watcher.log.warning(
                        "Watching company %r: the poll failed (%s); still watching, next poll in %.1f s.",
                        watcher.company_id,
                        exc.message,
                        wait,
                    )
                    await asyncio.sleep(wait)
                    continue
                except Exception as exc:
                    raise watcher._stopped(exc) from exc
                failures = 0
                observability.count("watcher.polls.ok", conn_id=watcher.clubcollect_conn_id)
                yield _Poll(polled_at, tuple(tickets))
                await asyncio.sleep(watcher.poll_interval)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """
        Turn each read of the list into one event per ticket newly due, recording it first.

        :param AsyncIterator shared_stream: the reads (:class:`_Poll`) from :meth:`open_shared_stream`.

        .. seealso:: :doc:`/event-driven`
        """
        store = self._store()
        reported: _Reported | None = None if store is not None else _Reported()
        async for poll in shared_stream:
            if reported is None:
                loaded = await self._load(store)
                if loaded is None:
                    continue  # the store could not be read: report nothing until it can
                reported, store = loaded
            fresh = await _off_loop(len(poll.tickets), self._newly_due, poll, reported)
            if not fresh:
                continue
            self.log.info("%d tickets of company %r newly await an answer.", len(fresh), self.company_id)
            updated = reported.add(*(key for key, _ticket in fresh))
            if not await self._save(store, updated):
                continue  # not recorded, so not reported: the next poll tries again
            reported = updated
            observability.count("watcher.tickets_reported", len(fresh), conn_id=self.clubcollect_conn_id)
            oldest = fresh[0][1]
            yield TriggerEvent(
                {
                    "ticket_id": oldest["ticket_id"],
                    "invoice_id": oldest["invoice_id"],
                    "ticket": oldest,
                    "tickets": [ticket for _key, ticket in fresh],
                }
            )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll on its own and yield an event per ticket newly due (the path without a shared poll)."""
        async for event in self.filter_shared_stream(self.open_shared_stream(self.serialize()[1])):
            yield event

    @property
    def state_key(self) -> str:
        """The asset state store key of this watcher's record: connection, company, ``unanswered_for_seconds``."""
        wait = "any" if self.unanswered_for_seconds is None else f"{self.unanswered_for_seconds:g}s"
        key = f"clubcollect.unanswered:{self.clubcollect_conn_id}:{self.company_id}:{wait}"
        if len(key) <= _MAX_STATE_KEY:
            return key
        return f"clubcollect.unanswered:{hashlib.sha256(key.encode()).hexdigest()}"

    def _newly_due(self, poll: _Poll, reported: _Reported) -> list[tuple[_Key, dict[str, Any]]]:
        unanswered_for = None if self.unanswered_for_seconds is None else timedelta(seconds=self.unanswered_for_seconds)
        since = None if self.since is None else to_utc(self.since)
        fresh = []
        for due, ticket in awaiting_answer_due(poll.tickets, unanswered_for, poll.polled_at):
            date = ticket_date(ticket)
            key = (_iso(due), _iso(date), str(ticket["ticket_id"]))
            if (since is None or date > since) and key not in reported:
                fresh.append((key, ticket))
        return fresh

    def _store(self) -> Any:
        # Airflow 3.3+ injects the store into a watcher's trigger; 3.2 has no such attribute.
        store = getattr(self, "asset_state_store", None)
        if store is None:
            self.log.warning(
                "No asset state store (Airflow before 3.3, or not run by a watcher): what this watcher "
                "reported is kept in memory, so a triggerer restart reports every waiting ticket again."
            )
        return store

    async def _load(self, store: Any) -> tuple[_Reported, Any] | None:
        """The record and the store to keep it in, or ``None`` when the store cannot be read now."""
        try:
            value = await store.aget(self.state_key)
        except ValueError as exc:
            # The accessor of a trigger watching several assets cannot tell which one to use.
            self.log.warning("Cannot use the asset state store (%s); keeping the record in memory.", exc)
            return _Reported(), None
        except Exception as exc:
            self.log.warning("Could not read the asset state store (%s); trying again at the next poll.", exc)
            return None
        return _Reported.from_json(value, self.state_key), store

    async def _save(self, store: Any, reported: _Reported) -> bool:
        if store is None:
            return True
        try:
            await store.aset(self.state_key, reported.to_json())
        except Exception as exc:
            self.log.warning("Could not write the asset state store (%s); trying again at the next poll.", exc)
            observability.count("watcher.store_writes.failed", conn_id=self.clubcollect_conn_id)
            return False
        observability.count("watcher.store_writes.ok", conn_id=self.clubcollect_conn_id)
        return True

    def _stopped(self, exc: Exception) -> ClubCollectError:
        """The error that ends the watcher; logged here too, so that the triggerer's log shows it."""
        if isinstance(exc, ClubCollectError):
            cls, reason, status, code = type(exc), exc.message, exc.status_code, exc.error_code
        else:  # a missing connection raises Airflow's own error: name it, bounded
            cls, reason, status, code = ClubCollectError, f"{type(exc).__name__}: {exc!s:.500}", None, None
        message = (
            f"{type(self).__name__} stopped watching company {self.company_id!r}: {reason} "
            "Waiting will not heal this: fix the cause."
        )
        self.log.error("%s", message)
        observability.count("watcher.stopped", conn_id=self.clubcollect_conn_id)
        return cls(message, status_code=status, error_code=code)


def _seconds(value: Any, name: str, *, minimum_inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        number = None
    else:
        number = float(value)
    if number is None or number < 0 or (number == 0 and not minimum_inclusive):
        allowed = "zero or more" if minimum_inclusive else "more than zero"
        raise ClubCollectValidationError(f"{name} must be a number of seconds, {allowed}, got {value!r}.")
    return number


def _iso_since(value: Any) -> str:
    moment = parse_iso_datetime(value)
    if moment is None:
        raise ClubCollectValidationError(
            f"since must be an ISO 8601 date such as '2026-06-01T00:00:00+00:00', got {shown(value)}."
        )
    return _iso(moment)


def _plain(backoff: Backoff | None) -> dict[str, float] | None:
    """A back-off as plain numbers, for a trigger's serialized arguments."""
    return None if backoff is None else dataclasses.asdict(backoff)
