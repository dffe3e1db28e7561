"""Errors raised by the ClubCollect provider: each carries ``status_code`` and ``error_code``, never the key."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypedDict, TypeGuard

from airflow.providers.common.compat.sdk import AirflowException

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ClubCollectAmbiguousError",
    "ClubCollectAuthError",
    "ClubCollectError",
    "ClubCollectNotFoundError",
    "ClubCollectRateLimitError",
    "ClubCollectServerError",
    "ClubCollectValidationError",
]


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters, for naming a value of any size in a message."""
    try:
        text = repr(value)
    except RecursionError:  # a value nested deeper than repr goes
        text = f"<{type(value).__name__} nested too deep to show>"
    return shorten(text, limit)


def shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def is_finite(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a finite int or float; a bool is no number here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ClubCollectError(AirflowException):
    """
    Base class of every error the provider raises.

    :param str message: what went wrong, for a person reading the task log.
    :param int | None status_code: the HTTP status of the answer, or ``None`` when no answer arrived.
    :param str | None error_code: the API's ``error`` (or ``errors``) code, such as ``invalid_invoice_id``.

    .. seealso:: :ref:`troubleshooting`, what each error means and what to do.
    """

    def __init__(self, message: str, *, status_code: int | None = None, error_code: str | None = None) -> None:
        message = shorten(str(message), 20_000)  # the last guard of a bounded message
        super().__init__(message)
        self.message = message
        self.status_code = status_code  # type: ignore[assignment]  # an int here, not HTTPStatus
        self.error_code = error_code

    def to_payload(self) -> dict[str, Any]:
        """
        Describe this error as plain JSON, for a trigger event; :meth:`from_payload` reverses it.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        return {"error_class": type(self).__name__, **vars(self)}

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> ClubCollectError:
        """
        Rebuild an error described by :meth:`to_payload` (an unknown class name gives the base class).

        :param dict[str, Any] payload: the dict from :meth:`to_payload`.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        name = str(payload.get("error_class"))
        cls: type[ClubCollectError] = globals()[name] if name in __all__ else ClubCollectError
        error = cls(
            str(payload.get("message", "ClubCollect request failed")),
            status_code=payload.get("status_code"),
            error_code=payload.get("error_code"),
        )
        if isinstance(error, ClubCollectRateLimitError):  # a finite wait, whatever an edited payload says
            wait = payload.get("retry_after")
            error.retry_after = wait if is_finite(wait) and wait >= 0 else None
        return error


class _Codes(TypedDict, total=False):  # the base's keywords, as the subclasses pass them on
    status_code: int | None
    error_code: str | None


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
    :param float | None retry_after: the seconds the last ``Retry-After`` asked to wait, uncapped.

    .. seealso:: :ref:`troubleshooting`
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **codes: Unpack[_Codes]) -> None:
        super().__init__(message, **codes)
        self.retry_after = retry_after


class ClubCollectServerError(ClubCollectError):
    """
    The API kept failing (5xx, unreadable answers or lost connections) after every retry.

    .. seealso:: :ref:`troubleshooting`
    """


class ClubCollectAmbiguousError(ClubCollectServerError):
    """
    A request that changes data (creating a ticket) may or may not have been applied: its answer was lost.

    :param str message: what went wrong, for a person reading the task log.
    :param bool timed_out: whether no answer came in time, so the server may still be applying it.
    :param int attempts: the requests sent before giving up, this one included.
    :param str failure: what became of the last, such as ``HTTP 503`` or ``no answer within 30 s``.

    .. seealso:: :ref:`troubleshooting`
    """

    def __init__(
        self,
        message: str,
        *,
        timed_out: bool = False,
        attempts: int = 1,
        failure: str = "no answer",
        **codes: Unpack[_Codes],
    ) -> None:
        super().__init__(message, **codes)
        self.timed_out, self.attempts, self.failure = timed_out, attempts, failure
