"""Thread semantics: which invoices to archive, escalate, or wait on.

The tickets of one invoice form a thread.  For a thread, *last activity* is the newest ticket's
date, and *unanswered since* is the date of the oldest CUSTOMER ticket after the newest COMPANY
ticket.  A ticket *awaits an answer* when it is a CUSTOMER ticket newer than the thread's newest
COMPANY ticket.  The operators, the sensor and the trigger all select through this module, so the
sync and async paths always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_clubcollect.exceptions import ClubCollectServerError, ClubCollectValidationError, shown
from airflow_provider_clubcollect.wire import SENDER_COMPANY, SENDER_CUSTOMER, parse_iso_datetime, validate_id

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Thread",
    "awaiting_answer",
    "group_threads",
    "select_threads",
    "to_utc",
]


def ticket_date(ticket: Mapping[str, Any]) -> datetime:
    """
    A ticket's ``date`` as a timezone-aware UTC datetime.

    :param ticket: a ticket dict.
    :raises ClubCollectServerError: naming the ticket when it has no date or an unreadable one.
    """
    date = parse_iso_datetime(ticket.get("date"))
    if date is None:
        got = f"a 'date' that is not ISO 8601 ({shown(ticket['date'])})" if "date" in ticket else "no 'date'"
        raise ClubCollectServerError(
            f"The API gave ticket {shown(ticket.get('ticket_id'))} with {got}: its thread cannot be judged by time."
        )
    return date


def to_utc(value: datetime | str | None, name: str = "reference_time") -> datetime:
    """
    The reference time "now" for a selection: current UTC time, or a given (templated) one.

    :param value: ``None`` for now; a datetime or ISO 8601 string otherwise (naive means UTC).
    :param name: the parameter's name, for the error.
    :raises ClubCollectValidationError: for a string that is not ISO 8601.
    """
    if value is None or value == "":
        return datetime.now(timezone.utc)
    moment = parse_iso_datetime(value)
    if moment is None:
        raise ClubCollectValidationError(f"{name} must be a datetime or an ISO 8601 string, got {shown(value)}.")
    return moment


def run_reference_time(value: datetime | str | None, context: Mapping[str, Any]) -> datetime:
    """
    "Now" for a task's selection: the templated ``reference_time`` as rendered for this run.

    ``None`` (not given) is the current UTC time.  A template that renders to nothing (``""`` or
    ``"None"``, e.g. ``{{ dag_run.logical_date }}`` in a run triggered without a logical date, the
    default in Airflow 3) is the run's ``run_after``: the date every run has, which for a
    scheduled run is the end of its data interval.

    :param value: the rendered ``reference_time``.
    :param context: the task context, for ``dag_run``.
    :raises ClubCollectValidationError: for a string that is not ISO 8601.
    """
    if isinstance(value, str) and value.strip() in ("", "None"):
        run = context.get("dag_run")
        # Airflow 2.11's runs have no run_after: the end of the data interval is the same moment.
        return to_utc(getattr(run, "run_after", None) or getattr(run, "data_interval_end", None))
    return to_utc(value)


def is_literal(value: Any) -> bool:
    """
    Whether a templated value is final when the DAG is parsed: no Jinja and no ``XComArg``, nor in a list.

    :param value: the value as given to the operator.
    """
    if isinstance(value, str):
        return not any(marker in value for marker in ("{{", "{%", "{#"))
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, Mapping) or is_literal(item) for item in value)
    return not hasattr(value, "resolve")


def check_literal(check: Callable[..., object], value: Any, *args: Any) -> None:
    """
    Run the run-time ``check`` when the DAG is parsed already, unless ``value`` is ``None`` or waits for its run.

    :param check: the validator, such as ``wire.validate_id``.
    :param value: the value as given: a template, an ``XComArg`` or a mapped argument is checked once rendered.
    :param args: the validator's further arguments, such as the parameter's name.
    :raises ClubCollectValidationError: for a literal value the run would refuse.
    """
    if value is not None and is_literal(value):
        check(value, *args)


def check_duration(value: Any, name: str) -> timedelta:
    """
    Check a duration parameter such as ``inactive_for``.

    :param value: a ``timedelta`` of zero or more.
    :param name: the parameter's name, for the error.
    :raises ClubCollectValidationError: for anything else.
    """
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ClubCollectValidationError(f"{name} must be a timedelta of zero or more, got {shown(value)}.")
    return value


def human_duration(duration: timedelta) -> str:
    """
    A duration as people write it in a log line: ``30 days`` rather than ``30 days, 0:00:00``.

    :param duration: the duration.
    """
    days, seconds = duration.days, duration.seconds
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if seconds or not parts:
        hours, rest = divmod(seconds, 3600)
        parts.append(
            f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if rest else f"{hours} hour{'s' if hours != 1 else ''}"
        )
    return " ".join(parts)


class Thread(NamedTuple):
    """
    The tickets of one invoice, oldest first.

    :param invoice_id: the invoice.
    :param tickets: its tickets, sorted oldest first.
    """

    invoice_id: str
    tickets: tuple[dict[str, Any], ...]

    @property
    def last_activity(self) -> datetime:
        """The newest ticket's date."""
        return ticket_date(self.tickets[-1])

    def awaiting_answer(self) -> list[dict[str, Any]]:
        """The CUSTOMER tickets newer than the newest COMPANY ticket, oldest first."""
        waiting: list[dict[str, Any]] = []
        for ticket in reversed(self.tickets):
            if ticket.get("sender") == SENDER_COMPANY:
                break
            if ticket.get("sender") == SENDER_CUSTOMER:
                waiting.append(ticket)
        return waiting[::-1]

    @property
    def unanswered_since(self) -> datetime | None:
        """The date of the oldest CUSTOMER ticket after the newest COMPANY ticket, if any."""
        waiting = self.awaiting_answer()
        return ticket_date(waiting[0]) if waiting else None


def group_threads(tickets: Iterable[Mapping[str, Any]]) -> list[Thread]:
    """
    Group company tickets by invoice into threads.

    :param tickets: CompanyTicket dicts (with ``invoice_id``).
    :return: the threads, ordered by invoice ID; tickets in each oldest first (stable for equal dates).
    """
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
    """
    Invoices whose thread has been without activity (or with ``unanswered``, waiting for an answer)
    for more than ``more_than`` and at most ``at_most``.

    :param tickets: the company's tickets in one status.
    :param more_than: the exclusive lower bound of the age, or ``None`` for any.
    :param now: the reference time.
    :param at_most: the inclusive upper bound of the age, or ``None`` for any.
    :param unanswered: measure the time waiting for an answer, not the time without activity.
    :return: sorted invoice IDs.
    """
    return [t.invoice_id for t in _threads(tickets, more_than, now, at_most, unanswered=unanswered)]


def _threads(
    tickets: Iterable[Mapping[str, Any]],
    more_than: timedelta | None,
    now: datetime,
    at_most: timedelta | None = None,
    *,
    unanswered: bool = True,
) -> list[Thread]:
    """The threads whose age (since unanswered, or since last activity) is in the window."""
    chosen = []
    for thread in group_threads(tickets):
        since = thread.unanswered_since if unanswered else thread.last_activity
        age = None if since is None else now - since
        if age is not None and (more_than is None or age > more_than) and (at_most is None or age <= at_most):
            chosen.append(thread)
    return chosen


def window_rule(measure: str, more_than: timedelta | None, at_most: timedelta | None) -> str:
    """
    A window in words, for log lines: ``waited for more than 2 days and at most 5 days``.

    :param measure: the verb phrase, such as ``waited`` or ``had no activity``.
    :param more_than: the exclusive lower bound, or ``None``.
    :param at_most: the inclusive upper bound, or ``None``.
    """
    bounds = [f"more than {human_duration(more_than)}"] if more_than is not None else []
    if at_most is not None:
        bounds.append(f"at most {human_duration(at_most)}")
    return f"{measure} for {' and '.join(bounds)}" if bounds else f"{measure} for any time"


def waiting_summary(count: int, company_id: str, unanswered_for: timedelta | float | None, min_tickets: int) -> str:
    """
    The poll line of the sensor and its trigger: how many tickets wait, how long, and whether that is enough.

    :param count: the tickets awaiting an answer (for long enough).
    :param company_id: the company.
    :param unanswered_for: the age that counts (a ``timedelta`` or seconds), ``None`` for any.
    :param min_tickets: how many the sensor waits for.
    """
    if isinstance(unanswered_for, (int, float)):
        unanswered_for = timedelta(seconds=unanswered_for)
    age = f" for more than {human_duration(unanswered_for)}" if unanswered_for is not None else ""
    tickets = f"{count} ticket{' awaits' if count == 1 else 's await'}"
    if count >= min_tickets:
        return f"{tickets} an answer{age} in company {company_id!r}: at least {min_tickets} wanted, done."
    return f"{tickets} an answer{age} in company {company_id!r}; waiting until at least {min_tickets} do."


def awaiting_answer(
    tickets: Iterable[Mapping[str, Any]], unanswered_for: timedelta | None, now: datetime
) -> list[dict[str, Any]]:
    """
    The tickets that await an answer, oldest first (what the sensor returns).

    :param tickets: the company's unanswered tickets.
    :param unanswered_for: count only threads unanswered for longer than this; ``None`` for all.
    :param now: the reference time.
    """
    waiting = [ticket for t in _threads(tickets, unanswered_for, now) for ticket in t.awaiting_answer()]
    return sorted(waiting, key=lambda t: (ticket_date(t), str(t.get("ticket_id"))))


def invoice_ids_from(value: Any, name: str = "invoice_ids") -> list[str]:
    """
    Invoice IDs from a list of ID strings or of ticket dicts (their ``invoice_id``), de-duplicated.

    A list of such lists, as a mapped upstream's output arrives, is flattened one level.

    :param value: a list (or other iterable) of strings or dicts, such as a fetch operator's XCom.
    :param name: the parameter's name, for errors.
    :return: the IDs, sorted.
    :raises ClubCollectValidationError: for a string, a dict without ``invoice_id``, or an unsafe ID.
    """
    if not _is_list_like(value):
        raise ClubCollectValidationError(
            f"{name} must be a list of invoice ID strings or of ticket dicts, "
            f"got {type(value).__name__} {shown(value)}."
        )
    items = [inner for item in value for inner in (item if _is_list_like(item) else (item,))]
    ids: set[str] = set()
    for item in items:
        if isinstance(item, Mapping):
            if "invoice_id" not in item:
                raise ClubCollectValidationError(f"{name}: a ticket dict without 'invoice_id': {shown(item)}.")
            item = item["invoice_id"]
        ids.add(validate_id(item, f"an invoice ID in {name}"))
    return sorted(ids)


def ticket_dicts(value: Any) -> list[dict[str, Any]]:
    """
    The whole tickets in a rendered ``invoice_ids``: dicts with ``invoice_id``, ``sender`` and ``date``.

    :param value: strings and dicts, lists of them flattened one level (as for :func:`invoice_ids_from`).
    """
    if not _is_list_like(value):
        return []
    items = [inner for item in value for inner in (item if _is_list_like(item) else (item,))]
    return [
        dict(item) for item in items if isinstance(item, Mapping) and {"invoice_id", "sender", "date"} <= item.keys()
    ]


def _is_list_like(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))


def awaiting_answer_due(
    tickets: Iterable[Mapping[str, Any]], unanswered_for: timedelta | None, now: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """
    The tickets that await an answer, each with the moment it became due, ordered by that moment.

    A ticket becomes due when it awaits an answer and its thread has been unanswered for longer
    than ``unanswered_for``: at ``max(ticket date, unanswered since + unanswered_for)``.  Without
    ``unanswered_for`` that is the ticket's date.  The event trigger keeps its watermark on this
    moment, so that a thread which only now has waited long enough is reported even when its
    tickets are older than tickets reported before.

    :param tickets: the company's unanswered tickets.
    :param unanswered_for: count only threads unanswered for longer than this; ``None`` for all.
    :param now: the reference time.
    :return: ``(due, ticket)`` pairs, sorted by due, then date, then ticket ID.
    """
    due: list[tuple[datetime, datetime, dict[str, Any]]] = []
    for thread in _threads(tickets, unanswered_for, now):
        since = thread.unanswered_since
        assert since is not None  # _threads keeps only threads awaiting an answer
        for ticket in thread.awaiting_answer():
            date = ticket_date(ticket)
            due.append((date if unanswered_for is None else max(date, since + unanswered_for), date, ticket))
    due.sort(key=lambda item: (item[0], item[1], str(item[2].get("ticket_id"))))
    return [(moment, ticket) for moment, _, ticket in due]
