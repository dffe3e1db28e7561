"""The ClubCollect hook: every call of the Tickets API, sync over one pooled session, and the async read."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import threading
import time
import weakref
from contextvars import copy_context
from dataclasses import astuple
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_clubcollect import observability, wire
from airflow_provider_clubcollect.bulk import run_bulk
from airflow_provider_clubcollect.connection import CONN_FORM, missing_connection, settings_from_airflow_connection
from airflow_provider_clubcollect.exceptions import (
    ClubCollectAmbiguousError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectServerError,
)
from airflow_provider_clubcollect.get_provider_info import CONN_TYPE, DEFAULT_CONN_ID
from airflow_provider_clubcollect.limiter import DEFAULT_MAX_CONCURRENCY, AdaptiveLimiter
from airflow_provider_clubcollect.paging import CompanyTicketPager
from airflow_provider_clubcollect.retry import Backoff, as_backoff
from airflow_provider_clubcollect.selection import to_utc
from airflow_provider_clubcollect.transport import SyncTransport, call_async, call_sync
from airflow_provider_clubcollect.version_compat import aget_connection, amask_secret, mask_secret

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
    from concurrent.futures import Future

    import requests

    from airflow_provider_clubcollect.bulk import BulkResult
    from airflow_provider_clubcollect.connection import ClientSettings
    from airflow_provider_clubcollect.transport import AsyncTransport

__all__ = ["ClubCollectHook"]

log = logging.getLogger(__name__)

#: Connections kept open per hook: enough for the default concurrency of paging and bulk actions.
DEFAULT_POOL_SIZE = 10
CLOCK_SKEW = timedelta(minutes=5)


class ClubCollectHook(BaseHook, contextlib.AbstractContextManager["ClubCollectHook"]):
    """
    Talk to the ClubCollect Tickets API over one pooled, thread-safe ``requests.Session``.

    :param str clubcollect_conn_id: the Airflow connection of type ``clubcollect``.
    :param float | None timeout: seconds one request may take; overrides the ``timeout`` extra.
    :param int | None max_retries: retries per request, 0 to 100; overrides the ``max_retries`` extra.
    :param Backoff | None backoff: the waits between retries of a request; ``None`` for the defaults.
    :param int pool_size: HTTP connections kept open; at least the number of threads sharing the hook.

    .. seealso:: :ref:`hook`, and :ref:`connection` for the connection it reads.
    """

    conn_name_attr = "clubcollect_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "ClubCollect"

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        try:
            from wtforms import IntegerField, StringField
            from wtforms.validators import NumberRange, Optional
        except ImportError:  # Airflow 3.0 and 3.1 without FAB: keep get_ui_field_behaviour's fields
            return {}
        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
            from flask_babel import lazy_gettext
        except ImportError:  # Airflow 3.0 and 3.1 build the form without them (and mock them when present)
            BS3TextFieldWidget, lazy_gettext = None, str

        widgets: dict[str, Any] = {}
        for name, field in CONN_FORM["conn-fields"].items():
            schema, whole = field["schema"], "integer" in field["schema"]["type"]
            bounds = [NumberRange(min=schema.get("minimum"), max=schema.get("maximum"))] if whole else []
            # Seconds may be fractional: wtforms' number fields are whole numbers only.
            widgets[name] = (IntegerField if whole else StringField)(
                lazy_gettext(field["label"]),
                validators=[Optional(), *bounds],
                description=field["description"],
                default=schema["default"],
                widget=BS3TextFieldWidget and BS3TextFieldWidget(),
            )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {key.replace("-", "_"): value for key, value in CONN_FORM["ui-field-behaviour"].items()}

    def __init__(
        self,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff: Backoff | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clubcollect_conn_id = clubcollect_conn_id
        self._timeout = timeout
        self._max_retries = None if max_retries is None else wire.check_int(max_retries, "max_retries", low=0, high=100)
        self.backoff: Backoff = as_backoff(backoff) or Backoff()
        self._pool_size = pool_size
        self._transport: SyncTransport | None = None
        self._lock = threading.Lock()
        self._limiter: AdaptiveLimiter | None = None
        self._aclient: _SharedClient | None = None

    @functools.cached_property
    def settings(self) -> ClientSettings:
        """The checked connection settings, read from Airflow once."""
        try:
            conn = self.get_connection(self.clubcollect_conn_id)
        except AirflowNotFoundException:
            raise missing_connection(self.clubcollect_conn_id) from None
        settings = settings_from_airflow_connection(conn, timeout=self._timeout, max_retries=self._max_retries)
        for secret in settings.secrets:  # also a key stripped of whitespace, and a budget_url's password
            mask_secret(secret)
        return settings

    def _get_transport(self) -> SyncTransport:
        with self._lock:
            if self._transport is None:
                self._transport = SyncTransport(self.settings, pool_size=self._pool_size)
            return self._transport

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session``, carrying the headers every request needs; :meth:`close` releases it."""
        return self._get_transport().session

    def close(self) -> None:
        """
        Close the session and its pooled connections.

        .. seealso:: :ref:`hook`
        """
        with self._lock:
            if self._transport is not None:
                self._transport.session.close()
                self._transport = None

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, request: wire.ApiRequest, max_retries: int | None = None) -> Any:
        send = self._get_transport().send
        send = send if self._limiter is None else functools.partial(self._limiter.send, send)
        return call_sync(request, self.backoff, self.settings.max_retries if max_retries is None else max_retries, send)

    def get_invoice_tickets(self, invoice_id: str) -> list[wire.Ticket]:
        """
        Read an invoice's tickets (its thread).

        :param str invoice_id: the invoice.

        .. seealso:: :ref:`hook`
        """
        request = wire.get_invoice_tickets_request(invoice_id)
        return wire.parse_tickets(request, self._call(request))

    def create_ticket(self, invoice_id: str, message: str, *, task_state_store: Any = None) -> wire.Ticket:
        """
        Post a ticket (a reply from the company) on an invoice, never twice.

        :param str invoice_id: the invoice.
        :param str message: the ticket's text; must not be empty or whitespace.
        :param Any task_state_store: a task state store (``get``/``set``); by default the running task's.

        .. seealso:: :ref:`hook` ("Never twice") and :ref:`howto/operator:CreateTicketOperator`
        """
        request = wire.create_ticket_request(invoice_id, message)
        try:
            from airflow.providers.common.compat.sdk import get_current_context  # heavy on Airflow 2

            context: Mapping[str, Any] = get_current_context()
        except Exception:  # no running task
            context = {}
        store = context.get("task_state_store") if task_state_store is None else task_state_store
        key = "clubcollect.create_ticket." + hashlib.sha256(f"{invoice_id}\0{message}".encode()).hexdigest()[:32]
        earlier = store.get(key) if store is not None else None
        earlier = earlier if isinstance(earlier, dict) else {}
        intent_at, since = datetime.now(timezone.utc).isoformat(), datetime.now(timezone.utc) - CLOCK_SKEW
        posted = earlier.get("ticket")
        if not posted and (earlier_since := _earlier_try_since(context, earlier, recorded=store is not None)):
            posted = _newest_posted(self.get_invoice_tickets(invoice_id), message, earlier_since)
        if posted:
            observability.count("creates_already_posted", conn_id=self.clubcollect_conn_id)
            intent_at = earlier.get("intent_at", intent_at)
            self.log.info(
                "An earlier try of this task posted this message on invoice %r (ticket_id %s); not posting again.",
                invoice_id,
                posted.get("ticket_id"),
            )
        elif store is not None:
            store.set(key, {"intent_at": intent_at, "ticket": None})
        max_retries, posts, lost = self.settings.max_retries, 0, 0
        while not posted:
            # One budget for the call: POSTs retried inside call_sync() and sent again here are max_retries + 1.
            try:
                posted = wire.parse_ticket(request, self._call(request, max_retries - posts))
                self.log.info("Posted ticket %s on invoice %r.", posted.get("ticket_id"), invoice_id)
            except ClubCollectAmbiguousError as exc:
                lost, posts = lost + 1, posts + exc.attempts
                wait = max(self.backoff.delay(lost), self.settings.timeout if exc.timed_out else 0)
                self.log.warning(
                    "%s Reading invoice %r in %.1f s to see whether it was created.", exc, invoice_id, wait
                )
                time.sleep(wait)
                if posted := _newest_posted(self.get_invoice_tickets(invoice_id), message, since):
                    observability.count("creates_already_posted", conn_id=self.clubcollect_conn_id)
                    self.log.info(
                        "The ticket was created (ticket_id %s) although its answer was lost; not posting again.",
                        posted.get("ticket_id"),
                    )
                elif posts > max_retries:
                    raise ClubCollectServerError(
                        f"Could not {request.description}: the answer was lost {lost} times in {posts} attempts "
                        f"(the last got {exc.failure}) and the ticket is not on the invoice.",
                        status_code=exc.status_code,
                    ) from exc
                else:
                    self.log.warning("The ticket is not on invoice %r; posting it again.", invoice_id)
            except ClubCollectError:
                if lost == 0 and store is not None:  # every POST refused for certain: nothing created
                    store.set(key, {})
                raise
        if store is not None:
            store.set(key, {"intent_at": intent_at, "ticket": posted})
        return cast("wire.Ticket", dict(posted))

    def archive_tickets(self, invoice_id: str) -> None:
        """
        Archive an invoice's tickets; idempotent.

        :param str invoice_id: the invoice.

        .. seealso:: :ref:`howto/operator:ArchiveTicketsOperator`
        """
        self._call(wire.invoice_action_request(invoice_id, wire.ACTION_ARCHIVE))

    def assign_tickets_to_support(self, invoice_id: str) -> None:
        """
        Hand an invoice's tickets to ClubCollect's support team.  Idempotent.

        :param str invoice_id: the invoice.

        .. seealso:: :ref:`howto/operator:EscalateTicketsOperator`
        """
        self._call(wire.invoice_action_request(invoice_id, wire.ACTION_ASSIGN_TO_SUPPORT))

    def for_each_invoice(
        self,
        action: Callable[[str], object],
        invoice_ids: Iterable[str],
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        verb: str = "act on",
    ) -> BulkResult:
        """
        Call ``action`` on every invoice, at most ``max_concurrency`` at a time, and say which failed.

        :param Callable action: the call for one invoice, such as :meth:`archive_tickets`; run from several threads.
        :param Iterable[str] invoice_ids: the invoices.
        :param int max_concurrency: requests in flight at once, at least 1.
        :param str verb: what the action does, for the log and the error.

        .. seealso:: :ref:`hook`
        """
        self._limiter = AdaptiveLimiter(max_concurrency)
        try:
            return run_bulk(action, list(invoice_ids), self._limiter, verb=verb)
        finally:
            self._limiter = None

    def get_company_tickets_page(
        self, company_id: str, status: str, page_number: int = 1, page_size: int = wire.MAX_PAGE_SIZE
    ) -> dict[str, Any]:
        """
        One page of a company's tickets in one status, ``{"tickets": [...], "page": {...}}`` as the API returns it.

        :param str company_id: the company.
        :param str status: ``unanswered``, ``answered`` or ``archived``.
        :param int page_number: the page, counted from 1.
        :param int page_size: tickets per page, 1 to 100.

        .. seealso:: :ref:`hook`
        """
        request = wire.company_tickets_page_request(company_id, status, page_number, page_size)
        payload = self._call(request)
        wire.parse_tickets(request, payload, company=True)
        wire.parse_page_info(request, payload)
        return dict(payload)

    def iter_company_tickets(
        self,
        company_id: str,
        status: str,
        page_size: int = wire.MAX_PAGE_SIZE,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> Iterator[wire.CompanyTicket]:
        """
        Every ticket of a company in one status, oldest first, each once, even while the list changes.

        :param str company_id: the company.
        :param str status: ``unanswered``, ``answered`` or ``archived``.
        :param int page_size: tickets per page, 1 to 100.
        :param int max_concurrency: pages in flight at once, 1 to ``pool_size``; a 429 halves it for the read.

        .. seealso:: :ref:`hook` ("Paging")
        """
        return self._iter_pages(CompanyTicketPager(company_id, status, page_size, max_concurrency=max_concurrency))

    def _iter_pages(self, pager: CompanyTicketPager) -> Iterator[wire.CompanyTicket]:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        backoff, max_retries, limiter = self.backoff, self.settings.max_retries, AdaptiveLimiter(pager.max_in_flight)
        send = functools.partial(limiter.send, self._get_transport().send)
        pool = ThreadPoolExecutor(max_workers=pager.max_in_flight, thread_name_prefix="clubcollect-page")
        pending: dict[Future[Any], wire.ApiRequest] = {}

        def send_what_the_pager_allows() -> None:
            while len(pending) < limiter.limit and (request := pager.next_request()) is not None:
                # In a copy of the caller's context: the requests' spans are children of the task's.
                pending[pool.submit(copy_context().run, call_sync, request, backoff, max_retries, send)] = request

        try:
            while not pager.done:
                send_what_the_pager_allows()
                if not pending:  # pragma: no cover - a pager bug; never spin
                    raise ClubCollectError(f"Paging stalled at {pager.progress()}.")
                answered, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in answered:
                    pager.accept(pending.pop(future), future.result())
                while (tickets := pager.pop()) is not None:
                    if pager.done or pager.last_page_read % max(1, pager.total_pages // 10) == 0:
                        self.log.info("%s tickets of company %r: %s.", pager.status, pager.company_id, pager.progress())
                    send_what_the_pager_allows()  # the next pages come while the consumer works
                    yield from tickets
        finally:
            # Requests no longer needed are dropped; only a finished read waits for those in flight.
            pool.shutdown(wait=pager.done, cancel_futures=True)

    def get_company_tickets(
        self,
        company_id: str,
        status: str,
        page_size: int = wire.MAX_PAGE_SIZE,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> list[wire.CompanyTicket]:
        """
        :meth:`iter_company_tickets` as a list.

        :param str company_id: the company.
        :param str status: ``unanswered``, ``answered`` or ``archived``.
        :param int page_size: tickets per page, 1 to 100.
        :param int max_concurrency: pages in flight at once, at least 1.

        .. seealso:: :ref:`hook` ("Paging")
        """
        return list(self.iter_company_tickets(company_id, status, page_size, max_concurrency=max_concurrency))

    async def __aenter__(self) -> ClubCollectHook:
        key = (self.clubcollect_conn_id, self._timeout, self._max_retries)
        clients = _shared.setdefault(asyncio.get_running_loop(), {})
        self._aclient = clients.get(key) or clients.setdefault(key, _SharedClient(key))
        self._aclient.hooks += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._aclient = self._aclient, None
        if client is not None:
            client.hooks -= 1
            if not client.hooks:
                del _shared[asyncio.get_running_loop()][client.key]
                client._transport, last = None, client._transport
                await asyncio.shield(client._release(last))

    async def aget_company_tickets(
        self,
        company_id: str,
        status: str,
        page_size: int = wire.MAX_PAGE_SIZE,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> list[wire.CompanyTicket]:
        """
        :meth:`get_company_tickets` on an event loop; inside ``async with hook:`` hooks share one client.

        :param str company_id: the company.
        :param str status: ``unanswered``, ``answered`` or ``archived``.
        :param int page_size: tickets per page, 1 to 100.
        :param int max_concurrency: pages in flight at once, at least 1.

        .. seealso:: :ref:`hook` ("Paging")
        """
        pager = CompanyTicketPager(company_id, status, page_size, max_concurrency=max_concurrency)
        tickets: list[wire.CompanyTicket] = []
        pending: dict[asyncio.Task[Any], wire.ApiRequest] = {}
        async with contextlib.nullcontext() if self._aclient else self:
            assert self._aclient is not None
            async with self._aclient.transport() as transport:
                backoff, max_retries = self.backoff, transport.settings.max_retries
                limiter = AdaptiveLimiter(pager.max_in_flight)
                send = functools.partial(limiter.asend, transport.send)
                try:
                    while not pager.done:
                        while len(pending) < limiter.limit and (request := pager.next_request()) is not None:
                            pending[asyncio.create_task(call_async(request, backoff, max_retries, send))] = request
                        if not pending:  # pragma: no cover - a pager bug; never spin
                            raise ClubCollectError(f"Paging stalled at {pager.progress()}.")
                        answered, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        for task in answered:
                            pager.accept(pending.pop(task), task.result())
                        while (page := pager.pop()) is not None:
                            tickets.extend(page)
                finally:
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
        return tickets

    def test_connection(self) -> tuple[bool, str]:
        """
        ``(ok, message)``, never raising: an invoice that cannot exist answers 404 to a good key.

        .. seealso:: :ref:`connection` ("Testing the connection")
        """
        try:
            request = wire.get_invoice_tickets_request("airflow-provider-clubcollect-connection-test")
            self._call(request, max_retries=min(1, self.settings.max_retries))  # a person waits
        except ClubCollectNotFoundError as exc:
            if exc.error_code == wire.ERROR_INVALID_INVOICE_ID:
                return True, (
                    f"Connection works: {self.settings.base_url} accepted the API key "
                    f"(a test invoice answered 404 {wire.ERROR_INVALID_INVOICE_ID}, as expected)."
                )
            return False, f"{self.settings.base_url}: {exc}"
        except Exception as exc:
            return False, str(exc) if isinstance(exc, ClubCollectError) else f"{type(exc).__name__}: {exc}"
        return False, "The API answered a test read of an invoice that cannot exist; is the base URL right?"


def _newest_posted(tickets: Iterable[Mapping[str, Any]], message: str, since: datetime) -> wire.Ticket | None:
    """The newest company ticket with exactly ``message`` dated at or after ``since``; an unreadable date counts."""
    found = [
        ticket
        for ticket in tickets
        if ticket.get("sender") == wire.SENDER_COMPANY
        and ticket.get("message") == message
        and ((date := wire.parse_iso_datetime(ticket.get("date"))) is None or date >= since)
    ]
    return cast("wire.Ticket", dict(found[-1])) if found else None


def _earlier_try_since(context: Mapping[str, Any], earlier: Mapping[str, Any], *, recorded: bool) -> datetime | None:
    """Where to look for a ticket an earlier try posted: since its recorded intent, else since a retried run began."""
    if recorded:
        if not earlier.get("intent_at"):
            return None
        # An unreadable or hand-edited intent looks at the whole thread.
        intent = wire.parse_iso_datetime(earlier["intent_at"]) or datetime.min.replace(tzinfo=timezone.utc)
        return max(intent, datetime.min.replace(tzinfo=timezone.utc) + CLOCK_SKEW) - CLOCK_SKEW
    ti = context.get("ti")
    if ti is None or (getattr(ti, "try_number", 1) or 1) <= 1:
        return None
    # run_after survives clearing the task, and for a scheduled run it is the end of its interval.
    dag_run = context.get("dag_run")
    known = [to_utc(value) for name in ("run_after", "start_date") if (value := getattr(dag_run, name, None))]
    return (min(known) if known else datetime.now(timezone.utc) - timedelta(days=1)) - CLOCK_SKEW


CONNECTION_TTL = 60.0
POLLS_IN_FLIGHT = 8
_Key = tuple[str, float | None, int | None]


class _SharedClient:
    """One connection's ``httpx`` client on one event loop, shared by its hooks, rebuilt when the connection changes."""

    def __init__(self, key: _Key) -> None:
        self.key = key
        self.hooks = 0
        self._transport: AsyncTransport | None = None
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._polls = asyncio.Semaphore(POLLS_IN_FLIGHT)

    @contextlib.asynccontextmanager
    async def transport(self) -> AsyncIterator[AsyncTransport]:
        async with self._polls:
            async with self._lock:
                if self._transport is None or asyncio.get_running_loop().time() - self._read_at >= CONNECTION_TTL:
                    await self._read()
                transport = cast("AsyncTransport", self._transport)
            transport.reads += 1
            try:
                yield transport
            finally:
                transport.reads -= 1
                await asyncio.shield(self._release(transport))

    async def _read(self) -> None:
        from airflow_provider_clubcollect.transport import AsyncTransport  # tests count the clients built

        try:
            conn = await aget_connection(self.key[0])
        except AirflowNotFoundException:
            raise missing_connection(self.key[0]) from None
        except Exception as exc:
            if self._transport is None:
                raise
            # Airflow's API server may be restarting: keep the last read, read again at the next poll.
            log.warning("Could not read connection %r again (%s); keeping the last read.", self.key[0], exc)
            return
        settings = settings_from_airflow_connection(conn, timeout=self.key[1], max_retries=self.key[2])
        for secret in settings.secrets:
            await amask_secret(secret)
        self._read_at = asyncio.get_running_loop().time()
        if self._transport is None or astuple(settings) != astuple(self._transport.settings):
            # Importing httpx and building its TLS context take a tenth of a second or more: off the loop.
            old, self._transport = self._transport, await asyncio.to_thread(AsyncTransport, settings)
            await self._release(old)

    async def _release(self, transport: AsyncTransport | None) -> None:
        if transport is not None and transport is not self._transport and not transport.reads:
            await transport.aclose()


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, _SharedClient]] = weakref.WeakKeyDictionary()
