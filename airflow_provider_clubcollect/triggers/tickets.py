"""The trigger that waits, in the triggerer, for tickets awaiting an answer.

It only reads (GET): nothing that changes ClubCollect runs here, where a triggerer restart can run
the same code twice.  It uses the same request flow, retry policy, paging and selection as the
sync hook, over ``httpx.AsyncClient``, and never blocks the event loop: the connection is read
with ``aget_connection`` and waits are ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_clubcollect.bulk import DEFAULT_MAX_CONCURRENCY, check_concurrency
from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.paging import CompanyTicketPager
from airflow_provider_clubcollect.threads import awaiting_answer, to_utc
from airflow_provider_clubcollect.wire import DEFAULT_CONN_ID, STATUS_UNANSWERED

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_clubcollect.retry import RetryPolicy
    from airflow_provider_clubcollect.transport import AsyncTransport
    from airflow_provider_clubcollect.wire import ApiRequest

#: Event ``status`` values.
EVENT_SUCCESS = "success"
EVENT_ERROR = "error"


class UnansweredTicketsTrigger(BaseTrigger):
    """
    Poll a company's unanswered tickets until at least ``min_tickets`` await an answer.

    Fires one event: ``{"status": "success", "tickets": [...]}`` with the tickets that await an
    answer (oldest first), or ``{"status": "error", "error_class": ..., "message": ...,
    "status_code": ..., "error_code": ...}`` when the API fails after every retry.

    :param company_id: the company.
    :param min_tickets: how many tickets must await an answer.
    :param unanswered_for_seconds: count only threads unanswered for longer than this; ``None`` for all.
    :param reference_time: fixed ISO 8601 "now" for the selection; ``None`` for the current time at each poll.
    :param poke_interval: seconds between two polls.
    :param clubcollect_conn_id: the Airflow connection of type ``clubcollect``; the key is read
        from it in the triggerer and never serialized.
    :param max_concurrency: pages in flight at once, at least 1 (default 8).
    """

    def __init__(
        self,
        company_id: str,
        *,
        min_tickets: int = 1,
        unanswered_for_seconds: float | None = None,
        reference_time: str | None = None,
        poke_interval: float = 60.0,
        clubcollect_conn_id: str = DEFAULT_CONN_ID,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        super().__init__()
        self.company_id = company_id
        self.min_tickets = min_tickets
        self.unanswered_for_seconds = unanswered_for_seconds
        self.reference_time = reference_time
        self.poke_interval = poke_interval
        self.clubcollect_conn_id = clubcollect_conn_id
        self.max_concurrency = check_concurrency(max_concurrency)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and plain keyword arguments: the connection id, never the key."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "company_id": self.company_id,
                "min_tickets": self.min_tickets,
                "unanswered_for_seconds": self.unanswered_for_seconds,
                "reference_time": self.reference_time,
                "poke_interval": self.poke_interval,
                "clubcollect_conn_id": self.clubcollect_conn_id,
                "max_concurrency": self.max_concurrency,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until enough tickets await an answer, then fire one event."""
        transport: AsyncTransport | None = None
        try:
            transport, policy = await self._connect()
            while True:
                waiting = await self.poll(transport, policy)
                if len(waiting) >= self.min_tickets:
                    yield TriggerEvent({"status": EVENT_SUCCESS, "tickets": waiting})
                    return
                self.log.info(
                    "%d tickets of company %r await an answer; waiting for %d. Next poll in %g s.",
                    len(waiting),
                    self.company_id,
                    self.min_tickets,
                    self.poke_interval,
                )
                await asyncio.sleep(self.poke_interval)
        except Exception as exc:
            # Every failure, a missing connection included, becomes an error event, so that the
            # sensor handles it as a failed poke (a crashed trigger would reach the task as a
            # TaskDeferralError instead).
            yield TriggerEvent({"status": EVENT_ERROR, **_as_clubcollect_error(exc).to_payload()})
        finally:
            # Also runs when the triggerer cancels the trigger (task timeout, cleared task).
            if transport is not None:
                await asyncio.shield(transport.aclose())

    async def _connect(self) -> tuple[AsyncTransport, RetryPolicy]:
        from airflow.sdk import BaseHook

        from airflow_provider_clubcollect.connection import amask_secret, settings_from_airflow_connection
        from airflow_provider_clubcollect.retry import RetryPolicy
        from airflow_provider_clubcollect.transport import AsyncTransport

        conn = await BaseHook.aget_connection(self.clubcollect_conn_id)
        settings = settings_from_airflow_connection(conn)
        await amask_secret(settings.api_key)
        # Importing httpx and building its TLS context take a tenth of a second or more: off the loop.
        transport = await asyncio.to_thread(AsyncTransport, settings)
        return transport, RetryPolicy(max_retries=settings.max_retries)

    async def poll(self, transport: AsyncTransport, policy: RetryPolicy) -> list[dict[str, Any]]:
        """
        Read every page (up to ``max_concurrency`` at a time) and select the tickets awaiting an answer.

        :param transport: the async transport.
        :param policy: the retry policy.
        :return: the tickets awaiting an answer, oldest first.
        """
        pager = CompanyTicketPager(self.company_id, STATUS_UNANSWERED, max_concurrency=self.max_concurrency)
        tickets = await read_pages(pager, transport, policy)
        unanswered_for = None if self.unanswered_for_seconds is None else timedelta(seconds=self.unanswered_for_seconds)
        # Selection is CPU work proportional to the tickets: keep it off the triggerer's loop.
        return await asyncio.to_thread(awaiting_answer, tickets, unanswered_for, to_utc(self.reference_time))


async def read_pages(pager: CompanyTicketPager, transport: AsyncTransport, policy: RetryPolicy) -> list[dict[str, Any]]:
    """
    Read every page a pager asks for, up to its ``max_concurrency`` at a time, on the event loop.

    The async twin of the hook's paging: the same pager, and one adaptive limiter for every
    request of the read (a 429 halves the number in flight).

    :param pager: a fresh pager.
    :param transport: the async transport.
    :param policy: the retry policy.
    :return: every ticket, oldest first, each once.
    """
    from functools import partial

    from airflow_provider_clubcollect.bulk import AdaptiveLimiter
    from airflow_provider_clubcollect.transport import exchange, run_async

    limiter = AdaptiveLimiter(pager.max_concurrency)
    send = partial(limiter.asend, transport.send)
    tickets: list[dict[str, Any]] = []
    pending: dict[asyncio.Task[Any], ApiRequest] = {}
    try:
        while not pager.done:
            while len(pending) < pager.max_concurrency and (request := pager.next_request()) is not None:
                pending[asyncio.create_task(run_async(exchange(request, policy), send))] = request
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


def _as_clubcollect_error(exc: Exception) -> ClubCollectError:
    if isinstance(exc, ClubCollectError):
        return exc
    return ClubCollectError(f"UnansweredTicketsTrigger failed: {type(exc).__name__}: {exc}")
