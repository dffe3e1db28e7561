"""Thread semantics (*last activity*, *unanswered since*, *awaits an answer*), one module for every selection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from itertools import takewhile
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from airflow_provider_clubcollect.exceptions import ClubCollectServerError, ClubCollectValidationError, shown
from airflow_provider_clubcollect.wire import SENDER_COMPANY, SENDER_CUSTOMER, check_id, parse_iso_datetime

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Thread", "awaiting_answer", "group_threads", "select_threads", "to_utc"]


def ticket_date(ticket: Mapping[str, Any]) -> datetime:
    """A ticket's ``date`` in UTC; ``ClubCollectServerError`` naming the ticket when it has none readable."""
    date = parse_iso_datetime(ticket.get("date"))
    if date is None:
        got = f"a 'date' that is not ISO 8601 ({shown(ticket['date'])})" if "date" in ticket else "no 'date'"
        raise ClubCollectServerError(
            f"The API gave ticket {shown(ticket.get('ticket_id'))} with {got}: its thread cannot be judged by time."
        )
    return date


def to_utc(value: datetime | str | None, context: Mapping[str, Any] | None = None) -> datetime:
    """A moment in UTC, now for ``None`` or ``""``; in a run (``context``) one rendered to nothing is its run_after."""
    if context is not None and isinstance(value, str) and value.strip() in ("", "None"):
        run = context.get("dag_run")
        # Airflow 2.11's runs have no run_after: the end of the data interval is the same moment.
        value = getattr(run, "run_after", None) or getattr(run, "data_interval_end", None)
    return parse_moment(value or None, "reference_time") or datetime.now(timezone.utc)


def parse_moment(value: datetime | str | None, name: str) -> datetime | None:
    """A datetime or ISO 8601 string (naive means UTC) in UTC, ``None`` for ``None``; else an error naming ``name``."""
    moment = None if value is None else parse_iso_datetime(value)
    if value is not None and moment is None:
        raise ClubCollectValidationError(
            f"{name} must be a datetime or an ISO 8601 string such as '2026-06-01T00:00:00+00:00', got {shown(value)}."
        )
    return moment


def is_literal(value: Any) -> bool:
    """Whether a templated value is final when the DAG is parsed: no Jinja and no ``XComArg``, nor in a list."""
    if isinstance(value, str):
        return not any(marker in value for marker in ("{{", "{%", "{#"))
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, Mapping) or is_literal(item) for item in value)
    return not hasattr(value, "resolve")


def check_literal(check: Callable[..., object], value: Any, *args: Any) -> None:
    """Run the run-time ``check`` at parse time unless ``value`` is ``None`` or waits for its run (templated)."""
    if value is not None and is_literal(value):
        check(value, *args)


def check_duration(value: Any, name: str) -> timedelta:
    """Check a duration parameter such as ``inactive_for``: a ``timedelta`` of zero or more."""
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ClubCollectValidationError(f"{name} must be a timedelta of zero or more, got {shown(value)}.")
    return value


def human_duration(duration: timedelta) -> str:
    """A duration as people write it: ``30 days`` rather than ``30 days, 0:00:00``."""
    days, (hours, rest) = duration.days, divmod(duration.seconds, 3600)
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if rest:
        parts.append(f"{hours}:{rest // 60:02d}:{rest % 60:02d}")
    elif hours or not parts:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    return " ".join(parts)


class Thread(NamedTuple):
    """The tickets of one invoice, oldest first."""

    invoice_id: str
    tickets: tuple[dict[str, Any], ...]

    @property
    def last_activity(self) -> datetime:
        """The newest ticket's date."""
        return ticket_date(self.tickets[-1])

    def awaiting_answer(self) -> list[dict[str, Any]]:
        """The CUSTOMER tickets newer than the newest COMPANY ticket, oldest first."""
        newer = takewhile(lambda ticket: ticket.get("sender") != SENDER_COMPANY, reversed(self.tickets))
        return [ticket for ticket in newer if ticket.get("sender") == SENDER_CUSTOMER][::-1]

    @property
    def unanswered_since(self) -> datetime | None:
        """The date of the oldest CUSTOMER ticket after the newest COMPANY ticket, if any."""
        waiting = self.awaiting_answer()
        return ticket_date(waiting[0]) if waiting else None

    def _waited(self, now: datetime, more_than: timedelta | None, at_most: timedelta | None, unanswered: bool) -> bool:
        """Whether idle (``unanswered``: waiting) more than ``more_than`` and at most ``at_most`` (``None``: any)."""
        since = self.unanswered_since if unanswered else self.last_activity
        age = None if since is None else now - since
        return age is not None and (more_than is None or age > more_than) and (at_most is None or age <= at_most)


def group_threads(tickets: Iterable[Mapping[str, Any]]) -> list[Thread]:
    """Group company tickets (with ``invoice_id``) into threads, sorted by invoice ID."""
    by_invoice: dict[str, list[dict[str, Any]]] = {}
    for ticket in tickets:
        invoice_id = ticket.get("invoice_id") if isinstance(ticket, Mapping) else None
        if not isinstance(invoice_id, str):
            raise ClubCollectServerError(f"The API gave a company ticket without an invoice ID: {shown(ticket)}.")
        by_invoice.setdefault(invoice_id, []).append(dict(ticket))
    return [
        Thread(invoice_id, tuple(sorted(items, key=ticket_date))) for invoice_id, items in sorted(by_invoice.items())
    ]


def select_threads(
    tickets: Iterable[Mapping[str, Any]],
    more_than: timedelta | None,
    now: datetime,
    at_most: timedelta | None = None,
    *,
    unanswered: bool = False,
) -> list[str]:
    """Sorted invoices whose thread was idle (``unanswered``: waiting) more than ``more_than``, at most ``at_most``."""
    return [t.invoice_id for t in group_threads(tickets) if t._waited(now, more_than, at_most, unanswered)]


def waiting_summary(count: int, company_id: str, unanswered_for: timedelta | None, min_tickets: int) -> str:
    """The poll line of the sensor and its trigger: how many tickets wait, how long, and whether that is enough."""
    age = f" for more than {human_duration(unanswered_for)}" if unanswered_for is not None else ""
    tickets = f"{count} ticket{' awaits' if count == 1 else 's await'} an answer{age} in company {company_id!r}"
    if count >= min_tickets:
        return f"{tickets}: at least {min_tickets} wanted, done."
    return f"{tickets}; waiting until at least {min_tickets} do."


def awaiting_answer(
    tickets: Iterable[Mapping[str, Any]], unanswered_for: timedelta | None, now: datetime
) -> list[dict[str, Any]]:
    """The tickets that await an answer (in threads unanswered for more than ``unanswered_for``), oldest first."""
    waiting = [ticket for _, ticket in awaiting_answer_due(tickets, unanswered_for, now)]
    return sorted(waiting, key=lambda t: (ticket_date(t), str(t.get("ticket_id"))))


def invoice_ids_from(value: Any) -> list[str]:
    """Sorted, de-duplicated IDs from ID strings or ticket dicts, lists of them (mapped outputs) flattened."""
    items = _flat(value)
    if items is None:
        raise ClubCollectValidationError(
            f"invoice_ids must be a list of invoice ID strings or of ticket dicts, "
            f"got {type(value).__name__} {shown(value)}."
        )
    ids: set[str] = set()
    for item in items:
        if isinstance(item, Mapping):
            if "invoice_id" not in item:
                raise ClubCollectValidationError(f"invoice_ids: a ticket dict without 'invoice_id': {shown(item)}.")
            item = item["invoice_id"]
        ids.add(check_id(item, "an invoice ID in invoice_ids"))
    return sorted(ids)


def ticket_dicts(value: Any) -> list[dict[str, Any]]:
    """The whole tickets in a rendered ``invoice_ids``: dicts with ``invoice_id``, ``sender`` and ``date``."""
    wanted = {"invoice_id", "sender", "date"}
    return [dict(item) for item in _flat(value) or [] if isinstance(item, Mapping) and wanted <= item.keys()]


def _flat(value: Any) -> list[Any] | None:
    """The items of a list, lists in it (a mapped upstream's output) flattened one level; ``None`` if no list."""

    def listed(item: Any) -> bool:
        return isinstance(item, Iterable) and not isinstance(item, (str, bytes, Mapping))

    return [inner for item in value for inner in (item if listed(item) else (item,))] if listed(value) else None


def awaiting_answer_due(
    tickets: Iterable[Mapping[str, Any]], unanswered_for: timedelta | None, now: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """The tickets that await an answer, each with when it became due (``max(date, since + unanswered_for)``)."""
    due = [
        (max(ticket_date(ticket), cast("datetime", thread.unanswered_since) + (unanswered_for or timedelta(0))), ticket)
        for thread in group_threads(tickets)
        if thread._waited(now, unanswered_for, None, True)
        for ticket in thread.awaiting_answer()
    ]
    return sorted(due, key=lambda item: (item[0], ticket_date(item[1]), str(item[1].get("ticket_id"))))
