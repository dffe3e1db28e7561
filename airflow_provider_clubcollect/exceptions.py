"""Errors raised by the ClubCollect provider.

Every error carries the HTTP ``status_code`` (``None`` when no answer arrived) and the API's
``error`` code (``None`` when the API gave none), so that a task log says whether to fix an
input, fix the key, or wait.  No error ever contains the API key.
"""

from __future__ import annotations

from typing import Any, Final

from airflow.providers.common.compat.sdk import AirflowException

__all__ = [
    "ClubCollectAmbiguousError",
    "ClubCollectAuthError",
    "ClubCollectError",
    "ClubCollectNotFoundError",
    "ClubCollectRateLimitError",
    "ClubCollectServerError",
    "ClubCollectValidationError",
]

#: The longest text quoted from a value or an answer in a message, and the longest message.
MAX_QUOTED_CHARS: Final = 200
MAX_MESSAGE_CHARS: Final = 20_000


def shown(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """
    ``repr(value)``, cut to at most ``limit`` characters, for naming a value in a message.

    :param value: the value, such as a bad ID of any size.
    :param limit: the most characters to keep.
    """
    try:
        text = repr(value)
    except RecursionError:  # a value nested deeper than repr goes
        text = f"<{type(value).__name__} nested too deep to show>"
    return shorten(text, limit)


def shorten(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """
    ``text`` cut to at most ``limit`` characters, saying so with ``...`` at the end.

    :param text: any text, such as one built from an answer.
    :param limit: the most characters to keep.
    """
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


class ClubCollectError(AirflowException):
    """
    Base class of every error the provider raises.

    :param str message: what went wrong, for a person reading the task log.
    :param int | None status_code: the HTTP status of the answer, or ``None`` when no answer arrived.
    :param str | None error_code: the API's ``error`` (or ``errors``) code, such as ``invalid_invoice_id``.

    .. seealso:: :ref:`troubleshooting`, what each error means and what to do.
    """

    def __init__(self, message: str, *, status_code: int | None = None, error_code: str | None = None):
        # The last guard of a bounded message: the parts quoted from answers are short already.
        message = shorten(str(message), MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.status_code = status_code  # type: ignore[assignment]  # an int here, not HTTPStatus
        self.error_code = error_code

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions;
        # Airflow pickles exceptions when it hands them between processes.  The instance's
        # attributes go along, so that a subclass's own (``retry_after``, ``timed_out``) survive too.
        return (_rebuild, (type(self), self.message, self.status_code, self.error_code), self.__dict__)

    def to_payload(self) -> dict[str, Any]:
        """
        Describe this error as plain JSON, for a trigger event.

        :return: a dict that :meth:`from_payload` turns back into the same error class.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`, whose trigger sends errors this way.
        """
        payload = {
            "error_class": type(self).__name__,
            "message": self.message,
            "status_code": self.status_code,
            "error_code": self.error_code,
        }
        if isinstance(self, ClubCollectRateLimitError):
            payload["retry_after"] = self.retry_after
        return payload

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> ClubCollectError:
        """
        Rebuild an error described by :meth:`to_payload`.

        :param dict[str, Any] payload: the dict from :meth:`to_payload`; an unknown class name gives the base class.
        :return: the error, ready to raise.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`, whose trigger sends errors this way.
        """
        cls = _ERROR_CLASSES.get(str(payload.get("error_class")), ClubCollectError)
        error = cls(
            str(payload.get("message", "ClubCollect request failed")),
            status_code=payload.get("status_code"),
            error_code=payload.get("error_code"),
        )
        if isinstance(error, ClubCollectRateLimitError):
            error.retry_after = finite_seconds(payload.get("retry_after"))
        return error


def _rebuild(
    cls: type[ClubCollectError], message: str, status_code: int | None, error_code: str | None
) -> ClubCollectError:
    return cls(message, status_code=status_code, error_code=error_code)


class ClubCollectAuthError(ClubCollectError):
    """
    The API refused the key (HTTP 401 or 403): fix the connection's API key.

    .. seealso:: :ref:`troubleshooting`
    """


class ClubCollectNotFoundError(ClubCollectError):
    """
    The invoice or company does not exist for this key (HTTP 404).

    .. seealso:: :ref:`troubleshooting`
    """


class ClubCollectValidationError(ClubCollectError, ValueError):
    """
    Bad input: refused by the API (HTTP 422) or caught before any request was sent.

    .. seealso:: :ref:`troubleshooting`
    """


class ClubCollectRateLimitError(ClubCollectError):
    """
    The API kept answering 429 Too Many Requests after every retry: wait, or lower concurrency.

    :param str message: what went wrong, for a person reading the task log.
    :param int | None status_code: the HTTP status of the answer (429).
    :param str | None error_code: the API's ``error`` code, if any.
    :param float | None retry_after: the seconds the last answer's ``Retry-After`` asked to wait
        (``None`` without one), uncapped by the request back-off: the soonest time to retry the task.

    .. seealso:: :ref:`troubleshooting`, and :ref:`task-retries` (``ClubCollectRetryPolicy`` waits that long).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status_code=status_code, error_code=error_code)
        self.retry_after = retry_after


class ClubCollectServerError(ClubCollectError):
    """
    The API kept failing (5xx, unreadable answers or lost connections) after every retry.

    .. seealso:: :ref:`troubleshooting`
    """


class ClubCollectAmbiguousError(ClubCollectServerError):
    """
    A request that changes data may or may not have been applied.

    Raised for a non-idempotent request (creating a ticket) when the answer was lost: a timeout,
    a dropped connection or a 5xx after the request was sent.  Retrying blindly could apply it twice.

    :param str message: what went wrong, for a person reading the task log.
    :param int | None status_code: the HTTP status of the answer, or ``None`` when no answer arrived.
    :param str | None error_code: the API's ``error`` code, if any.
    :param bool timed_out: whether no answer came in time, so the server may still be applying it.

    .. seealso:: :ref:`troubleshooting`, and the hook's "Never twice" in :ref:`hook`.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        timed_out: bool = False,
    ):
        super().__init__(message, status_code=status_code, error_code=error_code)
        self.timed_out = timed_out


_ERROR_CLASSES: dict[str, type[ClubCollectError]] = {
    cls.__name__: cls
    for cls in (
        ClubCollectError,
        ClubCollectAuthError,
        ClubCollectNotFoundError,
        ClubCollectValidationError,
        ClubCollectRateLimitError,
        ClubCollectServerError,
        ClubCollectAmbiguousError,
    )
}


def finite_seconds(value: Any) -> float | None:
    """A finite number of seconds, or ``None`` (for ``inf``, ``nan`` and anything not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        return None
    return float(value)
