"""The ClubCollect Tickets API on the wire: its paths, names and codes, in one module.

Request building (:class:`ApiRequest` and its constructors), input validation and response
parsing live here and are shared by the sync hook and the async trigger, so that the two can
never drift apart.  This module does no I/O.  The distribution's and the connection's names
(``clubcollect``, ``clubcollect_default``, the extras) are in
:mod:`~airflow_provider_clubcollect.get_provider_info`, which Airflow reads without importing this.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypedDict, cast
from urllib.parse import quote

from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectRateLimitError,
    ClubCollectServerError,
    ClubCollectValidationError,
    finite_seconds,
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

#: The path every base URL gets when the connection names only a host.
BASE_PATH: Final = "/api"
API_VERSION_PREFIX: Final = "v2"

STATUS_UNANSWERED: Final = "unanswered"
STATUS_ANSWERED: Final = "answered"
STATUS_ARCHIVED: Final = "archived"
STATUSES: Final = (STATUS_UNANSWERED, STATUS_ANSWERED, STATUS_ARCHIVED)

SENDER_CUSTOMER: Final = "CUSTOMER"
SENDER_COMPANY: Final = "COMPANY"

ACTION_ARCHIVE: Final = "archive"
ACTION_ASSIGN_TO_SUPPORT: Final = "assign_to_support"
ACTIONS: Final = (ACTION_ARCHIVE, ACTION_ASSIGN_TO_SUPPORT)

#: The most tickets the API returns per page; the provider always asks for that many.
MAX_PAGE_SIZE: Final = 100

# Documented error codes; a 404 without its call's code comes from something else than the API.
ERROR_INVALID_INVOICE_ID: Final = "invalid_invoice_id"
ERROR_NOT_FOUND: Final = "not_found"


class Ticket(TypedDict):
    """
    A ticket as the API returns it: one message of an invoice's thread.

    Import it for your own type hints: ``from airflow_provider_clubcollect.wire import Ticket``.
    """

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


_CONTROL_CHARACTER: Final = re.compile(r"[\x00-\x1f\x7f]")


def invoice_tickets_path(invoice_id: str) -> str:
    """
    Path of an invoice's tickets, relative to the base URL.

    :param invoice_id: the invoice; validated and quoted as one path segment.
    """
    return f"{API_VERSION_PREFIX}/invoices/{_segment(invoice_id, 'invoice_id')}/tickets"


# --- validation: before any request is sent ---------------------------------------------------


def validate_id(value: object, name: str) -> str:
    """
    Check an invoice or company ID: a non-empty string that cannot change the request path.

    IDs are opaque (ClubCollect generates 40 hex characters, partners may choose others), so no
    format is enforced; only what would escape or collapse a path segment is refused.

    :param value: the ID.
    :param name: the parameter's name, for the error message.
    :return: the ID, unchanged.
    :raises ClubCollectValidationError: when the ID is not a usable path segment.
    """
    if not isinstance(value, str):
        raise ClubCollectValidationError(f"{name} must be a string, got {type(value).__name__} {shown(value)}.")
    if not value.strip():
        raise ClubCollectValidationError(f"{name} must not be empty or whitespace, got {shown(value)}.")
    if value != value.strip():
        # Refused rather than stripped: an ID is opaque, so a padded one is a bug upstream
        # (a template or a file) that should be seen, not silently turned into another ID.
        raise ClubCollectValidationError(f"{name} must not start or end with whitespace, got {shown(value)}.")
    if "/" in value or "\\" in value:
        raise ClubCollectValidationError(f"{name} must not contain '/' or '\\', got {shown(value)}.")
    if value in (".", ".."):
        raise ClubCollectValidationError(
            f"{name} must not be '.' or '..' (HTTP clients collapse them out of a path), got {value!r}."
        )
    if _CONTROL_CHARACTER.search(value):
        raise ClubCollectValidationError(f"{name} must not contain control characters, got {shown(value)}.")
    return value


def validate_status(status: object) -> str:
    """
    Check a ticket status.

    :param status: the status.
    :return: the status, unchanged.
    :raises ClubCollectValidationError: when it is not one of :data:`STATUSES`.
    """
    if status not in STATUSES:
        raise ClubCollectValidationError(f"Unknown ticket status {shown(status)}; allowed: {', '.join(STATUSES)}.")
    return str(status)


def validate_page_size(page_size: object) -> int:
    """
    Check a page size.

    :param page_size: the page size.
    :return: the page size.
    :raises ClubCollectValidationError: unless it is an integer from 1 to :data:`MAX_PAGE_SIZE`.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ClubCollectValidationError(
            f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}, got {shown(page_size)}."
        )
    return page_size


def validate_page_number(page_number: object) -> int:
    """
    Check a page number.

    :param page_number: the page number, counted from 1.
    :return: the page number.
    :raises ClubCollectValidationError: unless it is an integer of at least 1.
    """
    if isinstance(page_number, bool) or not isinstance(page_number, int) or page_number < 1:
        raise ClubCollectValidationError(f"page_number must be an integer of at least 1, got {shown(page_number)}.")
    return page_number


def validate_message(message: object) -> str:
    """
    Check a ticket message.

    :param message: the message text.
    :return: the message, unchanged.
    :raises ClubCollectValidationError: when it is not a string with some non-whitespace text.
    """
    if not isinstance(message, str) or not message.strip():
        raise ClubCollectValidationError(
            f"message must be a non-empty string with text other than whitespace, got {shown(message)}."
        )
    return message


def _segment(value: object, name: str) -> str:
    # safe="" quotes every reserved character, so an ID is always exactly one path segment.
    return quote(validate_id(value, name), safe="")


# --- requests -----------------------------------------------------------------------------------


class ApiRequest(NamedTuple):
    """
    One call to the API, described as data so that sync and async transports send it the same way.

    :param method: ``GET`` or ``POST``.
    :param path: path relative to the base URL, already quoted.
    :param description: what the call does, naming its subject, for log lines and errors.
    :param params: query parameters.
    :param body: JSON body, or ``None`` for none.
    :param idempotent: whether sending it twice has the effect of sending it once; only
        idempotent requests are retried after an answer that may have been lost.
    :param expect_body: whether success carries a JSON body (200) or none (204).
    :param not_found_code: the error code the API documents for this call's 404; a 404 without it
        comes from something else than the API, most likely a base URL that does not end in ``/api``.
    """

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


def get_invoice_tickets_request(invoice_id: str) -> ApiRequest:
    """
    Build the request that reads an invoice's tickets.

    :param invoice_id: the invoice.
    """
    return ApiRequest("GET", invoice_tickets_path(invoice_id), f"fetch tickets of invoice {shown(invoice_id)}")


def create_ticket_request(invoice_id: str, message: str) -> ApiRequest:
    """
    Build the request that posts a ticket on an invoice.  It is not idempotent.

    :param invoice_id: the invoice.
    :param message: the ticket's text.
    """
    return ApiRequest(
        "POST",
        invoice_tickets_path(invoice_id),
        f"create a ticket on invoice {shown(invoice_id)}",
        body={"message": validate_message(message)},
        idempotent=False,
    )


def invoice_action_request(invoice_id: str, action: str) -> ApiRequest:
    """
    Build the request that archives an invoice's tickets or assigns them to support.

    Both actions are idempotent, so they are retried like reads.

    :param invoice_id: the invoice.
    :param action: one of :data:`ACTIONS`.
    """
    if action not in ACTIONS:
        raise ClubCollectValidationError(f"Unknown ticket action {shown(action)}; allowed: {', '.join(ACTIONS)}.")
    verb = "archive" if action == ACTION_ARCHIVE else "assign to support"
    return ApiRequest(
        "POST",
        f"{invoice_tickets_path(invoice_id)}/actions/{action}",
        f"{verb} tickets of invoice {shown(invoice_id)}",
        body=None,
        expect_body=False,
    )


def company_tickets_page_request(
    company_id: str, status: str, page_number: int = 1, page_size: int = MAX_PAGE_SIZE
) -> ApiRequest:
    """
    Build the request that reads one page of a company's tickets in one status.

    :param company_id: the company.
    :param status: one of :data:`STATUSES`.
    :param page_number: the page, counted from 1.
    :param page_size: tickets per page, 1 to :data:`MAX_PAGE_SIZE`.
    """
    path = f"{API_VERSION_PREFIX}/companies/{_segment(company_id, 'company_id')}/tickets/{validate_status(status)}"
    page_number = validate_page_number(page_number)
    page_size = validate_page_size(page_size)
    return ApiRequest(
        "GET",
        path,
        f"fetch page {page_number} of {status} tickets of company {shown(company_id)}",
        params=(("page_number", str(page_number)), ("page_size", str(page_size))),
        not_found_code=ERROR_NOT_FOUND,
    )


def parse_iso_datetime(value: object) -> datetime | None:
    """
    An ISO 8601 date and time as an aware UTC datetime; a value without offset is taken as UTC.

    The one date reader of the provider: the API's ``date`` fields and the dates users give
    (``reference_time``, ``since``).  Callers raise the error that fits when it gives ``None``.

    :param value: a string such as ``2026-05-01T10:00:00+00:00`` (or ``...Z``), or a datetime.
    :return: the datetime, or ``None`` when the value is not one.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        # Python 3.10's fromisoformat does not read a trailing "Z".
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            # The fast path reads what the API sends; pendulum reads the rest of ISO 8601
            # (week dates, ordinal dates, basic format).
            import pendulum

            try:
                other = pendulum.parse(text[:100], tz="UTC")
            except Exception:
                return None
            if not isinstance(other, datetime):  # a duration, or a time without a date
                return None
            parsed = other
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        # At the edge of the calendar (0001-01-01T00:00+00:01, 9999-12-31T23:59-01:00) the
        # same moment in UTC falls outside it: take the calendar's first or last moment.
        edge = datetime.min if parsed.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=timezone.utc)


# --- responses ----------------------------------------------------------------------------------


class RawResponse(NamedTuple):
    """
    An HTTP answer as the transport received it, before any interpretation.

    :param status: the HTTP status code.
    :param headers: the headers, read case-insensitively (the HTTP library's own mapping, not copied).
    :param body: the body bytes.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:  # without the body, which may quote tickets
        return f"RawResponse(status={self.status}, {len(self.body)} bytes)"


def parse_response(request: ApiRequest, response: RawResponse, *, attempts: int = 1) -> Any:
    """
    Turn an answer into the API's JSON value, or raise the error it stands for.

    :param request: the request the answer belongs to.
    :param response: the answer.
    :param attempts: how many times the request was sent, for an error's message.
    :return: the decoded JSON body for a 2xx with a body, ``None`` for one without.
    :raises ClubCollectError: the subclass matching the status, naming the call and the API's code.
    """
    if 200 <= response.status < 300:
        if not request.expect_body:
            return None
        payload = decode_json(response.body)
        if payload is NOT_JSON:
            raise ClubCollectServerError(
                f"Could not {request.description}: the API answered {response.status} with a body that is "
                f"not JSON ({snippet(response.body)}).",
                status_code=response.status,
            )
        return payload
    raise error_for(request, response, attempts=attempts)


def parse_tickets(request: ApiRequest, payload: Any, *, company: bool = False) -> list[Any]:
    """
    The ``tickets`` list of an answer, checked to be what the API documents.

    :param request: the request the answer belongs to, for the error message.
    :param payload: the decoded JSON body.
    :param company: whether tickets must carry ``invoice_id`` (company lists do).
    :return: the :class:`Ticket` (``company``: :class:`CompanyTicket`) dicts.
    :raises ClubCollectServerError: when the body is not the documented shape.
    """
    tickets = payload.get("tickets") if isinstance(payload, dict) else None
    if not isinstance(tickets, list):
        raise _malformed(request, "no 'tickets' list")
    for ticket in tickets:
        # One expression, no generator: this runs for every ticket of every page.
        if not (
            isinstance(ticket, dict)
            and isinstance(ticket.get("ticket_id"), str)
            and (not company or isinstance(ticket.get("invoice_id"), str))
        ):
            required = ("ticket_id", "invoice_id") if company else ("ticket_id",)
            raise _malformed(request, f"a ticket without {' and '.join(required)}: {shown(ticket)}")
    return tickets


def parse_ticket(request: ApiRequest, payload: Any) -> Ticket:
    """
    A single ticket (the answer to creating one), checked to be what the API documents.

    :param request: the request the answer belongs to, for the error message.
    :param payload: the decoded JSON body.
    :raises ClubCollectServerError: when the body is not a ticket.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("ticket_id"), str):
        raise _malformed(request, f"not a ticket: {shown(payload)}")
    return cast("Ticket", payload)


def parse_page_info(request: ApiRequest, payload: Any) -> Page:
    """
    The ``page`` object of a company list, checked.

    :param request: the request the answer belongs to, for the error message.
    :param payload: the decoded JSON body.
    :raises ClubCollectServerError: when it is missing or not made of integers.
    """
    page = payload.get("page") if isinstance(payload, dict) else None
    names = ("page_number", "page_size", "total_entries", "total_pages")
    if not isinstance(page, dict) or any(
        isinstance(page.get(name), bool) or not isinstance(page.get(name), int) for name in names
    ):
        raise _malformed(request, f"no valid 'page' object: {shown(page)}")
    return Page(
        page_number=page["page_number"],
        page_size=page["page_size"],
        total_entries=page["total_entries"],
        total_pages=page["total_pages"],
    )


def _malformed(request: ApiRequest, what: str) -> ClubCollectServerError:
    return ClubCollectServerError(
        f"Could not {request.description}: the API's answer is not what it documents ({what})."
    )


def error_for(request: ApiRequest, response: RawResponse, *, attempts: int = 1) -> ClubCollectError:
    """
    The error an unsuccessful answer stands for.

    :param request: the request the answer belongs to.
    :param response: the answer (any status outside 2xx).
    :param attempts: how many times the request was sent, for the message.
    """
    status = response.status
    code = error_code_of(response.body)
    if code is not None:
        code = shorten(code, 100)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    detail = f"HTTP {status}" + (f" {code}" if code else "")
    if code is None and response.body:
        detail += f" ({snippet(response.body)})"
    prefix = f"Could not {request.description}: {detail}{tried}."
    cls: type[ClubCollectError] = ClubCollectError
    advice = ""
    if status in (401, 403):
        cls, advice = (
            ClubCollectAuthError,
            (
                " The API refused the key: check the API key in the connection "
                "(a firewall's 403 may also mean the request was blocked)."
            ),
        )
    elif status == 404 and code != request.not_found_code:
        # The API answers its 404s with a documented code; anything else (an HTML page, an
        # empty body, another code) is most likely a web server answering for a wrong path.
        cls, advice = (
            ClubCollectNotFoundError,
            (
                f" Expected {request.not_found_code!r} but got 404 without a ClubCollect error code: "
                "is the connection's base URL right (it should end in /api)?"
            ),
        )
    elif status == 404:
        cls, advice = ClubCollectNotFoundError, " It does not exist, or this API key may not see it."
    elif status == 422:
        cls, advice = ClubCollectValidationError, " The API refused the input."
    elif status == 429:
        # Finite only: a Retry-After of "inf" is no wait anyone can schedule (nor valid JSON in an event).
        retry_after = finite_seconds(parse_retry_after(response.headers.get("retry-after")))
        asked = "" if retry_after is None else f" It asked to wait {retry_after:g} s (Retry-After)."
        return ClubCollectRateLimitError(
            f"{prefix} The API is rate limiting: wait, or lower max_concurrency.{asked}",
            status_code=status,
            error_code=code,
            retry_after=retry_after,
        )
    elif status >= 500:
        cls, advice = ClubCollectServerError, " ClubCollect is failing; try again later."
    return cls(prefix + advice, status_code=status, error_code=code)


def error_code_of(body: bytes) -> str | None:
    """
    The API's error code in an error body: ``{"error": code}`` or ``{"errors": code}``.

    :param body: the body bytes; an HTML page or anything else gives ``None``.
    """
    payload = decode_json(body)
    if not isinstance(payload, dict):
        return None
    # ClubCollect's company page documents ``{"errors": "not_found"}``: read both keys.
    for key in ("error", "errors"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return ",".join(value)
    return None


def parse_retry_after(value: str | None) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    :param value: the header value, or ``None``.
    :return: the seconds (never negative), or ``None`` when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - time.time())


#: What :func:`decode_json` returns for a body that is not JSON (compared by identity).
NOT_JSON: Final = object()


def decode_json(body: bytes) -> Any:
    """
    An answer's JSON value, or :data:`NOT_JSON`.

    :param body: the body bytes.
    """
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: a body nested deeper than Python's parser goes ("[" * 100_000).
        return NOT_JSON


def snippet(body: bytes, limit: int = 120) -> str:
    """
    The start of an answer's body, whitespace collapsed, quoted for a message.

    :param body: the body bytes.
    :param limit: the most characters to keep.
    """
    text = " ".join(body.decode("utf-8", "replace").split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
