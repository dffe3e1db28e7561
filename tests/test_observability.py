"""Metrics and spans of every request, against the sandbox: names, counts, and nothing that identifies a member.

Metrics are caught by a recording ``Stats`` put where Airflow's would be (the real one, StatsD over
UDP, is shown in ``make e2e``); spans by OpenTelemetry's in-memory exporter.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_2_PLUS, AIRFLOW_V_3_3_PLUS
from tests.conftest import REPO_ROOT, fast_backoff, thread

if AIRFLOW_V_3_3_PLUS:
    from tests.triggers.test_event_trigger import supervisor  # noqa: F401 - a fixture

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

COMPANY = "company-private-4711"
INVOICE = "invoice-private-0815"
MESSAGE = "Dear member, your private text"
PRODUCTION_PAGE = (REPO_ROOT / "docs" / "production.rst").read_text()


class RecordingStats:
    """Airflow's ``Stats`` interface, remembering every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str]) -> None:
        self.calls.append(("incr", stat, count, tags))

    def timing(self, stat: str, dt: Any, *, tags: dict[str, str]) -> None:
        self.calls.append(("timing", stat, dt.total_seconds(), tags))

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False, *, tags: dict[str, str]) -> None:
        self.calls.append(("gauge", stat, value, tags))

    def counts(self) -> Counter[str]:
        counted: Counter[str] = Counter()
        for kind, stat, value, _ in self.calls:
            if kind == "incr":
                counted[stat] += value
        return counted

    def timings(self, stat: str) -> list[float]:
        return [value for kind, name, value, _ in self.calls if kind == "timing" and name == stat]


def documented(name: str) -> bool:
    """Whether docs/production.rst lists the metric ``name`` (``<call>`` and the like stand for one part)."""
    for first, alternative in re.findall(r"``(clubcollect\.[\w.<>]+)``(?: / ``(\.\w+)``)?", PRODUCTION_PAGE):
        for listed in (first, first.rsplit(".", 1)[0] + alternative) if alternative else (first,):
            if re.fullmatch(re.sub(r"<\w+>", r"\\w+", re.escape(listed)), name):
                return True
    return False


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingStats]:
    recording = RecordingStats()
    monkeypatch.setattr(observability, "_stats", lambda: recording)
    yield recording
    undocumented = {name for _, name, _, _ in recording.calls if not documented(name)}
    assert not undocumented, f"not in docs/production.rst: {undocumented}"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # What Airflow's [traces] otel_on does, without setting the process-wide provider (settable once).
    monkeypatch.setattr(observability, "_tracer", lambda: provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


@pytest.fixture
def invoice(sandbox: SandboxHandle) -> str:
    sandbox.add_invoice(INVOICE, COMPANY, thread(("CUSTOMER", 3), ("CUSTOMER", 2)))
    return INVOICE


def test_requests_retries_and_429s_are_counted_as_the_sandbox_saw_them(
    sandbox: SandboxHandle, invoice: str, stats: RecordingStats
) -> None:
    sandbox.set_faults(
        script=[{"fault": "rate_limit", "retry_after": 0.05, "method": "GET"}, {"fault": "error", "status": 503}]
    )
    with ClubCollectHook(backoff=fast_backoff()) as hook:
        hook.get_invoice_tickets(invoice)
        hook.create_ticket(invoice, MESSAGE)
        hook.archive_tickets(invoice)
        hook.assign_tickets_to_support(invoice)
        tickets = hook.get_company_tickets(COMPANY, "archived")

    seen = sandbox.requests()
    assert tickets
    assert [r["status"] for r in seen[:3]] == [429, 503, 200]
    counted = stats.counts()
    assert counted == {
        "clubcollect.requests.get_invoice_tickets.429": 1,
        "clubcollect.requests.get_invoice_tickets.5xx": 1,
        "clubcollect.requests.get_invoice_tickets.2xx": 1,
        "clubcollect.retries.get_invoice_tickets.429": 1,
        "clubcollect.retries.get_invoice_tickets.5xx": 1,
        "clubcollect.requests.create_ticket.2xx": 1,
        "clubcollect.requests.archive.2xx": 1,
        "clubcollect.requests.assign_to_support.2xx": 1,
        "clubcollect.requests.company_tickets_page.2xx": 1,
        "clubcollect.tickets_read.archived": len(tickets),
    }
    assert sum(n for name, n in counted.items() if name.startswith("clubcollect.requests.")) == len(seen)
    # The wait the 429's Retry-After asked for, and one duration per request sent.
    assert stats.timings("clubcollect.retry_wait.429") == [0.05]
    durations = [value for kind, name, value, _ in stats.calls if name.startswith("clubcollect.request_duration.")]
    assert len(durations) == len(seen)
    assert all(0 < d < 5 for d in durations)
    assert {tags["conn_id"] for *_, tags in stats.calls if "conn_id" in tags} == {"clubcollect_default"}


def test_no_metric_or_span_holds_the_key_an_id_or_a_message(
    sandbox: SandboxHandle, invoice: str, stats: RecordingStats, spans: Any
) -> None:
    sandbox.set_faults(script=[{"fault": "rate_limit", "retry_after": 0.01}, {"fault": "drop", "method": "GET"}])
    with ClubCollectHook(backoff=fast_backoff()) as hook:
        hook.get_invoice_tickets(invoice)
        hook.create_ticket(invoice, MESSAGE)
        hook.get_company_tickets(COMPANY, "answered")

    recorded = [stat + " " + " ".join(f"{k}={v}" for k, v in tags.items()) for _, stat, _, tags in stats.calls]
    recorded += [f"{s.name} {dict(s.attributes)}" for s in spans.get_finished_spans()]
    assert len(recorded) > 10
    for text in recorded:
        for secret in (sandbox.api_key, INVOICE, COMPANY, MESSAGE, "member"):
            assert secret not in text, (secret, text)


def test_one_span_per_attempt_under_the_current_span(
    sandbox: SandboxHandle, invoice: str, stats: RecordingStats, spans: Any
) -> None:
    from opentelemetry.trace import SpanKind

    sandbox.set_faults(script=[{"fault": "rate_limit", "retry_after": 0.02}])
    tracer = observability._tracer()
    with tracer.start_as_current_span("worker.task") as task_span, ClubCollectHook(backoff=fast_backoff()) as hook:
        hook.get_invoice_tickets(invoice)

    first, second, task = spans.get_finished_spans()
    assert task.name == "worker.task"
    for span in (first, second):
        assert span.name == "GET /v2/invoices/{id}/tickets"
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == task_span.get_span_context().span_id
        assert span.attributes["url.template"] == "/v2/invoices/{id}/tickets"
        assert span.attributes["http.request.method"] == "GET"
    assert first.attributes["http.response.status_code"] == 429
    assert first.attributes["clubcollect.attempt"] == 1
    assert "clubcollect.retry_wait_seconds" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["clubcollect.attempt"] == 2
    assert second.attributes["clubcollect.retry_wait_seconds"] == 0.02
    assert second.attributes["clubcollect.retry_cause"] == "429"


def test_the_async_transport_records_the_same(sandbox: SandboxHandle, stats: RecordingStats, spans: Any) -> None:
    from airflow_provider_clubcollect.transport import AsyncTransport, call_async
    from airflow_provider_clubcollect.wire import company_tickets_page_request
    from tests.conftest import conn_settings

    sandbox.add_invoice(INVOICE, COMPANY, thread(("CUSTOMER", 3), ("CUSTOMER", 2)))
    sandbox.set_faults(script=[{"fault": "error", "status": 500}])
    settings = conn_settings("cc_async", host=sandbox.base_url, password=sandbox.api_key)

    async def read() -> Any:
        transport = AsyncTransport(settings)
        try:
            request = company_tickets_page_request(COMPANY, "unanswered")
            return await call_async(request, fast_backoff(), 2, transport.send)
        finally:
            await transport.aclose()

    page = asyncio.run(read())

    assert len(page["tickets"]) == 2
    assert stats.counts() == {
        "clubcollect.requests.company_tickets_page.5xx": 1,
        "clubcollect.requests.company_tickets_page.2xx": 1,
        "clubcollect.retries.company_tickets_page.5xx": 1,
        "clubcollect.tickets_read.unanswered": 2,
    }
    assert [s.attributes["clubcollect.attempt"] for s in spans.get_finished_spans()] == [1, 2]
    assert [s.attributes["url.template"] for s in spans.get_finished_spans()] == [
        "/v2/companies/{id}/tickets/{status}"
    ] * 2


def test_off_by_default_and_on_with_airflow_metrics_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    observability._stats.cache_clear()
    try:
        assert observability.watch_for("c") is None  # Airflow's defaults: no metrics, no tracer provider
        observability._stats.cache_clear()
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
        stats = observability._stats()
        assert callable(stats.incr)
        assert observability.watch_for("c") == observability.Watch("c")
        assert observability._tracer() is None
    finally:
        monkeypatch.undo()
        observability._stats.cache_clear()


def test_bulk_actions_count_done_and_failed_under_one_span_with_the_requests_inside(
    sandbox: SandboxHandle, invoice: str, stats: RecordingStats, spans: Any
) -> None:
    from airflow_provider_clubcollect.exceptions import ClubCollectError
    from airflow_provider_clubcollect.operators.tickets import ArchiveTicketsOperator

    sandbox.set_faults(script=[{"fault": "rate_limit", "retry_after": 0.01}])
    archive = ArchiveTicketsOperator(
        task_id="t", invoice_ids=[invoice, "no-such-invoice"], max_concurrency=4, backoff=fast_backoff()
    )
    with pytest.raises(ClubCollectError, match="no-such-invoice"):
        archive.execute({})

    assert sandbox.invoice(invoice)["status"] == "archived"
    counted = stats.counts()
    assert counted["clubcollect.bulk.archive.done"] == 1
    assert counted["clubcollect.bulk.archive.failed"] == 1
    assert counted["clubcollect.requests.archive.4xx"] == 1
    assert counted["clubcollect.requests.archive.429"] == 1
    # The 429 halved the adaptive limiter's window: 4 in flight at most, then 2.
    assert [value for kind, name, value, _ in stats.calls if name == "clubcollect.limiter_window"] == [2]
    *requests, action = spans.get_finished_spans()
    assert action.name == "clubcollect.bulk.archive"
    assert len(requests) == 3  # the 429, its retry, the 404; each sent from a worker thread
    assert {span.parent.span_id for span in requests if span.parent} == {action.context.span_id}


def test_a_create_whose_answer_was_lost_is_counted_as_found_posted(
    sandbox: SandboxHandle, invoice: str, stats: RecordingStats
) -> None:
    sandbox.set_faults(script=[{"fault": "apply_then_drop", "method": "POST"}])
    with ClubCollectHook(backoff=fast_backoff()) as hook:
        hook.create_ticket(invoice, MESSAGE)

    assert [r["method"] for r in sandbox.requests()] == ["POST", "GET"]
    counted = stats.counts()
    assert counted["clubcollect.creates_already_posted"] == 1
    assert counted["clubcollect.requests.create_ticket.dropped"] == 1
    assert counted["clubcollect.requests.get_invoice_tickets.2xx"] == 1


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="the asset state store is 3.3+")
def test_the_watcher_counts_polls_tickets_reported_and_store_writes_each_poll_a_span(
    sandbox: SandboxHandle, supervisor: Any, stats: RecordingStats, spans: Any
) -> None:
    from tests.triggers.test_event_trigger import CO, customer, watch, watcher, with_store

    sandbox.add_invoice("inv-1", CO, [customer("a", hours=3)])
    sandbox.add_invoice("inv-2", CO, [customer("b", hours=2)])

    events = asyncio.run(watch(sandbox, with_store(watcher()), polls=3))

    (event,) = events  # one event per poll, carrying both tickets
    assert [t["invoice_id"] for t in event["tickets"]] == ["inv-1", "inv-2"]
    counted = stats.counts()
    assert counted["clubcollect.watcher.tickets_reported"] == 2
    assert counted["clubcollect.watcher.store_writes.ok"] == supervisor.writes == 1
    # One page per poll, each request inside its poll's span (the last poll may be cut short by the cancel).
    pages = counted["clubcollect.requests.company_tickets_page.2xx"]
    assert pages - 1 <= counted["clubcollect.watcher.polls.ok"] <= pages
    assert counted["clubcollect.watcher.polls.ok"] >= 3
    polls = {s.context.span_id for s in spans.get_finished_spans() if s.name == "clubcollect.poll"}
    parents = [s.parent.span_id for s in spans.get_finished_spans() if s.name.startswith("GET ") and s.parent]
    assert len(parents) >= pages
    assert set(parents) <= polls


@pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason="Airflow 3.2+ keeps two copies of Stats")
def test_the_stats_airflow_initialized_in_this_process_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    # The triggerer initializes the core's copy, which common.compat does not hand out.
    core = importlib.import_module("airflow._shared.observability.metrics.stats")
    sdk = importlib.import_module("airflow.sdk._shared.observability.metrics.stats")

    def initialize(module: Any, factory: Any) -> None:  # what Stats.initialize does, undone after the test
        if hasattr(module, "_factory"):  # Airflow 3.3
            monkeypatch.setattr(module, "_factory", factory)
        else:  # Airflow 3.2: the factory is the Stats class's own
            monkeypatch.setattr(module.Stats, "factory", factory)

    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    initialize(sdk, None)
    initialize(core, lambda: None)
    observability._stats.cache_clear()
    try:
        assert observability._stats() is core.Stats
        initialize(sdk, lambda: None)  # a task process: the SDK's
        observability._stats.cache_clear()
        assert observability._stats() is sdk.Stats
    finally:
        monkeypatch.undo()
        observability._stats.cache_clear()
