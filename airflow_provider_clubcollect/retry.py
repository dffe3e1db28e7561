"""Retry tuning, public: :class:`Backoff` for one *request*, ``ClubCollectRetryPolicy`` for a *task*."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, shown
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_clubcollect.wire import check_number, parse_retry_after

if TYPE_CHECKING:
    from airflow_provider_clubcollect._task_retry import ClubCollectRetryPolicy as ClubCollectRetryPolicy

__all__ = ["Backoff", "ClubCollectRetryPolicy"] if AIRFLOW_V_3_3_PLUS else ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """
    The waits between retries of one ClubCollect request, in seconds (the count is ``max_retries``).

    :param float initial: the wait before the first retry, before jitter; 0 or more.
    :param float maximum: the longest wait between two attempts; at least ``initial``.
    :param float retry_after_max: the longest ``Retry-After`` honoured; longer ones are capped.

    .. seealso:: :ref:`retries`
    """

    initial: float = 0.5
    maximum: float = 30.0
    retry_after_max: float = 120.0

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "retry_after_max"):
            check_number(getattr(self, name), f"Backoff {name}", zero=True)
        if self.maximum < self.initial:
            raise ClubCollectValidationError(
                f"Backoff maximum must be at least initial ({self.initial!r} s), got {shown(self.maximum)}."
            )

    def delay(self, retry_number: int) -> float:
        """
        The wait without a ``Retry-After``: ``min(maximum, initial x 2^(n-1))``, half of it jitter.

        :param int retry_number: 1 before the first retry, 2 before the second, ...

        .. seealso:: :ref:`retries`
        """
        # The exponent is capped: 2.0 ** 1024 overflows, and 2 ** 64 times any wait is past any cap.
        ceiling = min(self.maximum, self.initial * 2.0 ** min(max(retry_number - 1, 0), 64))
        # "Equal jitter": half the wait keeps backing off, a random half spreads concurrent clients out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def wait_seconds(self, retry_number: int, retry_after: str | None = None) -> float:
        """
        The wait before a retry: the ``Retry-After`` asked, capped, or else :meth:`delay`.

        :param int retry_number: 1 before the first retry, 2 before the second, ...
        :param str | None retry_after: the answer's ``Retry-After`` header (seconds or an HTTP date), if any.

        .. seealso:: :ref:`retries`
        """
        asked = parse_retry_after(retry_after)
        return self.delay(retry_number) if asked is None else min(asked, self.retry_after_max)


def as_backoff(value: object) -> Backoff | None:
    """A ``backoff=`` argument as a :class:`Backoff`: itself, its fields as a dict (a trigger's), or ``None``."""
    if value is None or isinstance(value, Backoff):
        return value
    if isinstance(value, Mapping) and set(value) <= {"initial", "maximum", "retry_after_max"}:
        return Backoff(**value)
    raise ClubCollectValidationError(
        f"backoff must be a Backoff or a dict of its fields (initial, maximum, retry_after_max), got {shown(value)}."
    )


def __getattr__(name: str) -> Any:
    # PEP 562: ClubCollectRetryPolicy, public on Airflow 3.3+ only, is imported when first asked for.
    if name != "ClubCollectRetryPolicy":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not AIRFLOW_V_3_3_PLUS:
        from airflow import __version__

        raise ImportError(
            f"ClubCollectRetryPolicy needs Airflow 3.3 or later, where tasks take a retry_policy; this is "
            f"Airflow {__version__}. Before 3.3, a task's retries and retry_delay decide alone.",
            name=__name__,
        )
    from airflow_provider_clubcollect._task_retry import ClubCollectRetryPolicy

    return ClubCollectRetryPolicy


class _ClubCollectDefault:
    def __repr__(self) -> str:  # how the default reads in a signature and in the API reference
        return "ClubCollectRetryPolicy()"


DEFAULT_TASK_RETRY_POLICY = _ClubCollectDefault()


def task_retry_policy_kwargs(retry_policy: object) -> dict[str, Any]:
    """The ``retry_policy`` keyword for ``BaseOperator``; before Airflow 3.3 the default and ``None`` left out."""
    # isinstance, not identity: Airflow may copy the arguments of a mapped task before it unmaps it.
    if isinstance(retry_policy, _ClubCollectDefault):
        retry_policy = __getattr__("ClubCollectRetryPolicy")() if AIRFLOW_V_3_3_PLUS else None
    return {} if retry_policy is None and not AIRFLOW_V_3_3_PLUS else {"retry_policy": retry_policy}
