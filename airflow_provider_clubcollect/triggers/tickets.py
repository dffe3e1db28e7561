"""The triggers that wait, in the triggerer, for tickets awaiting an answer.

:class:`UnansweredTicketsTrigger` serves the deferrable sensor, :class:`UnansweredTicketsEventTrigger`
asset watchers.  Both run one poll loop over the hook's async path, and only read (GET).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
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
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.retry import as_backoff
from airflow_provider_clubcollect.selection import (
    awaiting_answer,
    awaiting_answer_due,
    ticket_date,
    to_utc,
    waiting_summary,
)
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_clubcollect.wire import STATUS_UNANSWERED, check_id, check_int, parse_iso_datetime

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Mapping, Sequence

    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.wire import CompanyTicket

__all__ = [
    "UnansweredTicketsEventTrigger",
    "UnansweredTicketsTrigger",
]

_T = TypeVar("_T")

#: Event ``status`` values of :class:`UnansweredTicketsTrigger`.
EVENT_SUCCESS = "success"
EVENT_ERROR = "error"
EVENT_TIMEOUT = "timeout"
#: Up to this many tickets, a poll selects on the loop (well under a millisecond); more go to a thread.
INLINE_TICKETS = 500


class _Poll(NamedTuple):
    """One read of a company's unanswered list."""

    polled_at: datetime
    tickets: tuple[CompanyTicket, ...]


class _Polling(BaseTrigger):
    """The poll loop both triggers share: what they read, through which connection, how often."""

    company_id: str
    clubcollect_conn_id: str
    backoff: Backoff | None
    max_concurrency: int

    async def _polls(self, interval: float, *, heal: bool) -> AsyncGenerator[_Poll, None]:
        """Read the company's unanswered list every ``interval`` s; with ``heal``, poll through 5xx and 429."""
        failures = 0
        async with ClubCollectHook(self.clubcollect_conn_id, backoff=self.backoff) as hook:
            while True:
                polled_at = datetime.now(timezone.utc)
                try:
                    with observability.span("poll", trigger=type(self).__name__):
                        tickets = await hook.aget_company_tickets(
                            self.company_id, STATUS_UNANSWERED, max_concurrency=self.max_concurrency
                        )
                except (ClubCollectServerError, ClubCollectRateLimitError) as exc:
                    if not heal:
                        raise
                    failures += 1
                    observability.count("watcher.polls.failed", conn_id=self.clubcollect_conn_id)
                    wait = max(interval, hook.backoff.delay(failures))
                    self.log.warning(
                        "Watching company %r: the poll failed (%s); still watching, next poll in %.1f s.",
                        self.company_id,
                        exc.message,
                        wait,
                    )
                    await asyncio.sleep(wait)
                    continue
                failures = 0
                if heal:
                    observability.count("watcher.polls.ok", conn_id=self.clubcollect_conn_id)
                yield _Poll(polled_at, tuple(tickets))
                await asyncio.sleep(interval)


class UnansweredTicketsTrigger(_Polling):
    """
    Poll a company's unanswered tickets until at least ``min_tickets`` await an answer.

    Fires one event: ``{"status": "success", "tickets": [...]}`` (oldest first), ``{"status":
    "error", "error_class", "message", "status_code", "error_code"}`` when the API fails after
    every retry, or ``{"status": "timeout", "message"}`` once ``timeout_at`` has passed.

    :param str company_id: the company.
    :param int min_tickets: how many tickets must await an answer.
    :param float | None unanswered_for_seconds: count only threads unanswered for longer than this.
    :param str | None reference_time: a fixed ISO 8601 "now"; ``None`` for the time of each poll.
    :param float poke_interval: seconds between two polls.
    :param str clubcollect_conn_id: the connection; the key is read in the triggerer, never serialized.
    :param Backoff | dict | None backoff: the waits between retries of a request, or its fields as a dict.
    :param str | None timeout_at: ISO 8601 moment at which a timeout event fires; ``None`` for never.
    :param int max_concurrency: pages in flight at once, at least 1.

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
        left = None
        if self.timeout_at is not None:
            left = max(0.0, (to_utc(self.timeout_at) - datetime.now(timezone.utc)).total_seconds())
        try:
            # A poll only reads, so cutting one short at the deadline loses nothing.
            event = {"status": EVENT_SUCCESS, "tickets": await asyncio.wait_for(self._until_enough(), left)}
        except asyncio.TimeoutError:
            event = {"status": EVENT_TIMEOUT, "message": f"No {self.min_tickets} tickets by {self.timeout_at}."}
        except Exception as exc:  # an error event, so that the sensor fails as a poke does
            event = {"status": EVENT_ERROR, **_as_error(exc).to_payload()}
        yield TriggerEvent(event)

    async def _until_enough(self) -> list[dict[str, Any]]:
        async with contextlib.aclosing(self._polls(self.poke_interval, heal=False)) as polls:
            async for poll in polls:
                waiting = await self.select(poll.tickets)
                if len(waiting) >= self.min_tickets:
                    return waiting
                self.log.info(
                    "%s Next poll in %g s.",
                    waiting_summary(len(waiting), self.company_id, self.unanswered_for_seconds, self.min_tickets),
                    self.poke_interval,
                )
        raise AssertionError("unreachable: the poll loop never ends")  # pragma: no cover

    async def select(self, tickets: Sequence[CompanyTicket]) -> list[dict[str, Any]]:
        """
        The tickets awaiting an answer, oldest first, as the poking sensor selects them.

        :param Sequence[CompanyTicket] tickets: the company's unanswered list.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        unanswered_for = None if self.unanswered_for_seconds is None else timedelta(seconds=self.unanswered_for_seconds)
        return await _off_loop(len(tickets), awaiting_answer, tickets, unanswered_for, to_utc(self.reference_time))


def _as_error(exc: Exception) -> ClubCollectError:
    """``exc`` as a ``ClubCollectError``: Airflow's own errors named, their text bounded."""
    return (
        exc
        if isinstance(exc, ClubCollectError)
        else ClubCollectError(f"{type(exc).__name__}: {shorten(str(exc), 500)}")
    )


async def _off_loop(size: int, func: Callable[..., _T], *args: Any) -> _T:
    """Run selection over ``size`` tickets inline when small, in a thread when large (so as not to hold the loop)."""
    if size <= INLINE_TICKETS:
        return func(*args)
    return await asyncio.to_thread(func, *args)


#: How far behind the newest reported ticket a late ticket is still recognised as new (clock skew, late writes).
LOOKBACK = timedelta(minutes=10)
#: The most reported tickets remembered above the watermark: about 35 KB, under Airflow's 64 KB for a value.
MAX_RECENT = 300
#: The asset state store's key column holds 512 characters.
_MAX_STATE_KEY = 512
_STATE_VERSION = 1

#: A reported ticket: (due, date, ticket_id), ISO dates in UTC with microseconds so that strings compare as moments.
_Key = tuple[str, str, str]


class _Reported(NamedTuple):
    """What a watcher reported: every key at or below ``watermark``, and each key in ``recent`` (see docs)."""

    watermark: _Key | None = None
    recent: frozenset[_Key] = frozenset()

    def __contains__(self, key: object) -> bool:
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
        """Read a state written by :meth:`to_json`; refuse one it cannot read rather than report everything again."""
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


class UnansweredTicketsEventTrigger(_Polling, BaseEventTrigger):
    """
    Fire an event per poll that finds tickets newly awaiting an answer, for an ``AssetWatcher``.

    The payload is ``{"ticket_id", "invoice_id", "ticket", "tickets"}``: the oldest ticket newly due
    and every one, oldest first.  A ticket is reported once, across polls and (Airflow 3.3+, through
    the asset state store) triggerer restarts; watchers differing only in their selection share one
    poll.  5xx, 429 and lost connections are polled through; what cannot heal (a refused key, an
    unknown company, a bad connection) ends the watcher with a ``ClubCollectError``.

    :param str company_id: the company.
    :param float | None unanswered_for_seconds: report a ticket once its thread has been unanswered
        for longer than this; ``None`` as soon as it awaits an answer.
    :param str | None since: ISO 8601; only tickets dated after it are reported.
    :param float poll_interval: seconds between two polls.
    :param str clubcollect_conn_id: the connection; the key is read in the triggerer, never serialized.
    :param int max_concurrency: pages in flight at once, at least 1.
    :param Backoff | dict | None backoff: the waits between retries of a request, or its fields as a dict.

    .. seealso:: :doc:`/event-driven`
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
        Poll the company's unanswered list forever, once per group of watchers sharing a key.

        :param dict[str, Any] kwargs: one watcher's serialized keyword arguments.

        .. seealso:: :doc:`/event-driven`
        """
        watcher = cls(**kwargs)
        try:
            async for poll in watcher._polls(watcher.poll_interval, heal=True):
                yield poll
        except Exception as exc:
            raise watcher._stopped(exc) from exc

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """
        Turn each read of the list into an event of the tickets newly due, recorded first.

        :param AsyncIterator shared_stream: the reads from :meth:`open_shared_stream`.

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
        """Poll on its own (without a shared poll) and yield the events."""
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
        except ValueError as exc:  # a trigger watching several assets: the accessor cannot tell which
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
        """The error that ends the watcher, logged too so that the triggerer's log shows it."""
        error = _as_error(exc)
        message = (
            f"{type(self).__name__} stopped watching company {self.company_id!r}: {error.message} "
            "Waiting will not heal this: fix the cause."
        )
        self.log.error("%s", message)
        observability.count("watcher.stopped", conn_id=self.clubcollect_conn_id)
        return type(error)(message, status_code=error.status_code, error_code=error.error_code)


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
