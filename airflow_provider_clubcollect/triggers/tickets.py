"""The triggers that wait, in the triggerer, for tickets awaiting an answer: one poll loop, reads only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_clubcollect import observability, selection, wire
from airflow_provider_clubcollect.exceptions import (
    ClubCollectError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
    shorten,
)
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.retry import as_backoff
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence

    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.wire import CompanyTicket

__all__ = [
    "UnansweredTicketsEventTrigger",
    "UnansweredTicketsTrigger",
]

_T = TypeVar("_T")
_Poll = tuple[datetime, list["CompanyTicket"]]


# eq=False, repr=False: a trigger's identity and repr (from serialize(), so never the key) stay Airflow's.
@dataclasses.dataclass(eq=False, repr=False, kw_only=True)
class _Polling(BaseTrigger):
    company_id: str = dataclasses.field(kw_only=False)
    unanswered_for_seconds: float | None = None
    clubcollect_conn_id: str = DEFAULT_CONN_ID
    backoff: Backoff | Mapping[str, Any] | None = None  # a dict of its fields: what serialize() makes of it
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def __post_init__(self) -> None:
        super().__init__()
        self.company_id = wire.check_id(self.company_id, "company_id")
        self._unanswered_for = None
        if self.unanswered_for_seconds is not None:
            self.unanswered_for_seconds = wire.check_number(
                self.unanswered_for_seconds, "unanswered_for_seconds", zero=True
            )
            self._unanswered_for = timedelta(seconds=self.unanswered_for_seconds)
        self.clubcollect_conn_id = wire.check_id(self.clubcollect_conn_id, "clubcollect_conn_id")
        self.backoff = as_backoff(self.backoff)
        self.max_concurrency = wire.check_int(self.max_concurrency, "max_concurrency")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the constructor's arguments: the connection id, never the key, and no state."""
        return f"{type(self).__module__}.{type(self).__qualname__}", dataclasses.asdict(self)

    async def _polls(self, interval: float, *, heal: bool) -> AsyncGenerator[_Poll, None]:
        """Read the company's unanswered list every ``interval`` s; with ``heal``, poll through 5xx and 429."""
        failures = 0
        async with ClubCollectHook(self.clubcollect_conn_id, backoff=cast("Backoff | None", self.backoff)) as hook:
            while True:
                polled_at = datetime.now(timezone.utc)
                try:
                    with observability.span("poll", trigger=type(self).__name__):
                        tickets = await hook.aget_company_tickets(
                            self.company_id, wire.STATUS_UNANSWERED, max_concurrency=self.max_concurrency
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
                else:
                    failures, wait = 0, interval
                    if heal:
                        observability.count("watcher.polls.ok", conn_id=self.clubcollect_conn_id)
                    yield polled_at, tickets
                await asyncio.sleep(wait)


@dataclasses.dataclass(eq=False, repr=False, kw_only=True)
class UnansweredTicketsTrigger(_Polling):
    """
    Poll a company's unanswered tickets until at least ``min_tickets`` await an answer; fire one event.

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

    min_tickets: int = 1
    reference_time: str | None = None
    poke_interval: float = 60.0
    timeout_at: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.min_tickets = wire.check_int(self.min_tickets, "min_tickets")
        self._reference = selection.parse_moment(self.reference_time, "reference_time")
        self.poke_interval = wire.check_number(self.poke_interval, "poke_interval", zero=True)
        self._deadline = selection.parse_moment(self.timeout_at, "timeout_at")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until enough tickets await an answer, then fire one event."""
        left = None
        if self._deadline is not None:
            left = max(0.0, (self._deadline - datetime.now(timezone.utc)).total_seconds())
        try:
            # A poll only reads, so cutting one short at the deadline loses nothing.
            event = {"status": "success", "tickets": await asyncio.wait_for(self._until_enough(), left)}
        except asyncio.TimeoutError:
            event = {"status": "timeout", "message": f"No {self.min_tickets} tickets by {self.timeout_at}."}
        except Exception as exc:  # an error event, so that the sensor fails as a poke does
            event = {"status": "error", **_as_error(exc).to_payload()}
        yield TriggerEvent(event)

    async def _until_enough(self) -> list[dict[str, Any]]:
        async with contextlib.aclosing(self._polls(self.poke_interval, heal=False)) as polls:
            async for _polled_at, tickets in polls:
                found = await self.select(tickets)
                if len(found) >= self.min_tickets:
                    break
                summary = selection.waiting_summary(len(found), self.company_id, self._unanswered_for, self.min_tickets)
                self.log.info("%s Next poll in %g s.", summary, self.poke_interval)
        return found

    async def select(self, tickets: Sequence[CompanyTicket]) -> list[dict[str, Any]]:
        """
        The tickets awaiting an answer, oldest first, as the poking sensor selects them.

        :param Sequence[CompanyTicket] tickets: the company's unanswered list.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        now = self._reference or datetime.now(timezone.utc)
        return await _off_loop(selection.awaiting_answer, tickets, self._unanswered_for, now)


def _as_error(exc: Exception) -> ClubCollectError:
    if isinstance(exc, ClubCollectError):
        return exc
    return ClubCollectError(f"{type(exc).__name__}: {shorten(str(exc), 500)}")


async def _off_loop(func: Callable[..., _T], tickets: Sequence[CompanyTicket], *args: Any) -> _T:
    """Inline up to 500 tickets (well under a millisecond: cheaper than a thread hop), in a thread above."""
    return func(tickets, *args) if len(tickets) <= 500 else await asyncio.to_thread(func, tickets, *args)


LOOKBACK = timedelta(minutes=10)
MAX_RECENT = 300


def _iso(moment: datetime) -> str:  # fixed width: keys starting with it compare as moments
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


class _Reported(NamedTuple):
    """What a watcher reported: keys ``"<due> <date> <ticket_id>"`` up to ``watermark``, and those in ``recent``."""

    watermark: str = ""
    recent: frozenset[str] = frozenset()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key <= self.watermark or key in self.recent)

    def add(self, keys: Iterable[str]) -> _Reported:
        recent = sorted(self.recent.union(keys))
        newest = datetime.fromisoformat(recent[-1].split()[0])
        horizon = _iso(newest - min(LOOKBACK, newest - datetime.min.replace(tzinfo=timezone.utc)))  # no overflow
        cut = max(len(recent) - MAX_RECENT, sum(key < horizon for key in recent))
        watermark = max(self.watermark, recent[cut - 1]) if cut else self.watermark
        return _Reported(watermark, frozenset(key for key in recent[cut:] if key > watermark))

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "watermark": self.watermark, "recent": sorted(self.recent)}

    @classmethod
    def from_json(cls, value: Any, where: str) -> _Reported:
        if value is None:
            return cls()
        if isinstance(value, dict) and value.get("version") == 1:
            watermark, recent = value.get("watermark"), value.get("recent")
            if isinstance(watermark, str) and isinstance(recent, list) and all(isinstance(k, str) for k in recent):
                return cls(watermark, frozenset(recent))
        raise ClubCollectError(
            f"The asset state store holds an unreadable record under {where!r} ({value!r:.200}); "
            "delete that key to start over (tickets awaiting an answer will then be reported again)."
        )


@dataclasses.dataclass(eq=False, repr=False, kw_only=True)
class UnansweredTicketsEventTrigger(_Polling, BaseEventTrigger):
    """
    Fire an event per poll that finds tickets newly awaiting an answer (each reported once), for an ``AssetWatcher``.

    :param str company_id: the company.
    :param float | None unanswered_for_seconds: report a ticket once its thread is unanswered for longer than this.
    :param str | None since: ISO 8601; only tickets dated after it are reported.
    :param float poll_interval: seconds between two polls.
    :param str clubcollect_conn_id: the connection; the key is read in the triggerer, never serialized.
    :param int max_concurrency: pages in flight at once, at least 1.
    :param Backoff | dict | None backoff: the waits between retries of a request, or its fields as a dict.

    .. seealso:: :doc:`/event-driven`
    """

    since: str | None = None
    poll_interval: float = 60.0

    def __post_init__(self) -> None:
        if not AIRFLOW_V_3_0_PLUS:
            from airflow import __version__

            raise ClubCollectError(
                f"{type(self).__name__} needs Airflow 3.0 or later (asset watchers); this is Airflow {__version__}. "
                "On Airflow 2.11 wait with UnansweredTicketsSensor(deferrable=True) instead."
            )
        super().__post_init__()
        moment = selection.parse_moment(self.since, "since")
        self.since = None if moment is None else _iso(moment)
        self.poll_interval = wire.check_number(self.poll_interval, "poll_interval")

    def shared_stream_key(self) -> Hashable:
        """
        Watchers reading the same list the same way share one poll (Airflow 3.3+).

        .. seealso:: :doc:`/event-driven`
        """
        config = (self.clubcollect_conn_id, self.company_id, self.poll_interval, self.max_concurrency, self.backoff)
        return type(self).__qualname__, *config

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
        except Exception as exc:  # the triggerer logs it, with the trigger's name
            error = _as_error(exc)
            message = (
                f"{cls.__name__} stopped watching company {watcher.company_id!r}: {error.message} "
                "Waiting will not heal this: fix the cause."
            )
            observability.count("watcher.stopped", conn_id=watcher.clubcollect_conn_id)
            raise type(error)(message, status_code=error.status_code, error_code=error.error_code) from exc

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """
        Turn each read of the list into an event of the tickets newly due, recorded first.

        :param AsyncIterator shared_stream: the reads from :meth:`open_shared_stream`.

        .. seealso:: :doc:`/event-driven`
        """
        store: Any = getattr(self, "asset_state_store", None)
        reported = None if store is not None else self._in_memory("No asset state store (Airflow < 3.3, or no watcher)")
        async for polled_at, tickets in shared_stream:
            if reported is None:
                try:
                    value = await store.aget(self.state_key)
                except ValueError as exc:  # a trigger watching several assets: the accessor cannot tell which
                    store, reported = None, self._in_memory(f"Cannot use the asset state store ({exc})")
                except Exception as exc:
                    self.log.warning("Could not read the asset state store (%s); trying again at the next poll.", exc)
                    continue  # report nothing until what was reported is known
                else:
                    reported = _Reported.from_json(value, self.state_key)
            fresh = await _off_loop(self._newly_due, tickets, polled_at, reported)
            if not fresh:
                continue
            self.log.info("%d tickets of company %r newly await an answer.", len(fresh), self.company_id)
            updated = reported.add(key for key, _ticket in fresh)
            if store is not None:
                try:
                    await store.aset(self.state_key, updated.to_json())
                except Exception as exc:
                    self.log.warning("Could not write the asset state store (%s); trying again at the next poll.", exc)
                    observability.count("watcher.store_writes.failed", conn_id=self.clubcollect_conn_id)
                    continue  # not recorded, so not reported
                observability.count("watcher.store_writes.ok", conn_id=self.clubcollect_conn_id)
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
        if len(key) <= 512:  # the length of the asset state store's key column
            return key
        return f"clubcollect.unanswered:{hashlib.sha256(key.encode()).hexdigest()}"

    def _in_memory(self, why: str) -> _Reported:
        self.log.warning("%s: what this watcher reports is kept in memory; a triggerer restart reports it again.", why)
        return _Reported()

    def _newly_due(self, tickets: list[CompanyTicket], polled_at: datetime, reported: _Reported) -> list[Any]:
        due = selection.awaiting_answer_due(tickets, self._unanswered_for, polled_at)
        keyed = [(f"{_iso(moment)} {_iso(selection.ticket_date(t))} {t['ticket_id']}", t) for moment, t in due]
        # The ticket's date is the key's second part; ``since`` is a fixed-width UTC moment too.
        return [(key, t) for key, t in keyed if key.split()[1] > (self.since or "") and key not in reported]
