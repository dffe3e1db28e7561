"""Operators for the ticket workflows: export, reply, choose threads, archive stale ones, escalate to support."""

from __future__ import annotations

import json
from itertools import islice
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_clubcollect import escalation, selection, wire
from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY
from airflow_provider_clubcollect.operators.base import ClubCollectBaseOperator
from airflow_provider_clubcollect.retry import DEFAULT_TASK_RETRY_POLICY
from airflow_provider_clubcollect.review import threads_table

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime, timedelta

    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.wire import CompanyTicket, Ticket

__all__ = [
    "ArchiveTicketsOperator",
    "CreateTicketOperator",
    "EscalateTicketsOperator",
    "FetchCompanyTicketsOperator",
    "FetchInvoiceTicketsOperator",
    "SelectThreadsOperator",
]


class FetchCompanyTicketsOperator(ClubCollectBaseOperator):
    """
    Fetch every ticket of a company in one status, all pages, oldest first, each once.

    :param str company_id: the company (templated).
    :param str status: ``unanswered`` (default), ``answered`` or ``archived`` (templated).
    :param int page_size: tickets per request, 1 to 100.
    :param str | None output_path: an ``ObjectStoragePath`` URL to write JSON lines to (templated), or ``None``.
    :param int max_concurrency: pages in flight at once, at least 1 (default 8).
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: request back-off, as for :class:`ClubCollectBaseOperator`.
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy, as for :class:`ClubCollectBaseOperator`.

    .. seealso:: :ref:`howto/operator:FetchCompanyTicketsOperator` and :ref:`lineage`
    """

    template_fields: Sequence[str] = ("company_id", "status", "output_path")
    _export: tuple[ObjectStoragePath, int] | None = None  # what execute wrote, for the lineage

    def __init__(
        self,
        *,
        company_id: str,
        status: str = wire.STATUS_UNANSWERED,
        page_size: int = wire.MAX_PAGE_SIZE,
        output_path: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        selection.check_literal(wire.check_id, company_id, "company_id")
        selection.check_literal(wire.check_status, status)
        self.company_id, self.status, self.output_path = company_id, status, output_path
        self.page_size = wire.check_int(page_size, "page_size", high=wire.MAX_PAGE_SIZE)
        self.max_concurrency = wire.check_int(max_concurrency, "max_concurrency")
        fixed = isinstance(output_path, str) and selection.is_literal(output_path)
        owner = f"{self.dag.dag_id}." if self.has_dag() else ""  # type: ignore[no-untyped-call]
        self.export_alias = None if fixed or not output_path else f"clubcollect_export.{owner}{self.task_id}"
        if output_path:
            from airflow.providers.common.compat.sdk import Asset, AssetAlias

            self.outlets = [*self.outlets, AssetAlias(self.export_alias) if self.export_alias else Asset(output_path)]

    def execute(self, context: Context) -> list[CompanyTicket] | dict[str, Any]:
        tickets = self.hook.iter_company_tickets(
            self.company_id, self.status, self.page_size, max_concurrency=self.max_concurrency
        )
        if not self.output_path:
            result = list(tickets)
            self.log.info("Fetched %d %s tickets of company %r.", len(result), self.status, self.company_id)
            return result
        from airflow.providers.common.compat.sdk import Asset, AssetAlias, ObjectStoragePath

        url = str(self.output_path)
        path = ObjectStoragePath(url)
        if path.protocol in ("file", "local", ""):
            path.parent.mkdir(parents=True, exist_ok=True)
        encode = json.JSONEncoder(ensure_ascii=False).encode
        count = 0
        try:
            with path.open("w", encoding="utf-8") as sink:  # type: ignore[no-untyped-call]
                # One write per page: a write through ObjectStoragePath costs far more than a line.
                for page in iter(lambda: list(islice(tickets, self.page_size)), []):
                    sink.write("".join(f"{encode(ticket)}\n" for ticket in page))
                    count += len(page)
        except BaseException:
            # Never leave a partial export where a downstream task could mistake it for a whole one.
            try:
                path.unlink()
            except Exception:
                self.log.warning("Could not remove the partial export at %s.", url)
            raise
        self.log.info("Wrote %d %s tickets of company %r to %s.", count, self.status, self.company_id, url)
        self._export = path, count
        events = context.get("outlet_events")  # None when execute() is called outside a task run
        if events is not None:
            extra: dict[str, Any] = {"company_id": self.company_id, "status": self.status, "count": count}
            if self.export_alias is None:
                events[Asset(url)].extra = extra
            else:
                events[AssetAlias(self.export_alias)].add(Asset(url), extra=extra)
        return {"path": url, "count": count}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """
        OpenLineage: the company's ticket list as the input dataset, the export file as the output.

        :param Any task_instance: the finished task instance (unused: the operator kept what it read).

        .. seealso:: :ref:`lineage`
        """
        from urllib.parse import urlsplit

        from airflow.providers.common.compat.openlineage import facet
        from airflow.providers.openlineage.extractors import OperatorLineage

        server = urlsplit(self.hook.settings.base_url).netloc
        source = facet.Dataset(f"clubcollect://{server}", f"companies/{self.company_id}/tickets/{self.status}")
        if self._export is None:
            return OperatorLineage(inputs=[source])
        path, count = self._export
        rows = facet.OutputStatisticsOutputDatasetFacet(rowCount=count)
        export = facet.OutputDataset(path.namespace, path.key, {"outputStatistics": rows})
        return OperatorLineage(inputs=[source], outputs=[export])


class FetchInvoiceTicketsOperator(ClubCollectBaseOperator):
    """
    Fetch an invoice's tickets (its thread).

    :param str invoice_id: the invoice (templated).
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: request back-off, as for :class:`ClubCollectBaseOperator`.
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy, as for :class:`ClubCollectBaseOperator`.

    .. seealso:: :ref:`howto/operator:FetchInvoiceTicketsOperator`
    """

    template_fields: Sequence[str] = ("invoice_id",)

    def __init__(
        self,
        *,
        invoice_id: str,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        selection.check_literal(wire.check_id, invoice_id, "invoice_id")
        self.invoice_id = invoice_id

    def execute(self, context: Context) -> list[Ticket]:
        tickets = self.hook.get_invoice_tickets(self.invoice_id)
        self.log.info("Fetched %d tickets of invoice %r.", len(tickets), self.invoice_id)
        return tickets


class CreateTicketOperator(ClubCollectBaseOperator):
    """
    Post a ticket (a reply from the company) on an invoice, never twice, even across task retries.

    :param str invoice_id: the invoice (templated).
    :param str message: the ticket's text (templated); must not be empty.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: request back-off, as for :class:`ClubCollectBaseOperator`.
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy, as for :class:`ClubCollectBaseOperator`.

    .. seealso:: :ref:`howto/operator:CreateTicketOperator`
    """

    template_fields: Sequence[str] = ("invoice_id", "message")

    def __init__(
        self,
        *,
        invoice_id: str,
        message: str,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        selection.check_literal(wire.check_id, invoice_id, "invoice_id")
        selection.check_literal(wire.check_message, message)
        self.invoice_id, self.message = invoice_id, message

    def execute(self, context: Context) -> Ticket:
        return self.hook.create_ticket(self.invoice_id, self.message)  # checks both before the task state store


class _ThreadsOperator(ClubCollectBaseOperator):
    """Choose invoices (given, or a company's threads by a window of age), then act on each through the hook."""

    template_fields: Sequence[str] = ("invoice_ids", "company_id", "reference_time")
    status: str = wire.STATUS_UNANSWERED
    unanswered_for: timedelta | None = None
    inactive_for: timedelta | None = None
    verb = "select"
    _act: Callable[[str], None]  # what Archive and Escalate do to each invoice
    # What a run read and when it judged (an operator object runs one task instance), for the tables.
    _tickets: Sequence[Mapping[str, Any]] = ()
    _now: datetime | None = None

    def _configure(
        self,
        company_id: str | None,
        at_most: timedelta | None,
        max_concurrency: int,
        reference_time: Any,
        invoice_ids: Any = None,
        dry_run: bool = False,
    ) -> None:
        self._one_of("invoice_ids or company_id", invoice_ids, company_id)
        selection.check_literal(selection.invoice_ids_from, invoice_ids)
        selection.check_literal(wire.check_id, company_id, "company_id")
        selection.check_literal(selection.check_duration, at_most, "at_most")
        # is_dry_run: BaseOperator already has a dry_run() method.
        self.invoice_ids, self.company_id, self.is_dry_run = invoice_ids, company_id, bool(dry_run)
        self.at_most, self.reference_time = at_most, reference_time
        self.max_concurrency = wire.check_int(max_concurrency, "max_concurrency")
        if company_id is not None and selection.is_literal(self.status):
            self._status()

    def _one_of(self, names: str, first: object, second: object, *, needed: bool = True) -> None:
        """Refuse both of ``names`` (``"a or b"``) given, or, when ``needed``, neither."""
        if (first is None) == (second is None) and (first is not None or needed):
            raise ClubCollectValidationError(
                f"{type(self).__name__} takes either {names}, not {'both' if first is not None else 'neither'}."
            )

    def _status(self) -> str:
        """The status to select in, checked when the DAG is parsed (if literal) and once rendered."""
        status = wire.check_status(self.status)
        if status == wire.STATUS_ARCHIVED and self.verb == "archive":
            raise ClubCollectValidationError(
                "status for archiving must be 'answered' or 'unanswered', got 'archived': "
                "archived threads are archived already."
            )
        if self.unanswered_for is not None and status != wire.STATUS_UNANSWERED:
            raise ClubCollectValidationError(
                f"unanswered_for selects unanswered threads, so status must be 'unanswered', got {status!r}; "
                "use inactive_for for answered or archived threads."
            )
        return status

    def execute(self, context: Context) -> list[str]:
        return self._apply(self._chosen(context))

    def _apply(self, invoice_ids: list[str], failed: Mapping[str, str] | None = None) -> list[str]:
        """Log what a dry run would do, or act on every invoice; failures (and ``failed``) fail the task."""
        if self.is_dry_run:
            table = f"\n{threads_table(self._tickets, invoice_ids, self.company_id, self._now)}" if invoice_ids else ""
            self.log.info("Dry run: would %s %d invoices; nothing changed.%s", self.verb, len(invoice_ids), table)
            return invoice_ids
        result = self.hook.for_each_invoice(
            self._act, invoice_ids, max_concurrency=self.max_concurrency, verb=self.verb
        )
        result.failed.update(failed or {})
        result.raise_for_failures()
        return result.done

    def _chosen(self, context: Context) -> list[str]:
        if self.invoice_ids is not None:
            invoice_ids = selection.invoice_ids_from(self.invoice_ids)
            self._tickets = selection.ticket_dicts(self.invoice_ids)
            self.log.info("%d invoices given.", len(invoice_ids))
            return invoice_ids
        self._now = now = selection.to_utc(self.reference_time, context)
        status = self._status()
        # Every page is read before the first action: acting cannot make the paging skip tickets.
        company_id = cast("str", self.company_id)  # set when invoice_ids is not
        self._tickets = self.hook.get_company_tickets(company_id, status, max_concurrency=self.max_concurrency)
        unanswered = self.inactive_for is None and status == wire.STATUS_UNANSWERED
        more_than = self.unanswered_for if unanswered else self.inactive_for
        chosen = selection.select_threads(self._tickets, more_than, now, self.at_most, unanswered=unanswered)
        window = {"more than": more_than, "at most": self.at_most}
        self.log.info(
            "%d of %d %s threads of company %r %s for %s (now = %s).",
            len(chosen),
            len({t["invoice_id"] for t in self._tickets}),
            status,
            company_id,
            "waited" if unanswered else "had no activity",
            " and ".join(f"{b} {selection.human_duration(a)}" for b, a in window.items() if a is not None)
            or "any time",
            now.isoformat(),
        )
        return chosen


class SelectThreadsOperator(_ThreadsOperator):
    """
    Choose a company's threads by how long they have waited for an answer, or been without activity.

    :param str company_id: the company (templated).
    :param str status: ``unanswered`` (default), ``answered`` or ``archived`` (templated).
    :param timedelta | None unanswered_for: pick threads unanswered for more than this (``unanswered`` only).
    :param timedelta | None inactive_for: pick threads without activity for more than this.
    :param timedelta | None at_most: the upper bound of the same age; ``None`` for none.
    :param datetime | str | None reference_time: "now" (templated); default the current UTC time.
    :param int max_concurrency: pages in flight at once, at least 1 (default 8).
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: request back-off, as for :class:`ClubCollectBaseOperator`.
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy, as for :class:`ClubCollectBaseOperator`.

    .. seealso:: :ref:`howto/operator:SelectThreadsOperator`
    """

    template_fields: Sequence[str] = ("company_id", "reference_time", "status")

    def __init__(
        self,
        *,
        company_id: str,
        status: str = wire.STATUS_UNANSWERED,
        unanswered_for: timedelta | None = None,
        inactive_for: timedelta | None = None,
        at_most: timedelta | None = None,
        reference_time: datetime | str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        self._one_of("unanswered_for or inactive_for", unanswered_for, inactive_for, needed=False)
        selection.check_literal(selection.check_duration, unanswered_for, "unanswered_for")
        selection.check_literal(selection.check_duration, inactive_for, "inactive_for")
        self.status, self.unanswered_for, self.inactive_for = status, unanswered_for, inactive_for
        self._configure(company_id, at_most, max_concurrency, reference_time)

    def execute(self, context: Context) -> list[str]:
        chosen = self._chosen(context)
        if chosen:
            self.log.info("Chosen threads:\n%s", threads_table(self._tickets, chosen, self.company_id, self._now))
        return chosen


class ArchiveTicketsOperator(_ThreadsOperator):
    """
    Archive the tickets of the given invoices, or of a company's threads without activity for ``inactive_for``.

    :param list[str] | list[dict] invoice_ids: invoice IDs or ticket dicts (templated); de-duplicated.
    :param str | None company_id: the company whose stale threads to archive (templated).
    :param str status: the threads to consider, ``answered`` (default) or ``unanswered`` (templated).
    :param timedelta | None inactive_for: how long a thread must have been without activity.
    :param timedelta | None at_most: the longest time without activity to archive; ``None`` (default) for no bound.
    :param bool dry_run: only log and return what would be archived.
    :param int max_concurrency: requests in flight at once (default 8; a 429 halves it for the rest).
    :param datetime | str | None reference_time: "now" (templated); default the current UTC time.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: request back-off, as for :class:`ClubCollectBaseOperator`.
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy, as for :class:`ClubCollectBaseOperator`.

    .. seealso:: :ref:`howto/operator:ArchiveTicketsOperator`
    """

    template_fields: Sequence[str] = (*_ThreadsOperator.template_fields, "status")
    verb = "archive"

    def __init__(
        self,
        *,
        invoice_ids: Any = None,
        company_id: str | None = None,
        status: str = wire.STATUS_ANSWERED,
        inactive_for: timedelta | None = None,
        at_most: timedelta | None = None,
        dry_run: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        reference_time: datetime | str | None = None,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        self.status, self.inactive_for = status, inactive_for
        self._configure(company_id, at_most, max_concurrency, reference_time, invoice_ids, dry_run)
        if company_id is not None:
            selection.check_duration(inactive_for, "inactive_for")

    def _act(self, invoice_id: str) -> None:
        self.hook.archive_tickets(invoice_id)


class EscalateTicketsOperator(_ThreadsOperator):
    """
    Assign to ClubCollect support the given invoices, or a company's threads unanswered for ``unanswered_for``.

    :param list[str] | list[dict] invoice_ids: invoice IDs or ticket dicts (templated); de-duplicated.
    :param str | None company_id: the company whose long-unanswered threads to escalate (templated).
    :param timedelta | None unanswered_for: how long a thread must have waited for an answer.
    :param timedelta | None at_most: the longest wait to escalate; ``None`` (default) for no bound.
    :param bool | str escalate_again: escalate even threads escalated for their current episode (templated).
    :param str | None escalation_record: the Variable key of the record (templated); default derived.
    :param bool dry_run: only log and return what would be escalated; the record is read, never written.
    :param int max_concurrency: requests in flight at once (default 8; a 429 halves it for the rest).
    :param datetime | str | None reference_time: "now" (templated); default the current UTC time.
    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param Backoff | None backoff: request back-off, as for :class:`ClubCollectBaseOperator`.
    :param airflow.sdk.RetryPolicy | None retry_policy: task retry policy, as for :class:`ClubCollectBaseOperator`.

    .. seealso:: :ref:`howto/operator:EscalateTicketsOperator`
    """

    template_fields: Sequence[str] = (*_ThreadsOperator.template_fields, "escalate_again", "escalation_record")
    verb = "assign to support"
    _assigned: list[str]  # filled while a run acts (an operator object runs one task instance)

    def __init__(
        self,
        *,
        invoice_ids: Any = None,
        company_id: str | None = None,
        unanswered_for: timedelta | None = None,
        at_most: timedelta | None = None,
        escalate_again: bool | str = False,
        escalation_record: str | None = None,
        dry_run: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        reference_time: datetime | str | None = None,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        backoff: Backoff | None = None,
        retry_policy: Any = DEFAULT_TASK_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(clubcollect_conn_id=clubcollect_conn_id, backoff=backoff, retry_policy=retry_policy, **kwargs)
        self._configure(company_id, at_most, max_concurrency, reference_time, invoice_ids, dry_run)
        if company_id is not None:
            selection.check_duration(unanswered_for, "unanswered_for")
        selection.check_literal(escalation.check_flag, escalate_again)
        selection.check_literal(escalation.check_key, escalation_record)
        self.unanswered_for = unanswered_for
        self.escalate_again, self.escalation_record = escalate_again, escalation_record

    def execute(self, context: Context) -> list[str]:
        again = escalation.check_flag(self.escalate_again)
        self._assigned = []
        invoice_ids = self._chosen(context)
        key = self._record_key(context)
        record = escalation.load(key)  # before anything is assigned
        # Every thread read (whole tickets given, or the company's): the chosen ones' episodes, and
        # those answered since, to forget; threads given as bare IDs are read for theirs.
        episodes = {t.invoice_id: t.unanswered_since for t in selection.group_threads(self._tickets)}

        def read(invoice_id: str) -> None:
            tickets = sorted(self.hook.get_invoice_tickets(invoice_id), key=selection.ticket_date)
            episodes[invoice_id] = selection.Thread(invoice_id, tuple(map(dict, tickets))).unanswered_since

        bare = [i for i in invoice_ids if i not in episodes]
        result = self.hook.for_each_invoice(read, bare, max_concurrency=self.max_concurrency, verb="read the thread of")
        # Not assigned: without its thread, an invoice could be escalated twice for one episode.
        unread = {invoice_id: f"reading its thread: {why}" for invoice_id, why in result.failed.items()}
        done = {i: e for i, e in (record or {}).items() if escalation.episode(e) == episodes.get(i)}
        todo = [i for i in invoice_ids if i not in unread and (again or i not in done)]
        (self.log.warning if record is None else self.log.info)(
            "Escalation record: Airflow Variable %r, %s. %d of %d threads to assign to support; "
            "already escalated for their episode%s: %s.",
            key,
            "not in a task run: nothing read or kept" if record is None else f"{len(record)} threads remembered",
            len(todo),
            len(invoice_ids) - len(unread),
            " (escalate_again: once more)" if again else ", not again",
            ", ".join(f"{i} on {done[i].get('escalated_at', '?')}" for i in invoice_ids if i in done) or "none",
        )
        # A company's unanswered list is every waiting thread: what is not in it waits no more (a record
        # named by the DAG may hold other threads too, so there only threads seen answered are forgotten).
        complete = self.invoice_ids is None and self.escalation_record is None
        ended = [i for i in record or {} if i not in done and (complete or i in episodes)]
        try:
            # Threads that could not be read were not assigned: they fail the task beside those that failed.
            return self._apply(todo, unread)
        finally:
            if record is not None and not self.is_dry_run:
                escalation.save(key, record, {i: episodes.get(i) for i in self._assigned}, ended)

    def _record_key(self, context: Context) -> str:
        if self.escalation_record is not None:
            return escalation.check_key(self.escalation_record)
        conn_id = str(self.clubcollect_conn_id)
        if self.invoice_ids is None:
            return escalation.derived_key(conn_id, wire.check_id(self.company_id, "company_id"))
        ti = context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or (self.dag_id if self.has_dag() else "no_dag")  # type: ignore[no-untyped-call]
        map_index = getattr(ti, "map_index", -1)
        mapped = [str(map_index)] if isinstance(map_index, int) and map_index >= 0 else []
        return escalation.derived_key(conn_id, str(dag_id), str(getattr(ti, "task_id", None) or self.task_id), *mapped)

    def _act(self, invoice_id: str) -> None:
        self.hook.assign_tickets_to_support(invoice_id)
        self._assigned.append(invoice_id)  # list.append is atomic: safe from the bulk action's threads
