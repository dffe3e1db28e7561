"""A small typed client of the sandbox's control API (``/_sandbox/...``), for tests and scripts.

It talks HTTP, so it works against a sandbox in another process (the CLI) as well as one in the
same process.  It imports nothing of the provider: only ``requests``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType


class SandboxControlError(RuntimeError):
    """
    The control API refused a call.

    :param message: what was asked and what the sandbox answered.
    :param status_code: the HTTP status of the answer.
    """

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class SandboxClient:
    """
    Seed, inspect and break a running sandbox through its control API.

    :param control_url: the control API's URL, e.g. ``http://127.0.0.1:8765/_sandbox``
        (:attr:`SandboxServer.control_url <.server.SandboxServer.control_url>`).
    :param timeout: seconds per call.
    """

    def __init__(self, control_url: str, timeout: float = 30.0) -> None:
        self.control_url = control_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.control_url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- data -----------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, now: datetime | str | None = None) -> list[dict[str, Any]]:
        """
        Forget everything (data, counters, request log, faults); then load seed data if asked.

        :param seed: the seed, or ``None`` to leave the sandbox empty.
        :param now: the time seed dates are relative to; the server's current time when ``None``.
        :return: the companies, as :meth:`companies` returns them.
        """
        body: dict[str, Any] = {"seed": seed}
        if now is not None:
            body["now"] = _date(now)
        result: list[dict[str, Any]] = self._call("POST", "/reset", body)["companies"]
        return result

    def companies(self) -> list[dict[str, Any]]:
        """Each company: ``{"company_id", "name", "invoices", "tickets": {status: n}}``."""
        result: list[dict[str, Any]] = self._call("GET", "/companies")
        return result

    def add_company(self, company_id: str, name: str | None = None) -> dict[str, Any]:
        """
        Add a company (an empty one has no tickets in any status, but is not unknown).

        :param company_id: its ID.
        :param name: a human name, for printing only.
        """
        body: dict[str, Any] = {"company_id": company_id}
        if name is not None:
            body["name"] = name
        result: dict[str, Any] = self._call("POST", "/companies", body)
        return result

    def add_invoice(
        self,
        invoice_id: str,
        company_id: str,
        tickets: Iterable[Mapping[str, Any]] = (),
        archived: bool | None = None,
    ) -> dict[str, Any]:
        """
        Add an invoice with tickets, creating the company if needed (appends to an existing invoice).

        :param invoice_id: its ID.
        :param company_id: its company.
        :param tickets: ``{"message", "sender", "date", optional "ticket_id"}`` each; ``date``
            may be a datetime or an ISO 8601 string (naive means UTC).  See :func:`ticket`.
        :param archived: when given, whether the thread is archived afterwards.
        :return: the invoice, as :meth:`invoice` returns it.
        """
        body: dict[str, Any] = {
            "invoice_id": invoice_id,
            "company_id": company_id,
            "tickets": [_ticket_json(item) for item in tickets],
        }
        if archived is not None:
            body["archived"] = archived
        result: dict[str, Any] = self._call("POST", "/invoices", body)
        return result

    def add_tickets(self, invoice_id: str, tickets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """
        Append tickets to an invoice, as a member answering would; reopens an archived thread.

        :param invoice_id: the invoice.
        :param tickets: as for :meth:`add_invoice`.
        :return: the invoice, as :meth:`invoice` returns it.
        """
        body = {"tickets": [_ticket_json(item) for item in tickets]}
        result: dict[str, Any] = self._call("POST", f"/invoices/{_quote(invoice_id)}/tickets", body)
        return result

    def state(self) -> dict[str, Any]:
        """Everything: ``{"companies": [id, ...], "company_names": {...}, "invoices": {id: view}}``."""
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        """
        One invoice: ``{"invoice_id", "company_id", "status", "archived", "assigned_to_support",
        "tickets", "tickets_created", "actions": {"archive": n, "assign_to_support": n}}``.

        :param invoice_id: the invoice.
        :raises SandboxControlError: with status 404 when the sandbox has no such invoice.
        """
        result: dict[str, Any] = self._call("GET", f"/invoices/{_quote(invoice_id)}")
        return result

    # --- the request log ------------------------------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        """
        The API requests received, oldest first: ``{"method", "path", "query", "user_agent",
        "content_type", "accept", "authorized", "api_key_in_query", "status", "fault", "at", "in_flight"}``
        each; ``at`` is when it arrived (seconds since the epoch), ``in_flight`` counts the API requests
        being served then, itself included.
        """
        result: list[dict[str, Any]] = self._call("GET", "/requests")
        return result

    def clear_requests(self) -> None:
        """Forget the API requests received."""
        self._call("DELETE", "/requests")

    def change_list(
        self,
        after_reads: int = 1,
        *,
        answer: Iterable[str] = (),
        archive: Iterable[str] = (),
        write: Iterable[str] = (),
    ) -> None:
        """:meth:`.SandboxState.change_list` over HTTP (``POST /_sandbox/list_changes``)."""
        body = {"after_reads": after_reads, "answer": list(answer), "archive": list(archive), "write": list(write)}
        self._call("POST", "/list_changes", body)

    # --- faults -----------------------------------------------------------------------------------

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """
        Replace the fault settings; what is left out means no such fault.

        :param settings: ``latency_ms``, ``error_rate``, ``rate_limit_rate``, ``retry_after``,
            ``drop_rate``, ``apply_then_drop_rate``, ``random_seed``, ``script`` (a list of
            ``{"fault": ..., optional "method", "path_regex", ...}``), and a budget per API key:
            ``rate_limit_per_second`` and ``rate_limit_burst`` (a token bucket; beyond it 429 with
            ``Retry-After``), as the control API takes them.
        :return: the settings now in force.
        """
        result: dict[str, Any] = self._call("POST", "/faults", settings)
        return result

    def faults(self) -> dict[str, Any]:
        """The fault settings in force, with what is left of the script."""
        result: dict[str, Any] = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> None:
        """Stop injecting faults."""
        self._call("DELETE", "/faults")

    # --- plumbing -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self._session.request(
            method, f"{self.control_url}{path}", json=dict(body) if body is not None else None, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise SandboxControlError(
                f"{method} {path} on the ClubCollect sandbox failed: HTTP {response.status_code} {response.text[:500]}",
                response.status_code,
            )
        return response.json() if response.content else None


def ticket(message: str, sender: str, date: datetime | str, ticket_id: str | None = None) -> dict[str, Any]:
    """
    A ticket for :meth:`SandboxClient.add_invoice` and :meth:`SandboxClient.add_tickets`.

    :param message: the text.
    :param sender: ``CUSTOMER`` or ``COMPANY``.
    :param date: when it was written (a datetime, naive means UTC, or an ISO 8601 string).
    :param ticket_id: its ID; the sandbox makes one when ``None``.
    """
    data: dict[str, Any] = {"message": message, "sender": sender, "date": _date(date)}
    if ticket_id is not None:
        data["ticket_id"] = ticket_id
    return data


def _ticket_json(item: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(item)
    if isinstance(data.get("date"), datetime):
        data["date"] = _date(data["date"])
    return data


def _date(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
