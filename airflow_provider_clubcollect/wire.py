"""The ClubCollect Tickets API on the wire: names, input checks, requests and response parsing (no I/O)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, cast
from urllib.parse import quote

from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
    ClubCollectValidationError,
    is_finite,
    shorten,
    shown,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CompanyTicket",
    "Page",
    "Ticket",
]

BASE_PATH = "/api"
STATUS_UNANSWERED = "unanswered"
STATUS_ANSWERED = "answered"
STATUS_ARCHIVED = "archived"
STATUSES = (STATUS_UNANSWERED, STATUS_ANSWERED, STATUS_ARCHIVED)
SENDER_CUSTOMER = "CUSTOMER"
SENDER_COMPANY = "COMPANY"
ACTION_ARCHIVE = "archive"
ACTION_ASSIGN_TO_SUPPORT = "assign_to_support"
MAX_PAGE_SIZE = 100
# The codes the API documents for its 404s; a 404 without one comes from something else.
ERROR_INVALID_INVOICE_ID = "invalid_invoice_id"
ID_RULE = "must not be empty, '.' or '..', start or end with whitespace, or contain '/', '\\' or control characters"


class Ticket(TypedDict):
    """A ticket as the API returns it: one message of an invoice's thread."""

    ticket_id: str
    message: str
    #: ``CUSTOMER`` (the member) or ``COMPANY`` (the club, or ClubCollect on its behalf).
    sender: str
    #: ISO 8601 date and time.
    date: str


class CompanyTicket(Ticket):
    """A ticket from a company's list: it also names its invoice."""

    invoice_id: str


class Page(TypedDict):
    """The ``page`` object of a company's ticket list."""

    page_number: int
    page_size: int
    total_entries: int
    total_pages: int


def check_int(value: object, name: str, *, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"of at least {low}" if high is None else f"from {low} to {high}"
        raise ClubCollectValidationError(f"{name} must be an integer {allowed}, got {shown(value)}.")
    return value


def check_number(value: object, name: str, *, zero: bool = False) -> float:
    if is_finite(value) and (value >= 0 if zero else value > 0):
        return float(value)
    allowed = "0 or more" if zero else "above 0"
    raise ClubCollectValidationError(f"{name} must be a finite number {allowed}, got {shown(value)}.")


def check_id(value: object, name: str) -> str:
    """An invoice or company ID: a string that cannot change the request path (any format otherwise)."""
    if not isinstance(value, str):
        raise ClubCollectValidationError(f"{name} must be a string, got {type(value).__name__} {shown(value)}.")
    # A padded ID is a bug upstream to be seen, not another ID; HTTP clients collapse '.' and '..' out of a path.
    if value != value.strip() or value in ("", ".", "..") or re.search(r"[/\\\x00-\x1f\x7f]", value):
        raise ClubCollectValidationError(f"{name} {ID_RULE}, got {shown(value)}.")
    return value


def check_status(status: object) -> str:
    if status not in STATUSES:
        raise ClubCollectValidationError(f"Unknown ticket status {shown(status)}; allowed: {', '.join(STATUSES)}.")
    return str(status)


def check_message(message: object) -> str:
    if not isinstance(message, str) or not message.strip():
        raise ClubCollectValidationError(
            f"message must be a non-empty string with text other than whitespace, got {shown(message)}."
        )
    return message


class ApiRequest(NamedTuple):
    """One call to the API as data, so that sync and async transports send it the same way."""

    method: str
    path: str
    description: str
    params: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    idempotent: bool = True
    expect_body: bool = True
    not_found_code: str = ERROR_INVALID_INVOICE_ID

    def __repr__(self) -> str:  # without the body: a message is a member's or a club's text
        return f"ApiRequest({self.method} {self.path}: {self.description})"


def _invoice_path(invoice_id: str) -> str:
    # safe="": the ID stays exactly one path segment.
    return f"v2/invoices/{quote(check_id(invoice_id, 'invoice_id'), safe='')}/tickets"


def get_invoice_tickets_request(invoice_id: str) -> ApiRequest:
    return ApiRequest("GET", _invoice_path(invoice_id), f"fetch tickets of invoice {shown(invoice_id)}")


def create_ticket_request(invoice_id: str, message: str) -> ApiRequest:
    body = {"message": check_message(message)}
    description = f"create a ticket on invoice {shown(invoice_id)}"
    return ApiRequest("POST", _invoice_path(invoice_id), description, body=body, idempotent=False)


def invoice_action_request(invoice_id: str, action: str) -> ApiRequest:
    path, verb = f"{_invoice_path(invoice_id)}/actions/{action}", action.replace("_", " ")
    return ApiRequest("POST", path, f"{verb} tickets of invoice {shown(invoice_id)}", expect_body=False)


def company_tickets_page_request(
    company_id: str, status: str, page_number: int = 1, page_size: int = MAX_PAGE_SIZE
) -> ApiRequest:
    path = f"v2/companies/{quote(check_id(company_id, 'company_id'), safe='')}/tickets/{check_status(status)}"
    page_number = check_int(page_number, "page_number")
    page_size = check_int(page_size, "page_size", high=MAX_PAGE_SIZE)
    return ApiRequest(
        "GET",
        path,
        f"fetch page {page_number} of {status} tickets of company {shown(company_id)}",
        params=(("page_number", str(page_number)), ("page_size", str(page_size))),
        not_found_code="not_found",
    )


def parse_iso_datetime(value: object) -> datetime | None:
    """An ISO 8601 date and time as an aware UTC datetime (naive means UTC), or ``None`` when it is not one."""
    parsed: object = value
    if isinstance(value, str):
        text = re.sub(r"[Zz]$", "+00:00", value.strip())  # Python 3.10's fromisoformat does not read Z
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            import pendulum  # the rest of ISO 8601: week dates, ordinal dates, basic format

            with contextlib.suppress(Exception):  # a string pendulum cannot read stays a string: None below
                parsed = pendulum.parse(text[:100], tz="UTC")
    if not isinstance(parsed, datetime):  # also a duration, or a time without a date
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # the same moment in UTC falls outside the calendar: take its edge
        edge = datetime.min if parsed.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=timezone.utc)


class RawResponse(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:  # without the body, which may quote tickets
        return f"RawResponse(status={self.status}, {len(self.body)} bytes)"


def parse_response(request: ApiRequest, response: RawResponse, *, attempts: int = 1) -> Any:
    """Turn an answer into the API's JSON value, or raise the error it stands for."""
    if not 200 <= response.status < 300:
        raise error_for(request, response, attempts=attempts)
    if not request.expect_body:
        return None
    try:
        return json.loads(response.body.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise _malformed(request, f"a body that is not JSON: {_snippet(response.body)}") from None


def parse_tickets(request: ApiRequest, payload: Any, *, company: bool = False) -> list[Any]:
    tickets = payload.get("tickets") if isinstance(payload, dict) else None
    if not isinstance(tickets, list):
        raise _malformed(request, "no 'tickets' list")
    for ticket in tickets:
        parse_ticket(request, ticket, company=company)
    return tickets


def parse_ticket(request: ApiRequest, payload: Any, *, company: bool = False) -> Ticket:
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("ticket_id"), str)
        and (not company or isinstance(payload.get("invoice_id"), str))
    ):  # no generator: this runs for every ticket of every page
        raise _malformed(request, f"a ticket without ticket_id{' and invoice_id' if company else ''}: {shown(payload)}")
    return cast("Ticket", payload)


def parse_page_info(request: ApiRequest, payload: Any) -> Page:
    page = payload.get("page") if isinstance(payload, dict) else None
    names = Page.__annotations__
    if not isinstance(page, dict) or any(type(page.get(name)) is not int for name in names):
        raise _malformed(request, f"no valid 'page' object: {shown(page)}")
    return cast("Page", {name: page[name] for name in names})


def _malformed(request: ApiRequest, what: str) -> ClubCollectServerError:
    return ClubCollectServerError(
        f"Could not {request.description}: the API's answer is not what it documents ({what})."
    )


def error_for(request: ApiRequest, response: RawResponse, *, attempts: int = 1) -> ClubCollectError:
    status, code = response.status, _error_code(response.body)
    detail = f" {code}" if code else f" ({_snippet(response.body)})" if response.body else ""
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    message = f"Could not {request.description}: HTTP {status}{detail}{tried}."
    codes: dict[str, Any] = {"status_code": status, "error_code": code}
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        asked = "" if retry_after is None else f" It asked to wait {retry_after:g} s (Retry-After)."
        message += f" The API is rate limiting: wait, or lower max_concurrency.{asked}"
        return ClubCollectRateLimitError(message, retry_after=retry_after, **codes)
    cls: type[ClubCollectError] = ClubCollectError
    if status in (401, 403):
        cls, message = ClubCollectAuthError, f"{message} The API refused the key: check the API key in the connection"
        message += " (a firewall's 403 may also mean the request was blocked)."
    elif status == 404 and code == request.not_found_code:
        cls, message = ClubCollectNotFoundError, f"{message} It does not exist, or this API key may not see it."
    elif status == 404:
        cls, message = ClubCollectNotFoundError, f"{message} Expected {request.not_found_code!r} but got 404 without"
        message += " a ClubCollect error code: is the connection's base URL right (it should end in /api)?"
    elif status == 422:
        cls, message = ClubCollectValidationError, f"{message} The API refused the input."
    elif status >= 500:
        cls, message = ClubCollectServerError, f"{message} ClubCollect is failing; try again later."
    return cls(message, **codes)


def _error_code(body: bytes) -> str | None:
    """The API's code in ``{"error": code}`` or ``{"errors": code}`` (the company page documents both)."""
    with contextlib.suppress(ValueError, RecursionError):  # not JSON: no code
        payload = json.loads(body.decode("utf-8"))
        for value in (payload.get("error"), payload.get("errors")) if isinstance(payload, dict) else ():
            if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
                value = ",".join(value)
            if isinstance(value, str) and value:
                return shorten(value, 100)
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` for no finite wait."""
    import email.utils

    text = (value or "").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError):  # also an empty header
            return None
    # Finite only: "inf" is no wait anyone can schedule (nor valid JSON in a trigger event).
    return max(0.0, seconds) if seconds < math.inf else None


def _snippet(body: bytes) -> str:
    return repr(shorten(" ".join(body.decode("utf-8", "replace").split()), 120))
