"""What every ClubCollect operator and the sensor share: the connection, the request back-off, the hook."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.retry import DEFAULT_TASK_RETRY_POLICY, as_backoff, task_retry_policy_kwargs

if TYPE_CHECKING:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.retry import Backoff

__all__ = ["ClubCollectBaseOperator"]


class ClubCollectBaseOperator(BaseOperator):
    """
    Base of the ClubCollect operators and the sensor: the connection, the request back-off, the task retry policy.

    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: the waits between retries of each request (count: the connection's ``max_retries``).
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy (Airflow 3.3+); ``None`` for Airflow's own.

    .. seealso:: :ref:`operators` and :ref:`task-retries`
    """

    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs, **task_retry_policy_kwargs(retry_policy))
        self.clubcollect_conn_id = clubcollect_conn_id
        self.backoff = as_backoff(backoff)  # checked when the DAG is parsed

    @functools.cached_property
    def hook(self) -> ClubCollectHook:
        """The hook, built once per task run, with a connection pool for every request in flight."""
        from airflow_provider_clubcollect.hooks.clubcollect import DEFAULT_POOL_SIZE, ClubCollectHook

        return ClubCollectHook(
            self.clubcollect_conn_id,
            pool_size=max(DEFAULT_POOL_SIZE, getattr(self, "max_concurrency", 1)),
            backoff=self.backoff,
        )
