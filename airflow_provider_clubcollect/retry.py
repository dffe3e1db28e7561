"""The one retry policy, used by the sync hook and the async trigger alike.

It answers three questions about an attempt's outcome: is it final, may it be retried, and how
long to wait first.  ``Retry-After`` is honoured; otherwise waits grow exponentially with jitter
so that many workers do not retry in lockstep.  The policy does no I/O and never sleeps itself:
the transports do, with ``time.sleep`` or ``asyncio.sleep``.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, parse_retry_after, shown
from airflow_provider_clubcollect.get_provider_info import DEFAULT_MAX_RETRIES, MAX_RETRIES_LIMIT
from airflow_provider_clubcollect.wire import RawResponse

if TYPE_CHECKING:
    from airflow_provider_clubcollect.wire import ApiRequest


class TransportFailure(NamedTuple):
    """
    No HTTP answer arrived.

    :param reason: what happened (connection refused, timeout, connection dropped), for logs.
    :param maybe_applied: whether the request may have reached the server and been applied; a
        refused connection or a connect timeout never did, a read timeout or a dropped answer may have.
    :param timed_out: whether no answer came within the read timeout: the server may still be at work.
    """

    reason: str
    maybe_applied: bool
    timed_out: bool = False


#: What one attempt produced: an answer, or none.
Outcome = RawResponse | TransportFailure


class Verdict(enum.Enum):
    """What to do after an attempt."""

    #: The outcome is the answer: success, or an error that a retry cannot fix.
    FINAL = "final"
    #: Try again after a wait.
    RETRY = "retry"
    #: A request that is not idempotent may have been applied: retrying blindly could apply it twice.
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class RetryPolicy:
    """
    When to retry a ClubCollect request, and how long to wait.

    Retried: connection errors and timeouts, 429 (after ``Retry-After`` when given) and 5xx.
    Requests that are not idempotent (creating a ticket) are retried only when the outcome proves
    the server did not apply them (429, a refused connection); otherwise the verdict is
    :attr:`Verdict.AMBIGUOUS` and the caller decides.

    :param int max_retries: retries after the first attempt, 0 (no retry) to 100.
    :param float backoff_initial: the wait before the first retry, in seconds, before jitter.
    :param float backoff_max: the longest wait between two attempts, in seconds.
    :param float retry_after_max: the longest ``Retry-After`` honoured, in seconds; longer ones are capped.

    .. seealso:: :ref:`retries`
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0

    def __post_init__(self) -> None:
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES_LIMIT:
            raise ClubCollectValidationError(
                f"max_retries must be an integer from 0 to {MAX_RETRIES_LIMIT}, got {shown(retries)}."
            )
        for name in ("backoff_initial", "backoff_max", "retry_after_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ClubCollectValidationError(
                    f"{name} must be a number of seconds, 0 or more and finite, got {shown(value)}."
                )

    def verdict(self, request: ApiRequest, outcome: Outcome) -> Verdict:
        """
        Judge one attempt's outcome.

        :param ApiRequest request: the request that was sent.
        :param RawResponse | TransportFailure outcome: its answer, or the failure to get one.

        .. seealso:: :ref:`retries`
        """
        if isinstance(outcome, TransportFailure):
            if outcome.maybe_applied and not request.idempotent:
                return Verdict.AMBIGUOUS
            return Verdict.RETRY
        if outcome.status == 429:
            # A rate-limited request was refused, not applied: safe to retry for any method.
            return Verdict.RETRY
        if outcome.status >= 500:
            return Verdict.RETRY if request.idempotent else Verdict.AMBIGUOUS
        return Verdict.FINAL

    def wait_seconds(self, retry_number: int, outcome: Outcome) -> float:
        """
        How long to wait before a retry.

        :param int retry_number: 1 before the first retry, 2 before the second, ...
        :param RawResponse | TransportFailure outcome: the outcome being retried; its ``Retry-After``
            header wins when present.

        .. seealso:: :ref:`retries`
        """
        if isinstance(outcome, RawResponse):
            retry_after = parse_retry_after(outcome.headers.get("retry-after"))
            if retry_after is not None:
                return min(retry_after, self.retry_after_max)
        return self.backoff(retry_number)

    def backoff(self, retry_number: int) -> float:
        """
        The exponential wait with jitter before a retry, when the server named no time.

        :param int retry_number: 1 before the first retry, 2 before the second, ...

        .. seealso:: :ref:`retries`
        """
        # The exponent is capped: 2.0 ** 1024 overflows, and 2 ** 64 times any wait is past any cap.
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** min(max(retry_number - 1, 0), 64))
        # "Equal jitter": at least half the exponential wait, so retries keep backing off,
        # plus a random half, so that concurrent clients spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)
