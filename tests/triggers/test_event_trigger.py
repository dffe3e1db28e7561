"""UnansweredTicketsEventTrigger under a real event loop against the sandbox (no mocked HTTP).

The asset state store is Airflow's own accessor (``AssetStateStoreAccessors``, built as the
triggerer builds it for a watcher); only the supervisor behind it, which would write to the
metadata database, is replaced by an in-memory one that round-trips values through JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectError,
    ClubCollectNotFoundError,
    ClubCollectValidationError,
)
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.triggers.tickets import (
    LOOKBACK,
    MAX_RECENT,
    UnansweredTicketsEventTrigger,
    _Reported,
)
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS
from tests.conftest import page_reads, without_looks

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

# Asset watchers are Airflow 3.0+: on 2.11 the trigger refuses to be built (test_refused_before_airflow_3).
pytestmark = pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="asset watchers need Airflow 3.0+")
#: The asset state store and shared trigger streams.
needs_3_3 = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="the asset state store and shared streams are 3.3+")

CO = "club-1"
ASSET_URI = f"clubcollect://{CO}/unanswered"
#: Tiny back-offs, so that fault tests do not sleep.
FAST = {"initial": 0.001, "maximum": 0.005, "retry_after_max": 0.005}


def ago(**delta: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat()


def customer(message: str, **delta: float) -> dict[str, Any]:
    return {"message": message, "sender": "CUSTOMER", "date": ago(**delta)}


def company(message: str, **delta: float) -> dict[str, Any]:
    return {"message": message, "sender": "COMPANY", "date": ago(**delta)}


def watcher(**kwargs: Any) -> UnansweredTicketsEventTrigger:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("backoff", FAST)
    return UnansweredTicketsEventTrigger(CO, **kwargs)


class InMemorySupervisor:
    """Answers the asset state store messages the way the triggerer's supervisor does, from a dict."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str | None, str], str] = {}
        self.writes = 0
        self.fail_writes = False

    async def asend(self, msg: Any) -> Any:
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import AssetStateStoreResult, ErrorResponse

        asset = getattr(msg, "name", None) or getattr(msg, "uri", None)
        kind = type(msg).__name__
        if kind.startswith("GetAssetStateStore"):
            row = self.rows.get((asset, msg.key))
            if row is None:
                return ErrorResponse(error=ErrorType.ASSET_STORE_NOT_FOUND)
            return AssetStateStoreResult(value=json.loads(row))
        if kind.startswith("SetAssetStateStore"):
            if self.fail_writes:
                raise ConnectionError("the API server is away")
            self.writes += 1
            self.rows[(asset, msg.key)] = json.dumps(msg.value)  # what the database column holds
            return None
        raise AssertionError(f"unexpected message {msg!r}")


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> InMemorySupervisor:
    from airflow.sdk.execution_time import task_runner

    comms = InMemorySupervisor()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    return comms


def with_store(trigger: UnansweredTicketsEventTrigger) -> UnansweredTicketsEventTrigger:
    """What the triggerer does for a watcher of one asset (triggerer_job_runner.create_triggers), on 3.3+."""
    if not AIRFLOW_V_3_3_PLUS:
        return trigger
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import AssetStateStoreAccessors

    trigger.asset_state_store = AssetStateStoreAccessors(inlets=[Asset(name=ASSET_URI, uri=ASSET_URI)])
    return trigger


def company_reads(sandbox: SandboxHandle) -> int:
    return len(page_reads(sandbox))


async def watch(
    sandbox: SandboxHandle,
    trigger: UnansweredTicketsEventTrigger,
    *,
    polls: int,
    between: Callable[[int], None] | None = None,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """
    Run the trigger until the sandbox has answered ``polls`` more reads of the list, then cancel it.

    :param between: called (in a thread) after each of those reads with the number of reads so far.
    :return: the events' payloads.
    """
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(dict(event.payload))

    start = await asyncio.to_thread(company_reads, sandbox)
    task = asyncio.ensure_future(consume())
    try:
        seen = start
        deadline = asyncio.get_running_loop().time() + timeout  # asyncio.timeout needs Python 3.11
        while seen - start < polls:
            assert asyncio.get_running_loop().time() < deadline, f"fewer than {polls} polls in {timeout} s"
            await asyncio.sleep(0.01)
            if task.done():
                task.result()  # re-raise what ended the trigger
                raise AssertionError("the trigger ended on its own")
            now = await asyncio.to_thread(company_reads, sandbox)
            for reads in range(seen - start + 1, now - start + 1):
                if between is not None:
                    await asyncio.to_thread(between, reads)
            seen = now
        # One more poll interval, so that the events of the last read were yielded.
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return events


def ids(events: list[dict[str, Any]]) -> list[str]:
    """The reported tickets' messages, in the order reported: every event's ``tickets``."""
    return [t["message"] for e in events for t in e["tickets"]]


def test_one_event_per_poll_carries_every_ticket_it_found_oldest_first(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("a1", days=3), company("answer", days=2), customer("a2", days=1)])
    sandbox.add_invoice("inv-2", CO, [customer("b1", days=5), customer("b2", hours=1)])
    sandbox.add_invoice("inv-3", CO, [customer("c1", days=4), company("answered", days=3)])

    events = asyncio.run(watch(sandbox, watcher(), polls=4))

    # One event for the burst: Airflow's scheduler links to a run only the events up to the moment
    # its asset queue entry was made, so a second event in the same instant would wait for a third.
    assert len(events) == 1, "one event for everything one poll found"
    assert ids(events) == ["b1", "a2", "b2"], "once each, oldest first, none of the answered thread"
    (event,) = events
    assert set(event) == {"ticket_id", "invoice_id", "ticket", "tickets"}
    # SPEC 9's keys describe the oldest ticket of the poll.
    assert event["ticket"] == event["tickets"][0]
    assert event["invoice_id"] == "inv-2"
    assert event["ticket_id"] == event["ticket"]["ticket_id"]
    assert event["ticket"]["sender"] == "CUSTOMER"
    json.dumps(events)
    assert {r["method"] for r in sandbox.requests()} == {"GET"}, "a trigger only reads"


def test_tickets_added_mid_run_are_reported_on_a_later_poll(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("first", hours=2)])
    sandbox.add_invoice("inv-2", CO, [customer("q", hours=3), company("answered", hours=2)])

    def member_writes(reads: int) -> None:
        if reads == 2:
            sandbox.add_tickets("inv-1", [customer("second", seconds=0)])
            sandbox.add_tickets("inv-2", [customer("reopened", seconds=0)])
        if reads == 4:
            # The club answers inv-1; then its member writes again: a new ticket, a new event.
            sandbox.add_tickets("inv-1", [company("answer", seconds=0)])
            sandbox.add_tickets("inv-1", [customer("third", seconds=-0.001)])

    events = asyncio.run(watch(sandbox, watcher(), polls=7, between=member_writes))

    assert ids(events) == ["first", "second", "reopened", "third"]


@needs_3_3
def test_a_restart_with_the_same_store_reports_nothing_twice(
    sandbox: SandboxHandle, supervisor: InMemorySupervisor
) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("a", hours=3)])
    sandbox.add_invoice("inv-2", CO, [customer("b", hours=2)])
    first = with_store(watcher())

    before = asyncio.run(watch(sandbox, first, polls=3))
    assert ids(before) == ["a", "b"]
    assert supervisor.writes == 1, "one write per event, before it is yielded"

    sandbox.add_tickets("inv-1", [customer("c", seconds=0)])
    # The triggerer restarts: a new instance from the serialized kwargs, the same store.
    _classpath, kwargs = first.serialize()
    again = with_store(UnansweredTicketsEventTrigger(**kwargs))
    after = asyncio.run(watch(sandbox, again, polls=3))

    assert ids(after) == ["c"]
    stored = json.loads(supervisor.rows[(ASSET_URI, first.state_key)])
    assert stored["version"] == 1
    # a and b are hours older than c: folded into the watermark; c is remembered above it.
    assert stored["watermark"].split()[2] == before[0]["tickets"][1]["ticket_id"]
    assert [k.split()[2] for k in stored["recent"]] == [after[0]["ticket_id"]]


@needs_3_3
def test_the_record_is_written_before_the_event_and_a_failed_write_holds_it_back(
    sandbox: SandboxHandle, supervisor: InMemorySupervisor
) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("a", hours=3)])
    supervisor.fail_writes = True

    def store_comes_back(reads: int) -> None:
        if reads == 3:
            supervisor.fail_writes = False

    events = asyncio.run(watch(sandbox, with_store(watcher()), polls=5, between=store_comes_back))

    assert ids(events) == ["a"], "not reported while it could not be recorded, then once"
    assert supervisor.writes == 1


@needs_3_3
def test_a_trigger_watching_two_assets_keeps_its_record_in_memory(
    sandbox: SandboxHandle, supervisor: InMemorySupervisor
) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import AssetStateStoreAccessors

    sandbox.add_invoice("inv-1", CO, [customer("a", hours=3)])
    trigger = watcher()
    # The same trigger on two assets: the triggerer gives it an accessor for both.
    trigger.asset_state_store = AssetStateStoreAccessors(inlets=[Asset(name=f"{ASSET_URI}/{n}") for n in (1, 2)])

    def member_writes(reads: int) -> None:
        if reads == 2:
            sandbox.add_tickets("inv-1", [customer("b", seconds=0)])

    events = asyncio.run(watch(sandbox, trigger, polls=5, between=member_writes))

    assert ids(events) == ["a", "b"], "still one event per ticket, from memory"
    assert supervisor.rows == {}


def test_without_a_store_the_record_is_in_memory_and_a_restart_repeats(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("a", hours=3)])
    trigger = watcher()
    assert getattr(trigger, "asset_state_store", None) is None  # Airflow 3.3 injects it; before, there is none

    assert ids(asyncio.run(watch(sandbox, trigger, polls=3))) == ["a"]
    assert ids(asyncio.run(watch(sandbox, watcher(), polls=3))) == ["a"], "documented: a restart repeats"


def test_since_reports_only_tickets_dated_after_it(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("old", days=2), customer("new", hours=1)])
    sandbox.add_invoice("inv-2", CO, [customer("older", days=3)])

    events = asyncio.run(watch(sandbox, watcher(since=ago(days=1)), polls=3))

    assert ids(events) == ["new"]


def test_unanswered_for_reports_a_thread_once_it_has_waited_long_enough(sandbox: SandboxHandle) -> None:
    hour = 3600.0
    # Thread A waits since 2 hours and its member wrote twice since: all three are due now.
    sandbox.add_invoice("inv-a", CO, [customer("a1", hours=2), customer("a2", minutes=30), customer("a3", minutes=5)])
    # Thread B waits since just under an hour: due within a second, with no new ticket.  Its
    # ticket is older than a2, which is already folded into the watermark (more than LOOKBACK
    # behind a3): a record keyed on ticket dates would take b1 as reported and never fire.
    sandbox.add_invoice("inv-b", CO, [customer("b1", seconds=hour - 1.0)])
    # Thread C was answered: never reported.
    sandbox.add_invoice("inv-c", CO, [customer("c1", hours=5), company("answer", hours=4)])

    trigger = watcher(unanswered_for_seconds=hour, poll_interval=0.2)
    events = asyncio.run(watch(sandbox, trigger, polls=12))

    assert ids(events) == ["a1", "a2", "a3", "b1"]


def test_unanswered_for_none_and_zero_agree(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("a", hours=1)])

    assert ids(asyncio.run(watch(sandbox, watcher(unanswered_for_seconds=0), polls=2))) == ["a"]


def test_pages_are_read_up_to_max_concurrency_at_a_time(sandbox: SandboxHandle) -> None:
    for n in range(450):  # 5 pages of 100
        sandbox.sandbox_state.add_invoice(f"inv-{n:03d}", CO, [customer(f"m{n:03d}", hours=1000 - n)])
    sandbox.set_faults(latency_ms=50)

    # One poll: page 1 for the total, a look at the tail, pages 1 to 5, a last look.
    events = asyncio.run(watch(sandbox, watcher(max_concurrency=3), polls=8))

    assert ids(events) == [f"m{n:03d}" for n in range(450)], "each once, oldest first"
    reads = page_reads(sandbox)[:8]
    assert reads[0]["query"]["page_number"] == "1"
    assert reads[0]["in_flight"] == 1, "page 1 is read alone: it gives the total"
    assert sorted(r["query"]["page_number"] for r in without_looks(reads)) == ["1", "1", "2", "3", "4", "5"]
    assert 1 < max(r["in_flight"] for r in reads) <= 3 + 1, "3 pages at a time, and a look, not more"


def test_serialize_holds_configuration_only(sandbox: SandboxHandle) -> None:
    trigger = with_store(
        UnansweredTicketsEventTrigger(
            CO,
            unanswered_for_seconds=3600,
            since="2026-06-01T00:00:00Z",
            poll_interval=5,
            max_concurrency=2,
            backoff=Backoff(initial=0.1, maximum=20.0),
        )
    )
    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_clubcollect.triggers.tickets.UnansweredTicketsEventTrigger"
    assert kwargs == {
        "company_id": CO,
        "unanswered_for_seconds": 3600.0,
        "since": "2026-06-01T00:00:00.000000+00:00",
        "poll_interval": 5.0,
        "clubcollect_conn_id": "clubcollect_default",
        "max_concurrency": 2,
        "backoff": {"initial": 0.1, "maximum": 20.0, "retry_after_max": 120.0},
    }
    text = json.dumps(kwargs)
    assert sandbox.api_key not in text
    assert sandbox.api_key not in repr(trigger)
    again = UnansweredTicketsEventTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert again.shared_stream_key() == trigger.shared_stream_key()
    # Airflow identifies a watcher's trigger by this hash: it must not change between parses.
    assert trigger.hash(classpath, kwargs) == again.hash(*again.serialize())


def test_serialize_keeps_its_key_order() -> None:
    # Airflow hashes a watcher's kwargs in this order (unsorted JSON): a release that reordered the
    # fields would give every deployed watcher a new identity and orphan its trigger.
    _classpath, kwargs = UnansweredTicketsEventTrigger(CO).serialize()

    assert list(kwargs) == [
        "company_id",
        "unanswered_for_seconds",
        "clubcollect_conn_id",
        "backoff",
        "max_concurrency",
        "since",
        "poll_interval",
    ]


def test_watchers_differing_only_in_selection_share_one_poll() -> None:
    base = UnansweredTicketsEventTrigger(CO, poll_interval=30)
    slow = UnansweredTicketsEventTrigger(CO, poll_interval=30, unanswered_for_seconds=86400, since="2026-01-01")
    other_company = UnansweredTicketsEventTrigger("club-2", poll_interval=30)
    other_interval = UnansweredTicketsEventTrigger(CO, poll_interval=60)

    assert base.shared_stream_key() == slow.shared_stream_key()
    assert base.shared_stream_key() != other_company.shared_stream_key()
    assert base.shared_stream_key() != other_interval.shared_stream_key()
    assert base.state_key != slow.state_key, "each selection keeps its own record"
    hash(base.shared_stream_key())


async def through_shared_stream(
    triggers: list[UnansweredTicketsEventTrigger], until: Callable[[list[list[str]]], bool]
) -> list[list[str]]:
    """Run the triggers as the triggerer does for a shared key: Airflow's SharedStreamManager."""
    from airflow.triggers.shared_stream import SharedStreamManager

    manager = SharedStreamManager()
    seen: list[list[str]] = [[] for _ in triggers]

    async def one(index: int, trigger: UnansweredTicketsEventTrigger) -> None:
        stream = manager.subscribe(trigger_id=index, trigger=trigger, key=trigger.shared_stream_key())
        async for event in trigger.filter_shared_stream(stream):
            seen[index].extend(t["message"] for t in event.payload["tickets"])

    tasks = [asyncio.ensure_future(one(i, t)) for i, t in enumerate(triggers)]
    try:
        deadline = asyncio.get_running_loop().time() + 30  # asyncio.timeout needs Python 3.11
        while not until(seen):
            assert asyncio.get_running_loop().time() < deadline, f"the watchers saw only {seen} in 30 s"
            await asyncio.sleep(0.01)
            for task in tasks:
                if task.done():
                    task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for index, trigger in enumerate(triggers):
            await manager.unsubscribe(index, trigger.shared_stream_key())
    return seen


@needs_3_3
def test_one_shared_poll_feeds_two_watchers_with_their_own_selection(sandbox: SandboxHandle) -> None:
    sandbox.add_invoice("inv-old", CO, [customer("old", days=2)])
    sandbox.add_invoice("inv-new", CO, [customer("new", minutes=5)])
    every = watcher(poll_interval=0.3)
    day = watcher(poll_interval=0.3, unanswered_for_seconds=86400)
    assert every.shared_stream_key() == day.shared_stream_key()

    def both_done_and_polled_thrice(seen: list[list[str]]) -> bool:
        return len(seen[0]) == 2 and len(seen[1]) == 1 and company_reads(sandbox) >= 3

    every_seen, day_seen = asyncio.run(through_shared_stream([every, day], both_done_and_polled_thrice))

    assert every_seen == ["old", "new"]
    assert day_seen == ["old"]
    reads = company_reads(sandbox)
    assert 3 <= reads <= 4, f"one read per interval for both watchers, not one each ({reads})"


@needs_3_3
def test_an_error_that_cannot_heal_ends_every_watcher_of_a_shared_poll(sandbox: SandboxHandle) -> None:
    triggers = [
        UnansweredTicketsEventTrigger("no-such-club", poll_interval=0.01, unanswered_for_seconds=s) for s in (1, 2)
    ]

    with pytest.raises(ClubCollectNotFoundError, match="stopped watching company 'no-such-club'"):
        asyncio.run(through_shared_stream(triggers, lambda seen: False))
    assert company_reads(sandbox) == 1, "one read for the group, and it ended the group"


def test_a_storm_of_5xx_429_and_drops_does_not_end_the_watcher(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.add_invoice("inv-1", CO, [customer("a", hours=1)])
    # The default connection allows 5 retries: 6 failures in a row exhaust a poll, twice over.
    storm = [{"fault": "error", "status": 503}] * 3 + [{"fault": "drop"}] * 3
    storm += [{"fault": "rate_limit", "retry_after": 0}] * 3 + [{"fault": "error", "status": 500}] * 3
    sandbox.set_faults(script=storm)

    with caplog.at_level(logging.WARNING):
        events = asyncio.run(watch(sandbox, watcher(), polls=len(storm) + 2))

    assert ids(events) == ["a"]
    assert [r["status"] for r in sandbox.requests()][: len(storm)].count(200) == 0
    # The trigger logs through Airflow's structlog set-up (stdout here, the triggerer's log in Airflow).
    # Airflow before 3.1 sends the records to both: count them once.
    stayed = [r.getMessage() for r in caplog.records if "still watching" in r.getMessage()]
    stayed = stayed or [line for line in capsys.readouterr().out.splitlines() if "still watching" in line]
    assert len(stayed) == 2, "each exhausted poll is a warning, not the end"
    assert "connection lost" in stayed[0]
    assert "after 6 attempts" in stayed[0]
    assert "HTTP 500" in stayed[1]


@pytest.mark.parametrize(
    ("setup", "error", "words"),
    [
        ("bad_key", ClubCollectAuthError, ["HTTP 401", "check the API key"]),
        ("unknown_company", ClubCollectNotFoundError, ["HTTP 404", "no-such-club"]),
        ("bad_connection", ClubCollectValidationError, ["plain http://", "clear text"]),
        ("missing_connection", ClubCollectError, ["missing_conn"]),
    ],
)
def test_what_cannot_heal_ends_the_watcher_with_a_clear_error(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, setup: str, error: type[Exception], words: list[str]
) -> None:
    company_id, conn_id = CO, "clubcollect_default"
    if setup == "bad_key":
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
            json.dumps({"conn_type": "clubcollect", "password": "wrong", "host": sandbox.base_url}),
        )
    elif setup == "unknown_company":
        company_id = "no-such-club"
    elif setup == "bad_connection":
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
            json.dumps({"conn_type": "clubcollect", "password": "k", "host": "http://clubcollect.example/api"}),
        )
    else:
        conn_id = "missing_conn"
    trigger = UnansweredTicketsEventTrigger(company_id, poll_interval=0.01, clubcollect_conn_id=conn_id)

    async def first() -> None:
        async for _ in trigger.run():
            raise AssertionError("no event expected")

    with pytest.raises(error) as caught:
        asyncio.run(asyncio.wait_for(first(), 30))

    message = str(caught.value)
    assert message.startswith(f"UnansweredTicketsEventTrigger stopped watching company {company_id!r}:")
    for word in words:
        assert word in message
    assert sandbox.api_key not in message
    assert len(message) < 2000


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"company_id": ""}, ["company_id"]),
        ({"company_id": "a/b"}, ["company_id"]),
        ({"unanswered_for_seconds": -1}, ["unanswered_for_seconds", "0 or more", "-1"]),
        ({"unanswered_for_seconds": True}, ["unanswered_for_seconds"]),
        ({"since": "yesterday"}, ["since must be a datetime or an ISO 8601 string such as", "yesterday"]),
        ({"since": ""}, ["since must be a datetime or an ISO 8601 string such as"]),
        ({"poll_interval": 0}, ["poll_interval", "above 0"]),
        ({"poll_interval": float("nan")}, ["poll_interval"]),
        ({"max_concurrency": 0}, ["max_concurrency", "at least 1"]),
        ({"backoff": {"initial": -1}}, ["Backoff initial", "got -1"]),
        ({"backoff": {"initial": 2, "maximum": 1}}, ["Backoff maximum must be at least initial (2 s), got 1"]),
        ({"backoff": {"nope": 1}}, ["backoff", "nope"]),
        ({"backoff": 0.5}, ["backoff must be a Backoff or a dict of its fields", "got 0.5"]),
        ({"clubcollect_conn_id": ""}, ["clubcollect_conn_id"]),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any], words: list[str]) -> None:
    arguments: dict[str, Any] = {"company_id": CO, **kwargs}

    with pytest.raises(ClubCollectValidationError) as caught:
        UnansweredTicketsEventTrigger(**arguments)

    for word in words:
        assert word in str(caught.value)


def test_the_record_stays_bounded_however_long_it_runs() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    reported = _Reported()
    keys = []
    for n in range(5000):
        moment = (start + timedelta(seconds=n)).isoformat(timespec="microseconds")
        key = f"{moment} {moment} t{n:05d}"
        keys.append(key)
        reported = reported.add([key])
        assert len(reported.recent) <= MAX_RECENT
        assert key in reported

    assert all(key in reported for key in keys), "nothing reported is ever forgotten"
    assert len(json.dumps(reported.to_json())) < 64_000, "under Airflow's default limit for a stored value"
    assert _Reported.from_json(json.loads(json.dumps(reported.to_json())), "k") == reported
    late = (start + timedelta(seconds=4999) - LOOKBACK / 2).isoformat(timespec="microseconds")
    assert f"{late} {late} z-late" not in reported, "a late ticket within the lookback is still new"


def test_tickets_sharing_a_date_are_told_apart() -> None:
    same = "2026-01-01T00:00:00.000000+00:00"
    reported = _Reported().add([f"{same} {same} b"])

    assert f"{same} {same} a" not in reported, "a ticket sharing the newest date, with a smaller id"
    assert f"{same} {same} b" in reported


def test_an_unreadable_record_stops_the_watcher_rather_than_flooding() -> None:
    with pytest.raises(ClubCollectError, match="delete that key"):
        _Reported.from_json({"version": 99}, "clubcollect.unanswered:x")


def test_a_date_at_the_start_of_the_calendar_does_not_overflow() -> None:
    start = "0001-01-01T00:00:00.000000+00:00"
    reported = _Reported().add([f"{start} {start} t-start"])

    assert f"{start} {start} t-start" in reported


def transports_built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The async transports built from now on, as a list that grows."""
    from airflow_provider_clubcollect import transport as transport_module

    built: list[Any] = []

    class CountedTransport(transport_module.AsyncTransport):
        def __init__(self, settings: Any) -> None:
            super().__init__(settings)
            built.append(self)

    monkeypatch.setattr(transport_module, "AsyncTransport", CountedTransport)
    return built


def test_many_watchers_on_one_loop_share_one_client_and_report_each_ticket_once(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_clubcollect.hooks import clubcollect as tickets

    built = transports_built(monkeypatch)
    companies = [f"club-{n}" for n in range(40)]
    for n, company_id in enumerate(companies):
        sandbox.add_invoice(f"inv-{n}", company_id, [customer(f"first-{n}", hours=1)])
    seen: dict[str, list[str]] = {c: [] for c in companies}

    def writes_again() -> None:
        for n in range(len(companies)):
            sandbox.add_tickets(f"inv-{n}", [customer(f"second-{n}", seconds=0)])

    async def main() -> None:
        async def one(company_id: str) -> None:
            trigger = UnansweredTicketsEventTrigger(company_id, poll_interval=0.05, backoff=FAST)
            async for event in trigger.run():
                seen[company_id].extend(t["message"] for t in event.payload["tickets"])

        tasks = [asyncio.ensure_future(one(c)) for c in companies]
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + 30
            while not all(seen.values()):
                assert loop.time() < deadline, f"not every watcher reported: {seen}"
                await asyncio.sleep(0.02)
            assert len(tickets._shared[loop]) == 1, "one shared connection for the loop"
            await asyncio.to_thread(writes_again)
            while not all(len(s) == 2 for s in seen.values()):
                assert loop.time() < deadline, f"not every watcher reported the second ticket: {seen}"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # several more polls: nothing is reported again
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert not tickets._shared[loop], "the last watcher to leave closed the shared client"

    asyncio.run(main())

    assert seen == {c: [f"first-{n}", f"second-{n}"] for n, c in enumerate(companies)}, "once each, none missed"
    assert len(built) == 1, "one HTTP client for forty watchers"
    assert built[0].client.is_closed


def test_a_changed_connection_is_picked_up_and_the_old_client_closed(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_clubcollect.hooks import clubcollect as tickets

    built = transports_built(monkeypatch)
    monkeypatch.setattr(tickets, "CONNECTION_TTL", 0.2)
    sandbox.add_invoice("inv-1", CO, [customer("a", hours=1)])
    trigger = watcher(poll_interval=0.05)

    async def main() -> list[str]:
        seen: list[str] = []
        async for event in trigger.run():
            seen.extend(t["message"] for t in event.payload["tickets"])
            # The key is rotated to one ClubCollect refuses: the watcher must notice within the TTL.
            monkeypatch.setenv(
                "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
                json.dumps({"conn_type": "clubcollect", "password": "rotated", "host": sandbox.base_url}),
            )
        return seen

    with pytest.raises(ClubCollectAuthError, match="HTTP 401"):
        asyncio.run(asyncio.wait_for(main(), 30))
    assert len(built) == 2, "a new client for the changed connection"
    assert all(t.client.is_closed for t in built)
    assert {r["status"] for r in sandbox.requests()} == {200, 401}


def test_polls_on_one_connection_go_a_few_at_a_time(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks import clubcollect as tickets

    monkeypatch.setattr(tickets, "POLLS_IN_FLIGHT", 2)
    companies = [f"club-{n}" for n in range(6)]
    for n, company_id in enumerate(companies):
        sandbox.add_invoice(f"inv-{n}", company_id, [customer(f"m{n}", hours=1)])
    sandbox.set_faults(latency_ms=50)
    seen: list[str] = []

    async def main() -> None:
        async def one(company_id: str) -> None:
            async for event in UnansweredTicketsEventTrigger(company_id, poll_interval=0.01, backoff=FAST).run():
                seen.extend(t["message"] for t in event.payload["tickets"])

        tasks = [asyncio.ensure_future(one(c)) for c in companies]
        try:
            while len(seen) < len(companies) or await asyncio.to_thread(company_reads, sandbox) < 3 * len(companies):
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), 30))

    assert sorted(seen) == [f"m{n}" for n in range(6)]
    in_flight = [r["in_flight"] for r in page_reads(sandbox)]
    assert max(in_flight) == 2, f"at most 2 polls at once on one connection, got {max(in_flight)}"
