"""Metrics (Airflow's ``Stats``) and spans (OpenTelemetry) of ClubCollect requests, never with a key or an ID."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_clubcollect import __version__
from airflow_provider_clubcollect.wire import RawResponse

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_provider_clubcollect.transport import Outcome
    from airflow_provider_clubcollect.wire import ApiRequest

#: Every metric's name starts so (after Airflow's own ``statsd_prefix``).
PREFIX = "clubcollect"


class Retry(NamedTuple):
    """What led to the attempt being sent: set by the retry loop for the attempts after the first."""

    attempt: int
    wait: float
    cause: str


#: The retry the current attempt is, in this thread or task; ``None`` for a first attempt.
RETRY: ContextVar[Retry | None] = ContextVar("clubcollect_retry", default=None)


@functools.cache
def _stats() -> Any:
    """Airflow's ``Stats`` when ``[metrics]`` sends metrics anywhere, else ``None`` (read once per process)."""
    from airflow.providers.common.compat.sdk import Stats, conf

    if not any(
        conf.getboolean("metrics", key, fallback=False) for key in ("statsd_on", "statsd_datadog_enabled", "otel_on")
    ):
        return None
    # Airflow 3.2+ has two copies (not in common.compat): a task initializes the SDK's, the triggerer the core's.
    for name in ("airflow.sdk._shared.observability.metrics.stats", "airflow._shared.observability.metrics.stats"):
        module = sys.modules.get(name)
        if module is not None and (getattr(module, "_factory", None) or vars(module.Stats).get("factory")):
            return module.Stats
    return Stats


def _tracer() -> Any:
    trace = sys.modules.get("opentelemetry.trace")  # nobody imported it: no provider can be set
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer("airflow_provider_clubcollect", __version__)


def route(request: ApiRequest) -> tuple[str, str]:
    """The call's name and route template, without any ID: ``("create_ticket", "/v2/invoices/{id}/tickets")``."""
    parts = request.path.strip("/").split("/")  # v2, invoices|companies, <id>, tickets[, <status> | actions, <action>]
    if parts[1] == "companies":
        return "company_tickets_page", "/v2/companies/{id}/tickets/{status}"
    if len(parts) > 5 and parts[5] in ("archive", "assign_to_support"):
        return parts[5], f"/v2/invoices/{{id}}/tickets/actions/{parts[5]}"
    return ("create_ticket" if request.method == "POST" else "get_invoice_tickets"), "/v2/invoices/{id}/tickets"


def outcome_name(outcome: Outcome) -> str:
    """An attempt's outcome as a tag: ``2xx``, ``4xx``, ``429``, ``5xx``, ``timeout``, ``dropped``, ``unreachable``."""
    if isinstance(outcome, RawResponse):
        return "429" if outcome.status == 429 else f"{outcome.status // 100}xx"
    if outcome.timed_out:
        return "timeout"
    return "dropped" if outcome.maybe_applied else "unreachable"


def count(name: str, n: int = 1, **tags: str) -> None:
    """Add ``n`` to the counter ``clubcollect.<name>`` when metrics are on; low-cardinality names and tags only."""
    if (stats := _stats()) is not None and n:
        stats.incr(f"{PREFIX}.{name}", n, tags=tags)


def gauge(name: str, value: float, **tags: str) -> None:
    if (stats := _stats()) is not None:
        stats.gauge(f"{PREFIX}.{name}", value, tags=tags)


def span(name: str, **attributes: str | int | float) -> contextlib.AbstractContextManager[Any]:
    """A span ``clubcollect.<name>`` around a block (a bulk action, a read, a poll) when traces are on; no IDs."""
    return _span(f"{PREFIX}.{name}", attributes)


def _span(name: str, attributes: dict[str, Any], client: bool = False) -> contextlib.AbstractContextManager[Any]:
    if (tracer := _tracer()) is None:
        return contextlib.nullcontext()
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    return tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    )


def tickets_read(request: ApiRequest, answer: Any) -> None:
    """Count the tickets a company page brought, per status."""
    if isinstance(answer, dict) and route(request)[0] == "company_tickets_page":
        status = request.path.rsplit("/", 1)[-1]  # validated: one of the three statuses
        count(f"tickets_read.{status}", len(answer.get("tickets") or ()), status=status)


class Watch(NamedTuple):
    """Records every attempt of one connection's requests: a span, and the metrics, of those that are on."""

    conn_id: str

    def sent(self, request: ApiRequest, send: Callable[[ApiRequest], Outcome]) -> Outcome:
        with self._span(request) as current:
            return self._record(request, current, time.perf_counter(), send(request))

    async def asent(self, request: ApiRequest, send: Callable[[ApiRequest], Awaitable[Outcome]]) -> Outcome:
        with self._span(request) as current:
            return self._record(request, current, time.perf_counter(), await send(request))

    def _span(self, request: ApiRequest) -> Any:
        (call, template), retry = route(request), RETRY.get()
        attributes = {
            "http.request.method": request.method,
            "url.template": template,
            "clubcollect.call": call,
            "clubcollect.conn_id": self.conn_id,
            "clubcollect.attempt": retry.attempt if retry else 1,
        }
        if retry:
            attributes |= {
                "http.request.resend_count": retry.attempt - 1,
                "clubcollect.retry_wait_seconds": retry.wait,
                "clubcollect.retry_cause": retry.cause,
            }
        return _span(f"{request.method} {template}", attributes, client=True)

    def _record(self, request: ApiRequest, current: Any, began: float, outcome: Outcome) -> Outcome:
        seconds, result = time.perf_counter() - began, outcome_name(outcome)
        (call, _), retry = route(request), RETRY.get()
        if current is not None:
            current.set_attribute("clubcollect.outcome", result)
            if isinstance(outcome, RawResponse):
                current.set_attribute("http.response.status_code", outcome.status)
        if (stats := _stats()) is not None:
            tags = {"conn_id": self.conn_id, "call": call, "outcome": result}
            stats.incr(f"{PREFIX}.requests.{call}.{result}", tags=tags)
            stats.timing(f"{PREFIX}.request_duration.{call}", timedelta(seconds=seconds), tags=tags)
            if retry:
                tags = {"conn_id": self.conn_id, "call": call, "cause": retry.cause}
                stats.incr(f"{PREFIX}.retries.{call}.{retry.cause}", tags=tags)
                stats.timing(f"{PREFIX}.retry_wait.{retry.cause}", timedelta(seconds=retry.wait), tags=tags)
        return outcome


def watch_for(conn_id: str) -> Watch | None:
    """A :class:`Watch` for a new transport of ``conn_id``, or ``None`` when metrics and traces are both off."""
    return None if _stats() is None and _tracer() is None else Watch(conn_id)
