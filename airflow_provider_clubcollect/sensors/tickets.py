"""The sensor that waits until tickets await an answer."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY, check_concurrency
from airflow_provider_clubcollect.operators.base import ClubCollectConnectionMixin
from airflow_provider_clubcollect.retry import DEFAULT_TASK_RETRY_POLICY
from airflow_provider_clubcollect.selection import (
    awaiting_answer,
    check_duration,
    check_literal,
    human_duration,
    run_reference_time,
    to_utc,
    waiting_summary,
)
from airflow_provider_clubcollect.wire import STATUS_UNANSWERED, validate_id

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_clubcollect.retry import Backoff

__all__ = ["UnansweredTicketsSensor"]


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
    :param datetime | str | None reference_time: where the sensor's clock starts (templated); default the
        current UTC time; a value that renders to nothing means the run's ``run_after``.  The clock moves
        while the sensor waits: each poke's "now" is ``reference_time`` plus the time since the sensor
        began waiting (its first try's start; in reschedule mode its first reschedule), so that with
        ``unanswered_for`` a thread that starts waiting after the run began still ages past it.
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
        check_literal(validate_id, company_id, "company_id")
        self.company_id = company_id
        self.min_tickets = min_tickets
        self.unanswered_for = unanswered_for
        self.reference_time = reference_time
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.max_concurrency = check_concurrency(max_concurrency)
        # Where waiting began when the task instance does not say (execute() called outside a run).
        self._began: datetime | None = None

    def poke(self, context: Context) -> PokeReturnValue:
        """
        Read every page of the company's unanswered tickets and count those awaiting an answer.

        :param Context context: the task context.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        company_id = validate_id(self.company_id, "company_id")
        # A bad rendered value fails before any page is read.
        now = self._now(context)
        tickets = self.hook.get_company_tickets(company_id, STATUS_UNANSWERED, max_concurrency=self.max_concurrency)
        waiting = awaiting_answer(tickets, self.unanswered_for, now)
        self.log.info(
            "%s (now = %s)",
            waiting_summary(len(waiting), company_id, self.unanswered_for, self.min_tickets),
            now.isoformat(),
        )
        return PokeReturnValue(is_done=len(waiting) >= self.min_tickets, xcom_value=waiting)

    def _now(self, context: Context) -> datetime:
        """This poke's "now": the current UTC time, or ``reference_time`` moved on by the time spent waiting."""
        from datetime import datetime, timezone

        wall = datetime.now(timezone.utc)
        if self.reference_time is None:
            return wall
        return run_reference_time(self.reference_time, context) + (wall - self._waiting_began(context, wall))

    def _waiting_began(self, context: Context, wall: datetime) -> datetime:
        """
        When this sensor began waiting: in reschedule mode its first reschedule (each poke is a new
        process), else the start of its try (a deferred task resumes with it), else its first poke.
        """
        from datetime import datetime

        ti = context.get("ti")
        began = None
        if self.reschedule and ti is not None:
            began = _first_reschedule(ti, context, self.retries or 0)
        began = began or getattr(ti, "start_date", None)
        if isinstance(began, datetime):
            return min(to_utc(began), wall)
        if self._began is None:
            self._began = wall
        return self._began

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

        age = f" for more than {human_duration(self.unanswered_for)}" if self.unanswered_for is not None else ""
        message = (
            f"Sensor has timed out: fewer than {self.min_tickets} tickets of company {self.company_id!r} "
            f"awaited an answer{age} within {self.timeout} s."
        )
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

        unanswered_for = given = self.unanswered_for
        if given is not None and self.reference_time is not None:
            # The trigger's clock is the wall clock: "now" runs ahead of (or behind) it by a fixed offset
            # (reference_time minus the start of waiting), so the same threads count when they have waited
            # that much less (or more) by the wall clock.
            wall = datetime.now(timezone.utc)
            offset = self._now(context) - wall
            unanswered_for = max(timedelta(0), given - offset)
            self.log.info(
                "Deferring: the trigger counts threads unanswered for more than %s by the wall clock "
                "(unanswered_for %s, with reference_time's clock %s ahead of it).",
                human_duration(unanswered_for),
                human_duration(given),
                _signed(offset),
            )
        self.defer(
            trigger=UnansweredTicketsTrigger(
                company_id=validate_id(self.company_id, "company_id"),
                min_tickets=self.min_tickets,
                unanswered_for_seconds=None if unanswered_for is None else unanswered_for.total_seconds(),
                reference_time=None,
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
        self.log.info("%s", waiting_summary(len(tickets), str(self.company_id), self.unanswered_for, self.min_tickets))
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


def _first_reschedule(ti: Any, context: Context, retries: int) -> datetime | None:
    """The start of a rescheduled sensor's first poke, as ``BaseSensorOperator`` finds it for its timeout."""
    from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        return ti.get_first_reschedule_date(context)  # type: ignore[no-any-return]
    from airflow.sensors.base import _orig_start_date

    return _orig_start_date(  # type: ignore[no-any-return]
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        map_index=ti.map_index,
        try_number=(ti.max_tries or 0) - retries + 1,
    )


def _signed(offset: timedelta) -> str:
    return human_duration(offset) if offset >= timedelta(0) else f"-{human_duration(-offset)}"


def _seconds_since(context: Context) -> float:
    from datetime import datetime, timezone

    ti = context.get("ti")
    started = getattr(ti, "start_date", None)
    if not isinstance(started, datetime):
        return 0.0
    return (datetime.now(timezone.utc) - to_utc(started)).total_seconds()
