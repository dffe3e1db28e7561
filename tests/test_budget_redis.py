"""One budget per API key shared through Redis (SPEC section 12), against a real Redis on loopback.

Each test module run starts Debian's ``redis-server`` on a free loopback port (with a password, so
that the tests also see it kept out of logs) and stops it by its PID.  Without ``redis-server`` the
tests skip, saying so; ``make test`` installs it when it runs as root.

"Two processes" are two :class:`RequestBudget` objects (each with its own memory, as two processes
have), and once a real second process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import pytest

from airflow_provider_clubcollect.budget import (
    STORE_RETRY_SECONDS,
    STORE_THREADS,
    RequestBudget,
    budget_for,
    forget_budgets,
)
from tests.conftest import conn_settings

redis = pytest.importorskip("redis", reason="the budget extra (limits, redis) is not installed")
pytest.importorskip("limits", reason="the budget extra (limits, redis) is not installed")

KEY = "fedcba9876543210fedcba9876543210fedcba98"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()  # names the key's budget in Redis
PASSWORD = "budget-test-pass-4d2c"
LOGGER = "airflow_provider_clubcollect.budget"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(port: int):
    """``redis-server`` on 127.0.0.1:port with PASSWORD, no persistence; stopped by its PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server here (Debian: apt-get install redis-server): the shared budget needs a Redis")
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", PASSWORD]
    process = subprocess.Popen(
        [binary, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=2)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"redis-server did not start on 127.0.0.1:{port}")
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def store():
    port = free_port()
    with redis_server(port) as client:
        yield port, client


@pytest.fixture(autouse=True)
def fresh(request):
    forget_budgets()
    if "store" in request.fixturenames:
        request.getfixturevalue("store")[1].flushall()
    yield
    forget_budgets()


def url(port: int, password: str = PASSWORD) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def shared_budget(port: int, rate: float = 3.0, **kwargs) -> RequestBudget:
    return RequestBudget(rate, digest=DIGEST, budget_url=url(port), **kwargs)


def test_two_budgets_share_one_budget(store):
    port, _ = store
    first, second = shared_budget(port, rate=0.5), shared_budget(port, rate=0.5)  # one request in each 2 s slot
    slot = math.floor(time.time() / first._seconds)
    assert first.acquire() == 0.0
    # The other "process" has spent nothing itself, yet finds the key's budget spent: it goes in a later
    # slot than the first's (it waits, unless that slot ended between the two).
    second.acquire()
    assert math.floor(time.time() / second._seconds) > slot


def test_a_second_process_draws_from_the_same_budget(store):
    port, _ = store
    # One request in each slot of 2 s.  The child takes one and stays alive until told, so that how
    # long a Python takes to start or exit is never part of the test.
    extra = {"max_requests_per_second": 0.5, "budget_url": url(port)}
    child = f"""
import json, math, sys, time
from airflow_provider_clubcollect.budget import budget_for
from types import SimpleNamespace
from airflow_provider_clubcollect.connection import settings_from_airflow_connection
# The connection's fields without importing Airflow, whose start-up may print on stdout.
fields = dict(host=None, port=None, password={KEY!r}, extra_dejson={extra!r})
conn = SimpleNamespace(conn_id="cc", conn_type="clubcollect", **fields)
budget = budget_for(settings_from_airflow_connection(conn))
print(json.dumps([budget.shared, budget.acquire(), math.floor(time.time() / budget._seconds)]), flush=True)
sys.stdin.read()
"""
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "the child printed nothing"
        shared, waited, child_slot = json.loads(line)
        assert (shared, waited) == (True, 0.0)
        here = budget_for(conn_settings("cc", host=None, password=KEY, extra=extra))
        assert here.shared
        here.acquire()
        # The child's slot is spent for every process: this one goes in a later slot (it waits,
        # unless the child's slot ended meanwhile).
        assert math.floor(time.time() / here._seconds) > child_slot
    finally:
        process.communicate(timeout=60)


def test_a_shared_budget_holds_the_rate_across_budgets(store):
    port, _ = store
    budgets = [shared_budget(port, rate=5.0) for _ in range(2)]  # 5 requests in any second
    started = time.monotonic()
    for n in range(12):
        budgets[n % 2].acquire()
    # 12 requests at 5 a second, one per slot of 0.2 s: the 12th goes 11 slots after the first.
    assert time.monotonic() - started >= 2.0 - 0.05


def test_turns_are_booked_slot_after_slot_and_their_counts_expire_soon_after(store):
    port, client = store
    budgets = [shared_budget(port, rate=5.0) for _ in range(2)]  # one request in each slot of 0.2 s
    for n in range(12):
        budgets[n % 2]._turn()  # books a turn without waiting for it
    lives = {int(key.rsplit(b"/", 1)[1]): client.ttl(key) for key in client.keys("*")}
    first = min(lives)
    assert sorted(lives) == list(range(first, first + 12))  # no slot skipped, none booked twice
    # Each count lives a little past its slot (the last ends 2.4 s from now at most), never longer.
    assert all(0 < ttl <= 5 for ttl in lives.values())


def test_budgets_built_at_once_each_get_their_store():
    # Two keys' budgets, built in two threads at once, while redis is first imported: limits reads redis's
    # version from sys.modules and took a half-imported one for too old, so the budget fell back for 30 s.
    child = """
import threading
from airflow_provider_clubcollect.budget import RequestBudget
budgets = [RequestBudget(5, digest=str(n) * 64, budget_url="redis://127.0.0.1:1/0") for n in range(8)]
failed = []
def build(budget):
    try:
        budget._redis()
    except Exception as error:
        failed.append(f"{type(error).__name__}: {error}")
threads = [threading.Thread(target=build, args=(budget,)) for budget in budgets]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(failed)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_async_budgets_share_one_budget(store):
    port, _ = store

    async def main() -> tuple[list[float], float]:
        first, second = shared_budget(port, rate=0.5), shared_budget(port, rate=0.5)
        return await first.aacquire(), await second.aacquire()

    taken, waited = asyncio.run(main())
    assert taken == 0.0
    assert waited > 0


def test_sync_and_async_draw_from_one_budget(store):
    port, _ = store
    budget = shared_budget(port, rate=0.5)
    assert budget.acquire() == 0.0
    assert asyncio.run(budget.aacquire()) > 0


def test_redis_holds_a_digest_never_the_key(store):
    port, client = store
    budget = shared_budget(port)
    for _ in range(3):
        budget.acquire()
    keys = [key.decode() for key in client.keys("*")]
    assert keys
    assert all(DIGEST in key for key in keys)
    assert not [key for key in keys if KEY in key]
    for key in keys:
        values = client.lrange(key, 0, -1) if client.type(key) == b"list" else [client.dump(key)]
        assert not [value for value in values if KEY.encode() in value]


def test_a_store_that_is_down_warns_once_and_the_cap_goes_on(caplog):
    port = free_port()  # nothing listens there
    budgets = [shared_budget(port, rate=50.0) for _ in range(2)]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for budget in budgets:
            for _ in range(3):
                assert budget.acquire() == 0.0  # the per-process bucket (burst 50): nothing raised
        assert asyncio.run(budgets[0].aacquire()) == 0.0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"redis://***@127.0.0.1:{port}/0 cannot be reached" in message
    assert "keeps max_requests_per_second=50 on its own" in message
    assert not [r for r in caplog.records if PASSWORD in r.getMessage() or KEY in r.getMessage()]


def test_budgets_failing_at_once_warn_once(caplog):
    port = free_port()  # nothing listens there: one store, so one warning however many threads fail at once
    budgets = [shared_budget(port, rate=50.0) for _ in range(16)]
    start = threading.Barrier(len(budgets))
    threads = [threading.Thread(target=lambda b=b: (start.wait(), b.acquire())) for b in budgets]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1


def test_a_wrong_password_falls_back_without_showing_it(store, caplog):
    port, _ = store
    wrong = "not-the-password-77"
    budget = RequestBudget(50.0, digest=DIGEST, budget_url=url(port, wrong))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert budget.acquire() == 0.0
    (warning,) = caplog.records
    assert "cannot be reached" in warning.getMessage()
    assert wrong not in warning.getMessage()


def test_the_store_is_asked_again_after_a_while(caplog):
    port = free_port()
    clock_now = [1000.0]
    budget = shared_budget(port, rate=50.0, clock=lambda: clock_now[0])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        budget.acquire()  # down: the bucket
        with redis_server(port) as client:
            budget.acquire()  # still taken for down: the store is not asked yet
            assert client.keys("*") == []
            clock_now[0] += STORE_RETRY_SECONDS + 1
            budget.acquire()
            assert client.keys("*")  # the store holds the budget again
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot be reached" in m for m in messages) == 1
    assert sum("answers again" in m for m in messages) == 1


def test_threads_asking_a_new_budget_at_once_build_one_store(monkeypatch):
    import limits.storage

    built = []

    class SlowToBuild(limits.storage.RedisStorage):  # a wide window for a second thread to build its own
        def __init__(self, *args, **kwargs):
            built.append(1)
            time.sleep(0.2)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(limits.storage, "RedisStorage", SlowToBuild)
    budget = shared_budget(free_port(), rate=50.0)  # nothing listens there: each turn then falls back
    threads = [threading.Thread(target=budget.acquire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1


def test_a_hanging_store_holds_its_own_threads_not_the_loops():
    def asking() -> set[str]:  # the threads waiting on the store now: those inside a budget's turn
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        return {
            names.get(ident, "?")
            for ident, frame in sys._current_frames().items()
            if any(f.f_code.co_name == "_turn" for f, _ in traceback.walk_stack(frame))
        }

    with socket.socket() as silent:  # accepts connections and never answers: a hanging Redis
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        budget = shared_budget(silent.getsockname()[1], rate=1000.0)

        async def main() -> tuple[list[float], set[str]]:
            waits = [asyncio.ensure_future(budget.aacquire()) for _ in range(40)]  # more than any default executor
            seen: set[str] = set()
            for _ in range(200):  # the first asks hang on the silent store for seconds
                await asyncio.sleep(0.05)
                if seen := asking():
                    break
            return await asyncio.gather(*waits), seen

        waited, seen = asyncio.run(main())
    assert waited == [0.0] * 40  # the per-process bucket served them all once the store timed out
    # Never the loop's default executor (asyncio_N threads): the budget's own, at most STORE_THREADS.
    assert seen
    assert all(name.startswith("clubcollect-budget") for name in seen)
    assert len(seen) <= STORE_THREADS
