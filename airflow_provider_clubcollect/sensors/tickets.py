"""The sensor that waits until tickets await an answer: pokes, then defers when deferrable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_clubcollect import selection, wire
from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.operators.base import ClubCollectBaseOperator
from airflow_provider_clubcollect.retry import DEFAULT_TASK_RETRY_POLICY
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_clubcollect.retry import Backoff

__all__ = ["UnansweredTicketsSensor"]


class UnansweredTicketsSensor(ClubCollectBaseOperator, BaseSensorOperator):
    """
    Wait until at least ``min_tickets`` tickets of a company await an answer; return them (oldest first).

    :param str company_id: the company (templated).
    :param int min_tickets: how many tickets must await an answer (default 1).
    :param timedelta | None unanswered_for: count only threads unanswered for longer than this.
    :param datetime | str | None reference_time: where the clock starts (templated), see :ref:`sensor-clock`.
    :param bool deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: the waits between retries of each request, also handed to the trigger.
    :param airflow.sdk.RetryPolicy | None retry_policy: the task retry policy (3.3+); ``None`` leaves it to ``retries``.
    :param int max_concurrency: pages in flight at once while polling, at least 1 (default 8).

    .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
    """

    template_fields: Sequence[str] = ("company_id", "reference_time")

    def __init__(
        self,
        *,
        company_id: str,
        min_tickets: int = 1,
        unanswered_for: timedelta | None = None,
        reference_time: datetime | str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        selection.check_literal(wire.check_id, company_id, "company_id")
        if unanswered_for is not None:  # not templated: a string is refused here, not at the first poke
            selection.check_duration(unanswered_for, "unanswered_for")
        self.company_id = company_id
        self.min_tickets = wire.check_int(min_tickets, "min_tickets")
        self.unanswered_for = unanswered_for
        self.reference_time = reference_time
        self.deferrable = deferrable
        self.max_concurrency = wire.check_int(max_concurrency, "max_concurrency")
        self._began: datetime | None = None  # the first poke, when the task instance does not say (no run)

    def poke(self, context: Context) -> PokeReturnValue:
        """Read every page of the company's unanswered tickets and count those awaiting an answer."""
        now = self._now(context)  # a bad rendered reference_time fails before any page is read
        tickets = self.hook.get_company_tickets(
            self.company_id, wire.STATUS_UNANSWERED, max_concurrency=self.max_concurrency
        )
        waiting = selection.awaiting_answer(tickets, self.unanswered_for, now)
        summary = selection.waiting_summary(len(waiting), self.company_id, self.unanswered_for, self.min_tickets)
        self.log.info("%s (now = %s)", summary, now.isoformat())
        return PokeReturnValue(is_done=len(waiting) >= self.min_tickets, xcom_value=waiting)

    def _now(self, context: Context) -> datetime:
        """This poke's "now": the current UTC time, or ``reference_time`` moved on by the time waited (SPEC 6)."""
        if self.reference_time is None:
            return datetime.now(timezone.utc)
        return selection.to_utc(self.reference_time, context) + self._waited(context)

    def _waited(self, context: Context) -> timedelta:
        # Since the first reschedule (each poke is a new process; found as BaseSensorOperator finds it for
        # its timeout), else this try's start (a deferred task resumes with it), else the first poke.
        wall = datetime.now(timezone.utc)
        ti: Any = context.get("ti")
        began = None
        if self.reschedule and ti is not None:
            if AIRFLOW_V_3_0_PLUS:
                began = ti.get_first_reschedule_date(context)
            else:
                from airflow.sensors.base import _orig_start_date

                try_number = (ti.max_tries or 0) - (self.retries or 0) + 1
                began = _orig_start_date(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, try_number)
        began = began or getattr(ti, "start_date", None)
        if not isinstance(began, datetime):
            began = self._began = self._began or wall
        return max(timedelta(0), wall - selection.to_utc(began))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:  # one poke on the worker first: when enough tickets wait already, no deferral
            first = self.poke(context)
        except ClubCollectError as exc:  # the only errors the hook lets out
            self._on_poke_error(exc, context)
        if first.is_done:
            return first.xcom_value
        self._defer(context)

    def _on_poke_error(self, exc: Exception, context: Context) -> NoReturn:
        """BaseSensorOperator's rules for a failed poke: silent_fail defers, never_fail skips, else it fails."""
        if self.silent_fail:
            self.log.error("Sensor poke failed: %s", exc)
            self._defer(context)  # waits on for what is left of the timeout
        if self.never_fail:
            from airflow.providers.common.compat.sdk import AirflowSkipException

            raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
        raise exc

    def _timed_out(self) -> NoReturn:
        from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException

        age = "" if self.unanswered_for is None else f" for more than {selection.human_duration(self.unanswered_for)}"
        message = (
            f"Sensor has timed out: fewer than {self.min_tickets} tickets of company {self.company_id!r} "
            f"awaited an answer{age} within {self.timeout} s."
        )
        raise (AirflowSkipException if self.soft_fail else AirflowSensorTimeout)(message)

    def _defer(self, context: Context) -> NoReturn:
        from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger

        remaining = timedelta(seconds=self.timeout) - self._waited(context)
        if remaining <= timedelta(0):
            self._timed_out()
        unanswered_for = given = self.unanswered_for
        if given is not None and self.reference_time is not None:
            # "Now" runs ahead of the trigger's wall clock by a fixed offset: the same threads count
            # when they have waited that much less by the wall clock.
            offset = self._now(context) - datetime.now(timezone.utc)
            unanswered_for = max(timedelta(0), given - offset)
            self.log.info("Deferring: the trigger counts threads unanswered for %s by the wall clock.", unanswered_for)
        self.defer(
            trigger=UnansweredTicketsTrigger(
                company_id=self.company_id,
                min_tickets=self.min_tickets,
                unanswered_for_seconds=None if unanswered_for is None else unanswered_for.total_seconds(),
                poke_interval=float(self.poke_interval),
                clubcollect_conn_id=self.clubcollect_conn_id,
                backoff=self.backoff,
                # Its own deadline too: ``airflow dags test`` runs triggers in line, with no timeout.
                timeout_at=(datetime.now(timezone.utc) + remaining).isoformat(),
                max_concurrency=self.max_concurrency,
            ),
            method_name="execute_complete",
            timeout=remaining,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """
        Finish after the trigger fired: return the tickets, or raise the error the trigger met.

        :param Context context: the task context.
        :param dict[str, Any] | None event: the trigger's event payload.

        .. seealso:: :ref:`howto/sensor:UnansweredTicketsSensor`
        """
        status = event.get("status") if isinstance(event, dict) else None
        if status == "error":
            self._on_poke_error(ClubCollectError.from_payload(cast("dict[str, Any]", event)), context)
        if status == "timeout":
            self._timed_out()
        if status != "success":
            raise ClubCollectError(f"UnansweredTicketsTrigger sent an event this sensor does not know: {event!r:.500}.")
        tickets: list[dict[str, Any]] = list(cast("dict[str, Any]", event).get("tickets") or [])
        self.log.info(
            "%s", selection.waiting_summary(len(tickets), str(self.company_id), self.unanswered_for, self.min_tickets)
        )
        return tickets

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        # Not through BaseSensorOperator's, which skips on any error under soft_fail, and (before 3.1)
        # fails a deferral timeout its own way: end as the poking sensor does instead.
        if next_method == "execute_complete":
            return self.execute_complete(context, **(next_kwargs or {}))
        if next_method == "__fail__" and "timeout" in str((next_kwargs or {}).get("error", "")).lower():
            self._timed_out()
        return super().resume_execution(next_method, next_kwargs, context)
