"""The sandbox's in-memory ClubCollect: companies, invoices, ticket threads, the request log and faults.

Everything goes through one :class:`threading.Lock`: the web app runs on uvicorn's event loop
thread while tests read and seed the same object from their own thread.  Methods hold the lock
only for short, non-blocking sections and return copies (JSON-ready dicts), never live objects.

Thread semantics (SPEC section 1): the tickets of one invoice form a thread.  It is ``archived``
after the archive action until a new ticket arrives; otherwise it is ``unanswered`` when its
newest ticket is from CUSTOMER and ``answered`` when from COMPANY.  An invoice without tickets
has no thread and appears in no company list.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.sandbox.errors import SandboxInputError, SandboxNotFoundError
from airflow_provider_clubcollect.sandbox.faults import FaultSettings, parse_fault_settings
from airflow_provider_clubcollect.sandbox.seed import seed_state

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow_provider_clubcollect.sandbox.faults import FaultDecision


# The API's names, as its page states them (the Tickets API page, SPEC section 1), written out here
# rather than imported from the provider's wire module: the sandbox is the API's stand-in, so a
# wrong name in the provider fails against it.
#: The API's base path (``https://app.clubcollect.com/api``).
BASE_PATH = "/api"
STATUSES = ("unanswered", "answered", "archived")
SENDERS = ("CUSTOMER", "COMPANY")
ACTIONS = ("archive", "assign_to_support")
#: The largest ``page_size`` the API permits.
MAX_PAGE_SIZE = 100


def utc_now() -> datetime:
    """The current UTC time to the second, the precision of the API's example dates."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def format_date(value: datetime) -> str:
    """
    A date as the API writes it: ISO 8601 with a UTC offset, e.g. ``2026-05-01T10:00:00+00:00``.

    :param value: an aware datetime (naive ones are taken as UTC).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def parse_date(value: object, name: str = "date") -> datetime:
    """
    Read a date given to the control API: an ISO 8601 string or a datetime; naive means UTC.

    :param value: the date.
    :param name: what it is, for the error message.
    :raises SandboxInputError: when it is not a date.
    """
    parsed = value
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read a trailing "Z"
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
    if not isinstance(parsed, datetime):
        raise SandboxInputError(f"{name} must be an ISO 8601 date, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00: the same moment in UTC is before the calendar
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def new_id() -> str:
    """A fresh ID shaped like ClubCollect's: 40 lowercase hex characters."""
    return secrets.token_hex(20)


@dataclass(frozen=True)
class TicketSpec:
    """
    A ticket to put into the sandbox through the control API or the seed.

    :param message: the text.
    :param sender: ``CUSTOMER`` or ``COMPANY``.
    :param date: when it was written.
    :param ticket_id: its ID; a fresh one when ``None``.
    """

    message: str
    sender: str
    date: datetime
    ticket_id: str | None = None

    @classmethod
    def from_json(cls, data: object) -> TicketSpec:
        """
        Read a ticket from JSON ``{"message", "sender", "date", optional "ticket_id"}``.

        :param data: the decoded JSON object (a :class:`TicketSpec` is returned unchanged).
        :raises SandboxInputError: naming the bad field.
        """
        if isinstance(data, TicketSpec):
            return data
        if not isinstance(data, Mapping):
            raise SandboxInputError(f"a ticket must be an object, got {data!r}")
        message = data.get("message")
        if not isinstance(message, str):
            raise SandboxInputError(f"ticket message must be a string, got {message!r}")
        sender = data.get("sender")
        if sender not in SENDERS:
            raise SandboxInputError(f"ticket sender must be one of {', '.join(SENDERS)}, got {sender!r}")
        ticket_id = data.get("ticket_id")
        if ticket_id is not None and (not isinstance(ticket_id, str) or not ticket_id):
            raise SandboxInputError(f"ticket ticket_id must be a non-empty string, got {ticket_id!r}")
        return cls(
            message=message,
            sender=str(sender),
            date=parse_date(data.get("date"), "ticket date"),
            ticket_id=ticket_id,
        )


@dataclass
class _Ticket:
    ticket_id: str
    message: str
    sender: str
    date: datetime
    #: Arrival order, to order tickets written in the same second the way they arrived.
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "message": self.message,
            "sender": self.sender,
            "date": format_date(self.date),
        }


@dataclass
class _Invoice:
    invoice_id: str
    company_id: str
    tickets: list[_Ticket] = field(default_factory=list)
    archived: bool = False
    assigned_to_support: bool = False
    tickets_created: int = 0
    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))

    def ordered(self) -> list[_Ticket]:
        return sorted(self.tickets, key=lambda ticket: (ticket.date, ticket.seq))

    def status(self) -> str | None:
        if not self.tickets:
            return None
        if self.archived:
            return "archived"
        newest = max(self.tickets, key=lambda ticket: (ticket.date, ticket.seq))
        return "unanswered" if newest.sender == "CUSTOMER" else "answered"

    def to_json(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "company_id": self.company_id,
            "status": self.status(),
            "archived": self.archived,
            "assigned_to_support": self.assigned_to_support,
            "tickets": [ticket.to_json() for ticket in self.ordered()],
            "tickets_created": self.tickets_created,
            "actions": dict(self.actions),
        }


class SandboxState:
    """
    The in-memory ClubCollect behind the sandbox's API, safe to use from several threads.

    :param api_key: the only API key the sandbox accepts; a fresh random one when ``None``.
    """

    def __init__(self, api_key: str | None = None) -> None:
        self._lock = threading.Lock()
        self._api_key = api_key if api_key is not None else secrets.token_hex(20)
        self._companies: dict[str, str] = {}
        self._invoices: dict[str, _Invoice] = {}
        self._ticket_ids: set[str] = set()
        self._seq = 0
        self._requests: list[dict[str, Any]] = []
        self._requests_forgotten = 0
        # API requests arrived and not yet answered, across resets: concurrency as the server sees it.
        self._in_flight = 0
        self._faults = FaultSettings()
        # Company lists are rebuilt only after a change: paging a large company then costs one
        # sort, not one per page.  Every change to tickets or thread status bumps the version.
        self._version = 0
        self._lists: dict[tuple[str, str], tuple[int, list[dict[str, Any]]]] = {}
        # Company-list requests served, and changes due at one of them (change_list).
        self._list_reads = 0
        self._list_changes: list[tuple[int, dict[str, list[str]]]] = []

    @property
    def api_key(self) -> str:
        """The API key the sandbox accepts."""
        return self._api_key

    def __repr__(self) -> str:
        # The key stays out of reprs, like everywhere else in the provider.
        return f"SandboxState(companies={len(self._companies)}, invoices={len(self._invoices)})"

    # --- whole state --------------------------------------------------------------------------

    def reset(self, seed: int | None = None, now: datetime | None = None) -> None:
        """
        Forget everything (data, counters, request log and faults); then load seed data if asked.

        :param seed: the seed of :func:`~.seed.seed_state`, or ``None`` to stay empty.
        :param now: the time the seed data is generated relative to; the current time when ``None``.
        """
        with self._lock:
            self._companies.clear()
            self._invoices.clear()
            self._ticket_ids.clear()
            self._seq = 0
            self._forget_requests()
            self._faults = FaultSettings()
            self._version += 1
            self._lists.clear()
            self._list_reads = 0
            self._list_changes.clear()
        if seed is not None:
            seed_state(self, seed, now=now)

    def snapshot(self) -> dict[str, Any]:
        """
        Everything the sandbox holds, as ``GET /_sandbox/state`` returns it.

        :return: ``{"companies": [id, ...], "company_names": {id: name}, "invoices": {id: view}}``
            where each view is what :meth:`invoice` returns.
        """
        with self._lock:
            return {
                "companies": list(self._companies),
                "company_names": dict(self._companies),
                "invoices": {invoice_id: invoice.to_json() for invoice_id, invoice in self._invoices.items()},
            }

    def companies(self) -> list[dict[str, Any]]:
        """
        Each company with its name and how many tickets (not threads) it has in each status.

        :return: ``[{"company_id", "name", "invoices", "tickets": {status: n}}, ...]`` in the
            order the companies were added.
        """
        with self._lock:
            summary: dict[str, dict[str, Any]] = {
                company_id: {
                    "company_id": company_id,
                    "name": name,
                    "invoices": 0,
                    "tickets": dict.fromkeys(STATUSES, 0),
                }
                for company_id, name in self._companies.items()
            }
            for invoice in self._invoices.values():
                entry = summary[invoice.company_id]
                entry["invoices"] += 1
                status = invoice.status()
                if status is not None:
                    entry["tickets"][status] += len(invoice.tickets)
            return list(summary.values())

    # --- seeding, through the control API -------------------------------------------------------

    def add_company(self, company_id: str, name: str | None = None) -> dict[str, Any]:
        """
        Add a company (or rename an existing one).

        :param company_id: its ID.
        :param name: a human name, for printing only; the API has no use for it.
        :return: ``{"company_id", "name"}``.
        """
        _check_id(company_id, "company_id")
        with self._lock:
            if name is not None or company_id not in self._companies:
                self._companies[company_id] = name if name is not None else company_id
            return {"company_id": company_id, "name": self._companies[company_id]}

    def add_invoice(
        self,
        invoice_id: str,
        company_id: str,
        tickets: Iterable[TicketSpec | Mapping[str, Any]] = (),
        archived: bool | None = None,
    ) -> dict[str, Any]:
        """
        Add an invoice with tickets, creating the company when needed; an existing invoice gets
        the tickets appended.

        :param invoice_id: its ID.
        :param company_id: the company it belongs to; must match for an existing invoice.
        :param tickets: tickets to append, as :class:`TicketSpec` or JSON objects.
        :param archived: when given, the archived flag after the tickets are appended (appending
            tickets reopens an archived thread otherwise).
        :return: the invoice, as :meth:`invoice` returns it.
        :raises SandboxInputError: for a bad ticket, a duplicate ticket ID or a company mismatch.
        """
        _check_id(invoice_id, "invoice_id")
        _check_id(company_id, "company_id")
        if archived is not None and not isinstance(archived, bool):
            raise SandboxInputError(f"archived must be true or false, got {archived!r}")
        specs = [TicketSpec.from_json(ticket) for ticket in tickets]
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is not None and invoice.company_id != company_id:
                raise SandboxInputError(
                    f"invoice {invoice_id!r} belongs to company {invoice.company_id!r}, not {company_id!r}"
                )
            self._check_new_ticket_ids(specs)
            self._companies.setdefault(company_id, company_id)
            if invoice is None:
                invoice = self._invoices[invoice_id] = _Invoice(invoice_id, company_id)
            self._append(invoice, specs)
            if archived is not None:
                invoice.archived = archived
            self._version += 1
            return invoice.to_json()

    def add_tickets(self, invoice_id: str, tickets: Iterable[TicketSpec | Mapping[str, Any]]) -> dict[str, Any]:
        """
        Append tickets to an invoice, as when a member answers in ClubCollect's app.

        A new ticket reopens an archived thread.  The ``tickets_created`` counter is not touched:
        it counts tickets created through the API only.

        :param invoice_id: the invoice.
        :param tickets: the tickets, as :class:`TicketSpec` or JSON objects.
        :return: the invoice, as :meth:`invoice` returns it.
        :raises SandboxNotFoundError: when the invoice does not exist.
        :raises SandboxInputError: for a bad ticket or a duplicate ticket ID.
        """
        specs = [TicketSpec.from_json(ticket) for ticket in tickets]
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None:
                raise SandboxNotFoundError(f"no invoice {invoice_id!r}")
            self._check_new_ticket_ids(specs)
            self._append(invoice, specs)
            return invoice.to_json()

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        """
        One invoice as the control API shows it.

        :param invoice_id: the invoice.
        :return: ``{"invoice_id", "company_id", "status" (None without tickets), "archived",
            "assigned_to_support", "tickets", "tickets_created", "actions": {action: n}}``.
        :raises SandboxNotFoundError: when the invoice does not exist.
        """
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None:
                raise SandboxNotFoundError(f"no invoice {invoice_id!r}")
            return invoice.to_json()

    # --- the API's operations -------------------------------------------------------------------

    def invoice_tickets(self, invoice_id: str) -> list[dict[str, Any]] | None:
        """
        An invoice's tickets, oldest first, as ``GET /v2/invoices/{id}/tickets`` returns them.

        :param invoice_id: the invoice.
        :return: the tickets, or ``None`` when the invoice does not exist.
        """
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            return None if invoice is None else [ticket.to_json() for ticket in invoice.ordered()]

    def create_ticket(self, invoice_id: str, message: str, now: datetime | None = None) -> dict[str, Any] | None:
        """
        Post a COMPANY ticket on an invoice, as ``POST /v2/invoices/{id}/tickets`` does.

        :param invoice_id: the invoice.
        :param message: the text (the caller has validated it).
        :param now: the ticket's date (the current UTC time when ``None``), moved up to the
            thread's newest date if that is later.
        :return: the created ticket, or ``None`` when the invoice does not exist.
        """
        date = now or utc_now()
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None:
                return None
            # The API's answer is the thread's newest ticket, so the thread becomes answered even
            # when seeded tickets carry later dates (the future, or this second with microseconds).
            newest = max((ticket.date for ticket in invoice.tickets), default=date)
            spec = TicketSpec(message=message, sender="COMPANY", date=max(date, newest))
            (ticket,) = self._append(invoice, [spec])
            invoice.tickets_created += 1
            return ticket.to_json()

    def apply_action(self, invoice_id: str, action: str) -> bool:
        """
        Archive an invoice's thread or assign it to support; idempotent.

        Assigning to support only sets a flag: it does not change the thread's status.

        :param invoice_id: the invoice.
        :param action: one of :data:`ACTIONS`.
        :return: ``False`` when the invoice does not exist.
        """
        if action not in ACTIONS:
            raise SandboxInputError(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None:
                return False
            invoice.actions[action] += 1
            if action == "archive":
                invoice.archived = True
                self._version += 1
            else:
                invoice.assigned_to_support = True
            return True

    def has_invoice(self, invoice_id: str) -> bool:
        """
        Whether the sandbox holds an invoice.

        :param invoice_id: the invoice.
        """
        with self._lock:
            return invoice_id in self._invoices

    def has_company(self, company_id: str) -> bool:
        """
        Whether the sandbox holds a company.

        :param company_id: the company.
        """
        with self._lock:
            return company_id in self._companies

    def company_tickets(self, company_id: str, status: str) -> list[dict[str, Any]] | None:
        """
        Every ticket of a company's threads that are in ``status``, oldest first by (date, ticket_id).

        :param company_id: the company.
        :param status: one of :data:`STATUSES`.
        :return: CompanyTickets (tickets with ``invoice_id``), or ``None`` for an unknown company.
        """
        rows = self._company_list(company_id, status)
        return None if rows is None else [dict(row) for row in rows]

    def _company_list(self, company_id: str, status: str) -> list[dict[str, Any]] | None:
        # The cached, shared list: callers copy what they hand out.
        with self._lock:
            if company_id not in self._companies:
                return None
            cached = self._lists.get((company_id, status))
            if cached is not None and cached[0] == self._version:
                return cached[1]
            rows = [
                (ticket.date, ticket.ticket_id, invoice.invoice_id, ticket)
                for invoice in self._invoices.values()
                if invoice.company_id == company_id and invoice.status() == status
                for ticket in invoice.tickets
            ]
            rows.sort(key=lambda row: (row[0], row[1]))
            tickets = [{"invoice_id": invoice_id, **ticket.to_json()} for _, _, invoice_id, ticket in rows]
            self._lists[(company_id, status)] = (self._version, tickets)
            return tickets

    def company_tickets_page(
        self, company_id: str, status: str, page_number: int, page_size: int
    ) -> dict[str, Any] | None:
        """
        One page of :meth:`company_tickets`, as ``GET /v2/companies/{id}/tickets/{status}`` returns it.

        :param company_id: the company.
        :param status: one of :data:`STATUSES`.
        :param page_number: the page, from 1; past the last page gives an empty ``tickets`` list.
        :param page_size: tickets per page, from 1 to :data:`MAX_PAGE_SIZE`.
        :return: ``{"tickets": [...], "page": {...}}``, or ``None`` for an unknown company.
        """
        with self._lock:
            self._list_reads += 1
            due = [change for at, change in self._list_changes if at == self._list_reads]
            self._list_changes = [(at, change) for at, change in self._list_changes if at > self._list_reads]
        for change in due:
            self._apply_list_change(change)
        tickets = self._company_list(company_id, status)
        if tickets is None:
            return None
        start = (page_number - 1) * page_size
        return {
            "tickets": [dict(ticket) for ticket in tickets[start : start + page_size]],
            "page": {
                "page_number": page_number,
                "page_size": page_size,
                "total_entries": len(tickets),
                "total_pages": math.ceil(len(tickets) / page_size),
            },
        }

    # --- changes in the middle of a read ----------------------------------------------------------

    def change_list(
        self,
        after_reads: int = 1,
        *,
        answer: Sequence[str] = (),
        archive: Sequence[str] = (),
        write: Sequence[str] = (),
    ) -> None:
        """
        Change threads at a chosen moment of a read: just before the sandbox serves the
        ``after_reads``-th request for a company's list from now (1: the next one), whatever
        its company, status or page.

        Each invoice in ``answer`` gets a COMPANY reply (its thread leaves the unanswered list
        for the answered one), each in ``archive`` is archived, and each in ``write`` gets a
        CUSTOMER ticket dated after every ticket the sandbox holds: its thread joins the
        unanswered list at the end, or comes back into it with its old tickets at their old dates.

        :param after_reads: which list request from now, at least 1.
        :param answer: invoice IDs to answer.
        :param archive: invoice IDs to archive.
        :param write: invoice IDs a member writes on.
        :raises SandboxInputError: for a bad ``after_reads`` or a list that is not of strings.
        :raises SandboxNotFoundError: for an unknown invoice.
        """
        if isinstance(after_reads, bool) or not isinstance(after_reads, int) or after_reads < 1:
            raise SandboxInputError(f"after_reads must be an integer of at least 1, got {after_reads!r}")
        change = {"answer": answer, "archive": archive, "write": write}
        for name, ids in change.items():
            if isinstance(ids, str) or not all(isinstance(invoice_id, str) for invoice_id in ids):
                raise SandboxInputError(f"{name} must be a list of invoice IDs, got {ids!r}")
        with self._lock:
            unknown = sorted({i for ids in change.values() for i in ids} - set(self._invoices))
            if unknown:
                raise SandboxNotFoundError(f"no invoice {', '.join(map(repr, unknown))}")
            self._list_changes.append((self._list_reads + after_reads, {k: list(v) for k, v in change.items()}))

    def _apply_list_change(self, change: Mapping[str, list[str]]) -> None:
        for invoice_id in change["answer"]:
            self.create_ticket(invoice_id, "Beantwoord")
        for invoice_id in change["archive"]:
            self.apply_action(invoice_id, "archive")
        for invoice_id in change["write"]:
            with self._lock:
                newest = max((t.date for i in self._invoices.values() for t in i.tickets), default=utc_now())
            date = max(utc_now(), newest + timedelta(microseconds=1))
            self.add_tickets(invoice_id, [TicketSpec(message="Nog steeds?", sender="CUSTOMER", date=date)])

    # --- the request log --------------------------------------------------------------------------

    def log_request(self, entry: dict[str, Any]) -> int:
        """
        Record an API request as it arrives; its status is filled in by :meth:`set_request_status`.

        The entry gets ``in_flight``: how many API requests were being served when it arrived,
        itself included.

        :param entry: the request's description (never containing the API key).
        :return: the entry's number, to pass to :meth:`set_request_status`.
        """
        with self._lock:
            self._in_flight += 1
            self._requests.append({**entry, "in_flight": self._in_flight})
            return self._requests_forgotten + len(self._requests) - 1

    def set_request_status(self, index: int, status: int | None, fault: str | None = None) -> None:
        """
        Record the status an API request was answered with (``None`` when no answer was sent).

        Called once per request, when its answer starts (or its connection is dropped).

        :param index: what :meth:`log_request` returned.
        :param status: the HTTP status, or ``None``.
        :param fault: the injected fault, if any.
        """
        with self._lock:
            self._in_flight -= 1
            # Numbers run on across clears: a request still in flight when the log was cleared
            # (a reset between tests) must not write its status onto a newer request's entry.
            position = index - self._requests_forgotten
            if 0 <= position < len(self._requests):
                self._requests[position]["status"] = status
                if fault is not None:
                    self._requests[position]["fault"] = fault

    def requests(self) -> list[dict[str, Any]]:
        """The API requests received, oldest first (copies)."""
        with self._lock:
            return [dict(entry) for entry in self._requests]

    def clear_requests(self) -> None:
        """Forget the API requests received."""
        with self._lock:
            self._forget_requests()

    # --- faults ---------------------------------------------------------------------------------

    def set_faults(self, settings: FaultSettings | Mapping[str, Any]) -> dict[str, Any]:
        """
        Replace the fault settings (keys left out take their defaults: no fault).

        :param settings: a :class:`FaultSettings` or its JSON form.
        :return: the settings now in force, as JSON.
        :raises SandboxInputError: for bad settings.
        """
        if not isinstance(settings, FaultSettings):
            settings = parse_fault_settings(settings)
        with self._lock:
            self._faults = settings
            return settings.to_json()

    def faults(self) -> dict[str, Any]:
        """The fault settings in force, as JSON (with what is left of the script)."""
        with self._lock:
            return self._faults.to_json()

    def clear_faults(self) -> None:
        """Stop injecting faults."""
        with self._lock:
            self._faults = FaultSettings()

    def decide_fault(self, method: str, path: str, authorization: str | None = None) -> FaultDecision:
        """
        Choose the fault for one API request: the key's budget first, then a scripted fault or a random draw.

        :param method: the request's HTTP method.
        :param path: the request's path.
        :param authorization: the request's ``Authorization`` header, whose key the budget counts
            against (only a digest of it is kept); ``None`` when it had none.
        """
        key_id = ""
        if authorization is not None:
            key_id = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).hexdigest()
        with self._lock:
            return self._faults.decide(method, path, key_id)

    # --- helpers (lock held) ----------------------------------------------------------------------

    def _forget_requests(self) -> None:
        self._requests_forgotten += len(self._requests)
        self._requests.clear()

    def _check_new_ticket_ids(self, specs: Sequence[TicketSpec]) -> None:
        given = [spec.ticket_id for spec in specs if spec.ticket_id is not None]
        taken = sorted({ticket_id for ticket_id in given if ticket_id in self._ticket_ids})
        if taken or len(set(given)) != len(given):
            raise SandboxInputError(f"ticket IDs must be unique; already used or repeated: {taken or given}")

    def _append(self, invoice: _Invoice, specs: Sequence[TicketSpec]) -> list[_Ticket]:
        added = []
        for spec in specs:
            ticket_id = spec.ticket_id or new_id()
            while ticket_id in self._ticket_ids:  # a collision of random IDs: practically never
                ticket_id = new_id()
            self._seq += 1
            ticket = _Ticket(ticket_id, spec.message, spec.sender, spec.date, self._seq)
            invoice.tickets.append(ticket)
            self._ticket_ids.add(ticket_id)
            added.append(ticket)
        if added:
            # A new ticket reopens an archived thread (SPEC section 1).
            invoice.archived = False
            self._version += 1
        return added


def _check_id(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SandboxInputError(f"{name} must be a non-empty string, got {value!r}")
