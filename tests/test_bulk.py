"""``ClubCollectHook.for_each_invoice`` at scale against the sandbox: one adaptive limit shared by every
request of the action (a 429 halves it), progress in the log, a refused key stopping the action early,
and one bounded failure summary."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pytest

from airflow_provider_clubcollect import bulk, observability
from airflow_provider_clubcollect.exceptions import ClubCollectAuthError, ClubCollectError
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from tests.conftest import fast_backoff, thread

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
FAST = fast_backoff()


def invoices(sandbox: SandboxHandle, count: int) -> list[str]:
    ids = [f"inv-{n:03d}" for n in range(count)]
    for invoice_id in ids:
        sandbox.sandbox_state.add_invoice(invoice_id, CO, thread(("CUSTOMER", 3)))
    return ids


def test_a_429_halves_the_limit_for_the_rest_of_the_action(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    windows: list[float] = []  # every limit taken after the first, as the limiter_window metric reports it
    monkeypatch.setattr(observability, "gauge", lambda name, value, **tags: windows.append(value))
    ids = invoices(sandbox, 60)
    # The first archive is refused with 429: every request of the action slows down, not only that one.
    sandbox.set_faults(latency_ms=50, script=[{"fault": "rate_limit", "retry_after": 0, "method": "POST"}])

    with ClubCollectHook(backoff=FAST) as hook:
        result = hook.for_each_invoice(hook.archive_tickets, ids, max_concurrency=8, verb="archive")

    assert result.done == ids
    assert {sandbox.invoice(i)["status"] for i in ids} == {"archived"}
    assert windows[:1] == [4], "halved once, not once per 429 of the same round"
    assert windows[1:4] == [5, 6, 7], "then raised one step at a time"
    posts = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert max(r["in_flight"] for r in posts) <= 8
    limited = next(r["path"] for r in posts if r["status"] == 429)
    second_round = [r["in_flight"] for r in posts[8:16] if r["path"] != limited]  # the 429's retry is of the first
    assert max(second_round) < 8, f"the halved limit reaches the server: {second_round}"
    assert [r["status"] for r in posts].count(429) == 1


def test_progress_is_logged_while_it_runs(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = invoices(sandbox, 50)
    monkeypatch.setattr(bulk, "PROGRESS_SECONDS", 0.0)  # so only the 10% steps count

    with caplog.at_level(logging.INFO, logger="airflow_provider_clubcollect.bulk"), ClubCollectHook() as hook:
        hook.for_each_invoice(hook.archive_tickets, ids, max_concurrency=4, verb="archive")

    lines = [r.getMessage() for r in caplog.records if "invoices handled" in r.getMessage()]
    assert [line.split(": ", 2)[2].split(" invoices")[0] for line in lines] == [f"{n} of 50" for n in range(5, 50, 5)]


def test_a_refused_key_stops_the_action_early(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = invoices(sandbox, 200)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": "revoked-key", "host": sandbox.base_url}),
    )

    with ClubCollectHook() as hook, pytest.raises(ClubCollectAuthError) as info:
        hook.for_each_invoice(hook.archive_tickets, ids, verb="archive")

    sent = len(sandbox.requests())
    assert sent <= 16, f"{sent} doomed requests sent"
    message = str(info.value)
    assert info.value.status_code == 401
    assert "ClubCollect refused the API key (HTTP 401)" in message
    assert f"archive: 0 of 200 invoices done, {sent} failed, {200 - sent} not tried. Failed: 401" in message
    assert len(message) < 1000
    assert "revoked-key" not in message
    assert {sandbox.invoice(i)["status"] for i in ids} == {"unanswered"}


def test_the_failure_message_stays_bounded_however_many_failed() -> None:
    reason = "404 invalid_invoice_id: Could not archive the tickets of invoice: HTTP 404. " + "x" * 400
    failed = {f"inv-{n:04d}": reason for n in range(5000)}
    failed |= {f"odd-{n}": f"{n} code_{n}: {'y' * 400}" for n in range(10)}  # more kinds than are named
    result = bulk.BulkResult("archive", ["ok-1"], failed)

    with pytest.raises(ClubCollectError) as info:
        result.raise_for_failures()

    message = str(info.value)
    assert message.startswith("Bulk archive: 1 of 5011 invoices done, 5010 failed. Failed: 404 invalid_invoice_id: ")
    assert "inv-0019 and 4980 more (inv-0000: Could not archive" in message, "IDs of a kind, then a count"
    assert "inv-0020" not in message
    assert message.count("code_") == bulk.MAX_GROUPS - 1, "the kinds after the first ones by count"
    assert "and 6 failed otherwise" in message
    assert len(message) < 4_000


def test_an_airflow_error_in_an_action_is_named_by_its_class_not_by_a_status_it_never_had() -> None:
    from airflow.providers.common.compat.sdk import AirflowException

    def action(invoice_id: str) -> None:
        raise AirflowException(f"no such pool for {invoice_id}")

    result = ClubCollectHook().for_each_invoice(action, ["inv-1"], max_concurrency=1, verb="archive")

    assert result.failed == {"inv-1": "AirflowException: no such pool for inv-1"}
