"""Errors raised by the ClubCollect provider.

Every error carries the HTTP ``status_code`` (``None`` when no answer arrived) and the API's
``error`` code (``None`` when the API gave none), so that a task log says whether to fix an
input, fix the key, or wait.  No error ever contains the API key.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_clubcollect.wire import MAX_MESSAGE_CHARS, shorten


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
        # Airflow pickles exceptions when it hands them between processes.
        return (_rebuild, (type(self), self.message, self.status_code, self.error_code))

    def to_payload(self) -> dict[str, Any]:
        """
        Describe this error as plain JSON, for a trigger event.

        :return: a dict that :meth:`from_payload` turns back into the same error class.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`, whose trigger sends errors this way.
        """
        return {
            "error_class": type(self).__name__,
            "message": self.message,
            "status_code": self.status_code,
            "error_code": self.error_code,
        }

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> ClubCollectError:
        """
        Rebuild an error described by :meth:`to_payload`.

        :param dict[str, Any] payload: the dict from :meth:`to_payload`; an unknown class name gives the base class.
        :return: the error, ready to raise.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`, whose trigger sends errors this way.
        """
        cls = _ERROR_CLASSES.get(str(payload.get("error_class")), ClubCollectError)
        return cls(
            str(payload.get("message", "ClubCollect request failed")),
            status_code=payload.get("status_code"),
            error_code=payload.get("error_code"),
        )


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

    .. seealso:: :ref:`troubleshooting`
    """


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
