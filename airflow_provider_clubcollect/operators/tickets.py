"""Operators for the ticket workflows: export, reply, archive stale threads, escalate to support.

Every operator takes ``clubcollect_conn_id``; ID, status and message parameters are templated;
return values go to XCom and are plain JSON.  Bulk actions read every page before acting, run
concurrently up to ``max_concurrency``, try every invoice, and then fail naming each failure.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_clubcollect.bulk import DEFAULT_MAX_CONCURRENCY, AdaptiveLimiter, check_concurrency, run_bulk
from airflow_provider_clubcollect.connection import ClubCollectConnectionMixin
from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.retry import DEFAULT_TASK_RETRY_POLICY
from airflow_provider_clubcollect.selection import (
    check_duration,
    human_duration,
    invoice_ids_from,
    run_reference_time,
    select_inactive,
    select_unanswered,
)
from airflow_provider_clubcollect.wire import (
    MAX_PAGE_SIZE,
    STATUS_ANSWERED,
    STATUS_ARCHIVED,
    STATUS_UNANSWERED,
    validate_id,
    validate_message,
    validate_page_size,
    validate_status,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime, timedelta

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.wire import CompanyTicket, Ticket


def _is_literal(value: Any) -> bool:
    """Whether a templated field's value is final at DAG parse time (no Jinja, no XComArg)."""
    return isinstance(value, str) and not any(marker in value for marker in ("{{", "{%", "{#"))


class ClubCollectBaseOperator(ClubCollectConnectionMixin, BaseOperator):
    """
    Base of the ClubCollect operators: holds the connection id and builds the hook.

    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: the waits between retries of each request
        (:class:`~airflow_provider_clubcollect.retry.Backoff`); the count is the connection's ``max_retries``.
    :param airflow.sdk.RetryPolicy | None retry_policy: Airflow's task retry policy (Airflow 3.3+), handed to
        Airflow as it is.  By default a ``ClubCollectRetryPolicy``: a refused key, an unknown invoice or company
        and bad input fail the task at once, a 429 retries no sooner than its ``Retry-After``.  ``None`` leaves
        every failure to ``retries`` and ``retry_delay``.

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
        # Declared here, with their defaults: Airflow applies default_args, and checks the
        # arguments of partial() and expand(), through each operator class's own __init__.
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)


class FetchCompanyTicketsOperator(ClubCollectBaseOperator):
    """
    Fetch every ticket of a company in one status, all pages, oldest first, each once.

    The tickets go to XCom as a list of dicts.  For large exports give ``output_path``: the
    tickets are then streamed there as JSON lines, one write per page, holding only the pages
    read ahead in memory, and only ``{"path": ..., "count": N}`` goes to XCom.

    An export is data other DAGs depend on, so with ``output_path`` the task emits an asset event
    for the file (extra: ``company_id``, ``status``, ``count``) when it succeeds.  A fixed path is
    the task's outlet ``Asset(output_path)``; a templated one is emitted through the outlet
    ``AssetAlias("clubcollect_export.<dag_id>.<task_id>")`` (:attr:`export_alias`), which a
    downstream DAG can be scheduled on.  With the OpenLineage provider installed, the company's
    ticket list is reported as the input dataset and the file as the output dataset.

    :param str company_id: the company (templated).
    :param str status: ``unanswered`` (default), ``answered`` or ``archived`` (templated).
    :param int page_size: tickets per request, 1 to 100.
    :param str | None output_path: an ``ObjectStoragePath`` URL such as ``file:///data/tickets.jsonl`` or
        ``s3://bucket/tickets.jsonl`` (templated); ``None`` to return the tickets.
    :param int max_concurrency: pages in flight at once, at least 1 (default 8).
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.

    .. seealso:: :ref:`howto/operator:FetchCompanyTicketsOperator` and :ref:`lineage`
    """

    template_fields: Sequence[str] = ("company_id", "status", "output_path")
    export_alias: str | None
    """The name of the :class:`~airflow.sdk.AssetAlias` the export is emitted through (templated paths)."""

    def __init__(
        self,
        *,
        company_id: str,
        status: str = STATUS_UNANSWERED,
        page_size: int = MAX_PAGE_SIZE,
        output_path: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.company_id = company_id
        self.status = status
        self.page_size = validate_page_size(page_size)
        self.output_path = output_path
        self.max_concurrency = check_concurrency(max_concurrency)
        self._exported: dict[str, Any] | None = None
        if _is_literal(status):
            validate_status(status)
        # The export's outlet: its asset when the path is fixed, else an alias named after the task.
        self.export_alias = None
        if output_path:
            from airflow.providers.common.compat.sdk import Asset, AssetAlias

            if _is_literal(output_path):
                outlet: Asset | AssetAlias = Asset(output_path)
            else:
                owner = f"{self.dag.dag_id}." if self.has_dag() else ""  # type: ignore[no-untyped-call]
                self.export_alias = f"clubcollect_export.{owner}{self.task_id}"
                outlet = AssetAlias(self.export_alias)
            self.outlets = [*self.outlets, outlet]

    def execute(self, context: Context) -> list[CompanyTicket] | dict[str, Any]:
        company_id = validate_id(self.company_id, "company_id")
        status = validate_status(self.status)
        tickets = self.hook.iter_company_tickets(
            company_id, status, self.page_size, max_concurrency=self.max_concurrency
        )
        if not self.output_path:
            result = list(tickets)
            self.log.info("Fetched %d %s tickets of company %r.", len(result), status, company_id)
            return result
        exported = self._stream(tickets, str(self.output_path))
        self._emit_export(
            context, exported["path"], {"company_id": company_id, "status": status, "count": exported["count"]}
        )
        self._exported = exported
        return exported

    def _emit_export(self, context: Context, url: str, extra: dict[str, Any]) -> None:
        """Record the export's asset event; Airflow registers it when the task succeeds."""
        from airflow.providers.common.compat.sdk import Asset, AssetAlias

        events = context.get("outlet_events")
        if events is None:  # execute() called outside a task run: there is no asset machinery to tell
            return
        if self.export_alias is None:
            events[Asset(url)].extra = extra
        else:
            events[AssetAlias(self.export_alias)].add(Asset(url), extra=extra)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """
        OpenLineage: the company's ticket list as the input dataset, the export file as the output.

        Called by the OpenLineage provider (an optional extra) after the task succeeded.

        :param Any task_instance: the finished task instance (unused: the operator kept what it read).
        :return: an ``OperatorLineage``.

        .. seealso:: :ref:`lineage`
        """
        from urllib.parse import urlsplit

        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.common.compat.sdk import ObjectStoragePath
        from airflow.providers.openlineage.extractors import OperatorLineage

        server = urlsplit(self.hook.settings.base_url)
        source = Dataset(
            namespace=f"clubcollect://{server.netloc}",
            name=f"companies/{self.company_id}/tickets/{self.status}",
        )
        if self._exported is None:
            return OperatorLineage(inputs=[source])
        path = ObjectStoragePath(self._exported["path"])
        export = OutputDataset(
            namespace=path.namespace,
            name=path.key,
            outputFacets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=self._exported["count"])},
        )
        return OperatorLineage(inputs=[source], outputs=[export])

    def _stream(self, tickets: Iterable[Mapping[str, Any]], url: str) -> dict[str, Any]:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        path = ObjectStoragePath(url)
        if path.protocol in ("file", "local", ""):
            path.parent.mkdir(parents=True, exist_ok=True)
        encode = json.JSONEncoder(ensure_ascii=False).encode
        count = 0
        lines: list[str] = []
        try:
            with path.open("w", encoding="utf-8") as sink:  # type: ignore[no-untyped-call]
                # One write per page: a write through ObjectStoragePath costs far more than a line.
                for ticket in tickets:
                    lines.append(encode(ticket))
                    if len(lines) == self.page_size:
                        sink.write("\n".join(lines) + "\n")
                        count += len(lines)
                        lines.clear()
                if lines:
                    sink.write("\n".join(lines) + "\n")
                    count += len(lines)
        except BaseException:
            # Never leave a partial export where a downstream task could mistake it for a whole one.
            try:
                path.unlink()
            except Exception:
                self.log.warning("Could not remove the partial export at %s.", url)
            raise
        self.log.info("Wrote %d %s tickets of company %r to %s.", count, self.status, self.company_id, url)
        return {"path": url, "count": count}


class FetchInvoiceTicketsOperator(ClubCollectBaseOperator):
    """
    Fetch an invoice's tickets (its thread).

    :param str invoice_id: the invoice (templated).
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.

    .. seealso:: :ref:`howto/operator:FetchInvoiceTicketsOperator`
    """

    template_fields: Sequence[str] = ("invoice_id",)

    def __init__(self, *, invoice_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.invoice_id = invoice_id

    def execute(self, context: Context) -> list[Ticket]:
        tickets = self.hook.get_invoice_tickets(validate_id(self.invoice_id, "invoice_id"))
        self.log.info("Fetched %d tickets of invoice %r.", len(tickets), self.invoice_id)
        return tickets


class CreateTicketOperator(ClubCollectBaseOperator):
    """
    Post a ticket (a reply from the company) on an invoice, never twice.

    Posting is not idempotent, so a lost answer is never retried blindly: the hook reads the
    thread and posts again only if the message is not there.  When Airflow retries the task, a
    try whose answer was lost is not posted a second time either: on Airflow 3.3+ the task's
    state store remembers the intent and the created ticket (see ``ClubCollectHook.create_ticket``);
    without one, the operator looks for the message among the invoice's tickets since the DAG
    run began.

    :param str invoice_id: the invoice (templated).
    :param str message: the ticket's text (templated); must not be empty.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.

    .. seealso:: :ref:`howto/operator:CreateTicketOperator`
    """

    template_fields: Sequence[str] = ("invoice_id", "message")

    def __init__(self, *, invoice_id: str, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.invoice_id = invoice_id
        self.message = message
        if _is_literal(message):
            validate_message(message)

    def execute(self, context: Context) -> Ticket:
        invoice_id = validate_id(self.invoice_id, "invoice_id")
        message = validate_message(self.message)
        # The hook remembers what an earlier try of this task posted: in the task state store
        # (Airflow 3.3+), else by reading the thread since the run began.
        ticket = self.hook.create_ticket(invoice_id, message, task_state_store=context.get("task_state_store"))
        self.log.info("Posted ticket %s on invoice %r.", ticket.get("ticket_id"), invoice_id)
        return ticket


class _BulkTicketOperator(ClubCollectBaseOperator):
    """Shared by archive and escalate: choose invoices, then act on each, concurrently."""

    template_fields: Sequence[str] = ("invoice_ids", "company_id", "reference_time")
    verb = ""

    def __init__(
        self,
        *,
        invoice_ids: Any = None,
        company_id: str | None = None,
        dry_run: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        reference_time: datetime | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (invoice_ids is None) == (company_id is None):
            raise ClubCollectValidationError(
                f"{type(self).__name__} takes either invoice_ids or company_id, not "
                f"{'both' if invoice_ids is not None else 'neither'}."
            )
        self.invoice_ids = invoice_ids
        self.company_id = company_id
        # Stored as is_dry_run: BaseOperator already has a dry_run() method.
        self.is_dry_run = bool(dry_run)
        self.max_concurrency = check_concurrency(max_concurrency)
        self.reference_time = reference_time

    def execute(self, context: Context) -> list[str]:
        if self.invoice_ids is not None:
            invoice_ids = invoice_ids_from(self.invoice_ids)
            self.log.info("%d invoices given.", len(invoice_ids))
        else:
            company_id = validate_id(self.company_id, "company_id")
            now = run_reference_time(self.reference_time, context)
            invoice_ids = self._select(company_id, now)
        if self.is_dry_run:
            for invoice_id in invoice_ids:
                self.log.info("Dry run: would %s invoice %s.", self.verb, invoice_id)
            self.log.info("Dry run: would %s %d invoices; nothing changed.", self.verb, len(invoice_ids))
            return invoice_ids
        # One limiter for every request of the action: a 429 slows all of them down.
        with self.hook._limited(AdaptiveLimiter(self.max_concurrency)):
            result = run_bulk(self._act, invoice_ids, max_concurrency=self.max_concurrency, verb=self.verb)
        result.raise_for_failures(self.verb)
        return result.done

    def _select(self, company_id: str, now: datetime) -> list[str]:
        # Every page is read before the first action, so acting cannot make the paging skip tickets.
        status = self._status()
        tickets = self.hook.get_company_tickets(company_id, status, max_concurrency=self.max_concurrency)
        chosen, rule = self._choose(tickets, now)
        self.log.info(
            "%d of %d %s threads of company %r %s (now = %s).",
            len(chosen),
            len({t["invoice_id"] for t in tickets}),
            status,
            company_id,
            rule,
            now.isoformat(),
        )
        return chosen

    def _status(self) -> str:
        raise NotImplementedError

    def _choose(self, tickets: Sequence[Mapping[str, Any]], now: datetime) -> tuple[list[str], str]:
        """The invoices to act on, and the rule that chose them, for the log."""
        raise NotImplementedError

    def _act(self, invoice_id: str) -> None:
        raise NotImplementedError


class ArchiveTicketsOperator(_BulkTicketOperator):
    """
    Archive the tickets of invoices: given ones, or a company's threads that went stale.

    Give ``invoice_ids`` (ID strings, or ticket dicts such as ``FetchCompanyTicketsOperator``'s
    output), or ``company_id`` with ``inactive_for``: then every thread in ``status`` whose last
    activity is older than ``inactive_for`` is archived.  All pages are read before the first
    archive, so archiving cannot make the paging skip tickets.

    :param list[str] | list[dict] invoice_ids: invoice IDs or ticket dicts (templated); de-duplicated.
    :param str | None company_id: the company whose stale threads to archive (templated).
    :param str status: the threads to consider, ``answered`` (default) or ``unanswered`` (templated).
    :param timedelta | None inactive_for: how long a thread must have been without activity.
    :param bool dry_run: only log and return what would be archived.
    :param int max_concurrency: archive requests in flight at once (default 8; a 429 halves it for the rest).
    :param datetime | str | None reference_time: "now" for the selection (templated); default the current UTC time.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :return: the sorted invoice IDs archived (with ``dry_run``, that would be).

    .. seealso:: :ref:`howto/operator:ArchiveTicketsOperator`
    """

    template_fields: Sequence[str] = (*_BulkTicketOperator.template_fields, "status")
    verb = "archive"

    def __init__(
        self,
        *,
        status: str = STATUS_ANSWERED,
        inactive_for: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.status = status
        self.inactive_for = inactive_for
        if self.company_id is not None:
            check_duration(inactive_for, "inactive_for")
            if _is_literal(status):
                _check_archivable(status)

    def _status(self) -> str:
        return _check_archivable(self.status)

    def _choose(self, tickets: Sequence[Mapping[str, Any]], now: datetime) -> tuple[list[str], str]:
        inactive_for = check_duration(self.inactive_for, "inactive_for")
        return select_inactive(
            tickets, inactive_for, now
        ), f"had no activity for more than {human_duration(inactive_for)}"

    def _act(self, invoice_id: str) -> None:
        self.hook.archive_tickets(invoice_id)


def _check_archivable(status: object) -> str:
    status = validate_status(status)
    if status == STATUS_ARCHIVED:
        raise ClubCollectValidationError(
            f"status for archiving must be {STATUS_ANSWERED!r} or {STATUS_UNANSWERED!r}, got {status!r}: "
            "archived threads are archived already."
        )
    return status


class EscalateTicketsOperator(_BulkTicketOperator):
    """
    Assign the tickets of invoices to ClubCollect support: given ones, or threads unanswered too long.

    Give ``invoice_ids`` (ID strings or ticket dicts), or ``company_id`` with ``unanswered_for``:
    then every unanswered thread whose oldest unanswered customer ticket is older than
    ``unanswered_for`` is assigned to support.

    :param list[str] | list[dict] invoice_ids: invoice IDs or ticket dicts (templated); de-duplicated.
    :param str | None company_id: the company whose long-unanswered threads to escalate (templated).
    :param timedelta | None unanswered_for: how long a thread must have waited for an answer.
    :param bool dry_run: only log and return what would be escalated.
    :param int max_concurrency: requests in flight at once (default 8; a 429 halves it for the rest).
    :param datetime | str | None reference_time: "now" for the selection (templated); default the current UTC time.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :return: the sorted invoice IDs assigned to support (with ``dry_run``, that would be).

    .. seealso:: :ref:`howto/operator:EscalateTicketsOperator`
    """

    verb = "assign to support"

    def __init__(self, *, unanswered_for: timedelta | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unanswered_for = unanswered_for
        if self.company_id is not None:
            check_duration(unanswered_for, "unanswered_for")

    def _status(self) -> str:
        return STATUS_UNANSWERED

    def _choose(self, tickets: Sequence[Mapping[str, Any]], now: datetime) -> tuple[list[str], str]:
        unanswered_for = check_duration(self.unanswered_for, "unanswered_for")
        return select_unanswered(tickets, unanswered_for, now), f"waited for more than {human_duration(unanswered_for)}"

    def _act(self, invoice_id: str) -> None:
        self.hook.assign_tickets_to_support(invoice_id)
