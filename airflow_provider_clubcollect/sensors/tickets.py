"""The sensor that waits until tickets await an answer."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_clubcollect.bulk import DEFAULT_MAX_CONCURRENCY, check_concurrency
from airflow_provider_clubcollect.connection import ClubCollectConnectionMixin
from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.retry import DEFAULT_TASK_RETRY_POLICY
from airflow_provider_clubcollect.selection import (
    awaiting_answer,
    check_duration,
    human_duration,
    run_reference_time,
    to_utc,
)
from airflow_provider_clubcollect.wire import STATUS_UNANSWERED, validate_id

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_clubcollect.retry import Backoff


def _default_deferrable() -> bool:
    from airflow.providers.common.compat.sdk import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


class UnansweredTicketsSensor(ClubCollectConnectionMixin, BaseSensorOperator):
    """
    Wait until at least ``min_tickets`` tickets of a company await an answer.

    A ticket awaits an answer when it is a CUSTOMER ticket newer than the newest COMPANY ticket of
    an unanswered thread; with ``unanswered_for``, only threads unanswered for longer than that
    count.  The XCom value is the list of those tickets (CompanyTicket dicts, oldest first).

    Works in ``poke`` and ``reschedule`` mode, and with ``deferrable=True`` waits in the triggerer
    (:class:`~airflow_provider_clubcollect.triggers.tickets.UnansweredTicketsTrigger`), holding no
    worker slot; it ends the same way in every mode: same XCom value, same errors, same
    ``timeout`` and ``soft_fail`` behaviour.

    :param str company_id: the company (templated).
    :param int min_tickets: how many tickets must await an answer (default 1).
    :param timedelta | None unanswered_for: count only threads unanswered for longer than this ``timedelta``.
    :param datetime | str | None reference_time: "now" for the selection (templated); default the current
        UTC time; a value that renders to nothing means the run's ``run_after``.
    :param bool | None deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: the waits between retries of each request
        (:class:`~airflow_provider_clubcollect.retry.Backoff`), also handed to the trigger; the count is the
        connection's ``max_retries``.
    :param airflow.sdk.RetryPolicy | None retry_policy: Airflow's task retry policy (Airflow 3.3+), handed to
        Airflow as it is.  By default a ``ClubCollectRetryPolicy``: a refused key, an unknown company and bad
        input fail the task at once, a 429 retries no sooner than its ``Retry-After``.  ``None`` leaves every
        failure to ``retries`` and ``retry_delay``.
    :param int max_concurrency: pages in flight at once while polling, at least 1 (default 8).

    .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
    """

    template_fields: Sequence[str] = ("company_id", "reference_time")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        company_id: str,
        min_tickets: int = 1,
        unanswered_for: timedelta | None = None,
        reference_time: datetime | str | None = None,
        deferrable: bool | None = None,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        if isinstance(min_tickets, bool) or not isinstance(min_tickets, int) or min_tickets < 1:
            raise ClubCollectValidationError(f"min_tickets must be an integer of at least 1, got {min_tickets!r}.")
        if unanswered_for is not None:
            check_duration(unanswered_for, "unanswered_for")
        self.company_id = company_id
        self.min_tickets = min_tickets
        self.unanswered_for = unanswered_for
        self.reference_time = reference_time
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.max_concurrency = check_concurrency(max_concurrency)

    def poke(self, context: Context) -> PokeReturnValue:
        """
        Read every page of the company's unanswered tickets and count those awaiting an answer.

        :param Context context: the task context.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        company_id = validate_id(self.company_id, "company_id")
        # A bad rendered value fails before any page is read.
        now = run_reference_time(self.reference_time, context)
        tickets = self.hook.get_company_tickets(company_id, STATUS_UNANSWERED, max_concurrency=self.max_concurrency)
        waiting = awaiting_answer(tickets, self.unanswered_for, now)
        self.log.info(
            "%d tickets of company %r await an answer%s; waiting for %d.",
            len(waiting),
            company_id,
            f" for more than {human_duration(self.unanswered_for)}" if self.unanswered_for is not None else "",
            self.min_tickets,
        )
        return PokeReturnValue(is_done=len(waiting) >= self.min_tickets, xcom_value=waiting)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        started = time.monotonic()
        # One poke on the worker first: when enough tickets wait already, there is no need to
        # hand the task to the triggerer at all.
        first = self._poke_once(context)
        if first.is_done:
            return first.xcom_value
        self._defer(context, self.timeout - (time.monotonic() - started))

    def _poke_once(self, context: Context) -> PokeReturnValue:
        """One poke, with the error handling ``BaseSensorOperator.execute`` gives each poke."""
        from airflow.providers.common.compat.sdk import (
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            AirflowTaskTimeout,
        )

        try:
            return self.poke(context)
        except (AirflowSensorTimeout, AirflowTaskTimeout, AirflowFailException) as exc:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"Skipping: soft_fail or never_fail is set ({exc}).") from exc
            raise
        except AirflowSkipException:
            raise
        except Exception as exc:
            return self._on_poke_error(exc)

    def _on_poke_error(self, exc: Exception) -> PokeReturnValue:
        # The same rules as BaseSensorOperator.execute: silent_fail keeps waiting, never_fail
        # skips, otherwise the error fails the task (soft_fail does not apply to API errors).
        from airflow.providers.common.compat.sdk import AirflowSkipException

        if self.silent_fail:
            self.log.error("Sensor poke failed: %s", exc)
            return PokeReturnValue(is_done=False)
        if self.never_fail:
            raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
        raise exc

    def _timed_out(self) -> None:
        from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException

        message = f"Sensor has timed out: no {self.min_tickets} tickets awaited an answer within {self.timeout} s."
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)

    def _defer(self, context: Context, remaining_seconds: float) -> None:
        from datetime import datetime, timezone

        if remaining_seconds <= 0:
            self._timed_out()
        # The trigger carries its own deadline, so that it ends even where nothing enforces the
        # deferral's timeout (``airflow dags test`` runs triggers in line, with no timeout).
        timeout_at = datetime.now(timezone.utc) + timedelta(seconds=remaining_seconds)
        # Imported here, not at module level: DAG files parse without it (it costs milliseconds).
        from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger

        self.defer(
            trigger=UnansweredTicketsTrigger(
                company_id=validate_id(self.company_id, "company_id"),
                min_tickets=self.min_tickets,
                unanswered_for_seconds=None if self.unanswered_for is None else self.unanswered_for.total_seconds(),
                reference_time=None
                if self.reference_time is None
                else run_reference_time(self.reference_time, context).isoformat(),
                poke_interval=float(self.poke_interval),
                clubcollect_conn_id=self.clubcollect_conn_id,
                backoff=self.backoff,
                timeout_at=timeout_at.isoformat(),
                max_concurrency=self.max_concurrency,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining_seconds),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """
        Finish after the trigger fired: return the tickets, or raise the error the trigger met.

        :param Context context: the task context.
        :param dict[str, Any] | None event: the trigger's event payload.
        :raises ClubCollectError: the subclass named in an error event, with the API's message.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        from airflow_provider_clubcollect.triggers.tickets import EVENT_ERROR, EVENT_SUCCESS, EVENT_TIMEOUT

        if not isinstance(event, dict) or event.get("status") not in (EVENT_SUCCESS, EVENT_ERROR, EVENT_TIMEOUT):
            raise ClubCollectError(f"UnansweredTicketsTrigger sent an event this sensor does not know: {event!r:.500}.")
        if event["status"] == EVENT_ERROR:
            raise ClubCollectError.from_payload(event)
        if event["status"] == EVENT_TIMEOUT:
            self._timed_out()
        tickets: list[dict[str, Any]] = list(event.get("tickets") or [])
        self.log.info("%d tickets of company %r await an answer.", len(tickets), self.company_id)
        return tickets

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        # BaseSensorOperator turns any AirflowException raised on resume into a skip under
        # soft_fail, while a poking sensor fails on the same API error.  Handle error events the
        # way the poking sensor handles a failed poke, so that both modes end the same;
        # timeouts still go through the base class and honour soft_fail.
        from airflow_provider_clubcollect.triggers.tickets import EVENT_ERROR

        event = (next_kwargs or {}).get("event")
        if next_method == "execute_complete" and isinstance(event, dict) and event.get("status") == EVENT_ERROR:
            self._on_poke_error(ClubCollectError.from_payload(event))
            # silent_fail: keep waiting for what is left of the timeout, as a poking sensor would.
            self._defer(context, self.timeout - _seconds_since(context))
        if next_method == "__fail__" and "timeout" in str((next_kwargs or {}).get("error", "")).lower():
            # The deferral timed out ("Trigger timeout"; Airflow 2.11: "Trigger/execution timeout").
            # End as a poking sensor does on every Airflow: 2.11 fails with a TaskDeferralError, and
            # before 3.1 soft_fail does not turn the timeout into a skip.
            self._timed_out()
        return super().resume_execution(next_method, next_kwargs, context)


def _seconds_since(context: Context) -> float:
    from datetime import datetime, timezone

    ti = context.get("ti")
    started = getattr(ti, "start_date", None)
    if not isinstance(started, datetime):
        return 0.0
    return (datetime.now(timezone.utc) - to_utc(started)).total_seconds()
