"""``ClubCollectRetryPolicy`` (Airflow 3.3+), public as ``airflow_provider_clubcollect.retry``'s."""

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

_HOPELESS: Final[dict[type[ClubCollectError], str]] = {
    ClubCollectAuthError: "the API refused the key (fix the connection's API key)",
    ClubCollectNotFoundError: "the invoice or company does not exist for this key (or the base URL is wrong)",
    ClubCollectValidationError: "the input is wrong",
}


class ClubCollectRetryPolicy(RetryPolicy):
    """
    A task retry policy (Airflow 3.3+) that fails at once on errors no retry heals and honours a 429's ``Retry-After``.

    .. seealso:: :ref:`task-retries`
    """

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        status = getattr(exception, "status_code", None)
        named = type(exception).__name__ + ("" if status is None else f" (HTTP {status})")
        for error_class, meaning in _HOPELESS.items():
            if isinstance(exception, error_class):
                return RetryDecision.fail(reason=f"{named}: {meaning}; retrying cannot help.")
        if isinstance(exception, ClubCollectRateLimitError) and exception.retry_after is not None:
            # At most a day: the longest retry delay Airflow computes itself.
            asked = min(timedelta(seconds=exception.retry_after), timedelta(days=1))
            own = getattr((context or {}).get("task"), "retry_delay", None)
            if asked > (own if isinstance(own, timedelta) else timedelta(0)):
                reason = f"{named}: the API asked to wait {asked.total_seconds():g} s (Retry-After)."
                return RetryDecision.retry(delay=asked, reason=reason)
        return RetryDecision.default()

    def serialize(self) -> dict[str, Any]:
        return {"__type": type(self).__name__}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> ClubCollectRetryPolicy:
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
