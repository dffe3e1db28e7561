"""``ClubCollectRetryPolicy``: a task retry policy (Airflow 3.3+) that knows ClubCollect's errors.

Private: the public name is ``airflow_provider_clubcollect.retry.ClubCollectRetryPolicy``, which
imports this module on first use, and only on an Airflow that has task retry policies.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import RetryDecision, RetryPolicy

from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectNotFoundError,
    ClubCollectRateLimitError,
    ClubCollectValidationError,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_clubcollect.exceptions import ClubCollectError

#: The longest ``Retry-After`` a task waits for: a day, the longest retry delay Airflow computes itself.
MAX_RETRY_AFTER: Final = timedelta(days=1)

#: Errors no retry can heal, and what they mean, for the decision's reason.
_HOPELESS: Final[dict[type[ClubCollectError], str]] = {
    ClubCollectAuthError: "the API refused the key (fix the connection's API key)",
    ClubCollectNotFoundError: "the invoice or company does not exist for this key (or the base URL is wrong)",
    ClubCollectValidationError: "the input is wrong",
}


class ClubCollectRetryPolicy(RetryPolicy):
    """
    A task retry policy for Airflow 3.3's ``retry_policy=``, knowing ClubCollect's errors.

    - Errors no retry can heal fail the task at once, whatever its ``retries``:
      :class:`~airflow_provider_clubcollect.exceptions.ClubCollectAuthError` (401/403),
      :class:`~airflow_provider_clubcollect.exceptions.ClubCollectNotFoundError` (an unknown invoice
      or company) and :class:`~airflow_provider_clubcollect.exceptions.ClubCollectValidationError`
      (422, and bad input caught before any request).
    - A :class:`~airflow_provider_clubcollect.exceptions.ClubCollectRateLimitError` (429 after every
      retry of the request) whose answer carried a ``Retry-After`` retries the task no sooner than
      that: after ``max(retry_delay, Retry-After)``, at most a day.  Within the task's ``retries``.
    - Everything else follows the task's own ``retries`` and ``retry_delay``.

    The operators and the sensor use it unless the DAG gives another ``retry_policy`` (as an argument
    or in ``default_args``); ``retry_policy=None`` leaves every failure to ``retries`` and
    ``retry_delay``.  Give it to your own tasks that call the hook, or chain it with other policies
    in Airflow's ``ChainRetryPolicy``:

    .. code-block:: python

        @task(retries=3, retry_policy=ClubCollectRetryPolicy())
        def reply(invoice_id: str) -> None: ...

    Only on Airflow 3.3 and later: before that, importing it raises an ``ImportError`` saying so.

    .. seealso:: :ref:`task-retries`
    """

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        for error_class, meaning in _HOPELESS.items():
            if isinstance(exception, error_class):
                return RetryDecision.fail(reason=f"{_named(exception)}: {meaning}; retrying cannot help.")
        if isinstance(exception, ClubCollectRateLimitError) and exception.retry_after is not None:
            asked = min(timedelta(seconds=exception.retry_after), MAX_RETRY_AFTER)
            if asked > _retry_delay(context):
                return RetryDecision.retry(
                    delay=asked,
                    reason=f"{_named(exception)}: the API asked to wait {asked.total_seconds():g} s (Retry-After).",
                )
        # The task's own retry_delay is the longer wait, or ClubCollect named none: Airflow decides.
        return RetryDecision.default()

    def serialize(self) -> dict[str, Any]:
        return {"__type": type(self).__name__}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> ClubCollectRetryPolicy:
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _named(exception: ClubCollectError) -> str:
    status = f" (HTTP {exception.status_code})" if exception.status_code is not None else ""
    return f"{type(exception).__name__}{status}"


def _retry_delay(context: Context | None) -> timedelta:
    """The task's own ``retry_delay``; none known, no wait."""
    delay = getattr((context or {}).get("task"), "retry_delay", None)
    return delay if isinstance(delay, timedelta) else timedelta(0)
