"""The request budget in one process (SPEC section 12): the connection's extras, the cap, its sharing.

Waits are measured on a clock the test turns, or bounded from below only: a slow, noisy machine
makes a wait longer, never shorter.  The budget shared through Redis is in test_budget_redis.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from airflow_provider_clubcollect.budget import (
    RequestBudget,
    budget_for,
    forget_budgets,
    shown_budget_url,
)
from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from tests.conftest import conn_settings, modules_after_importing

KEY = "0123456789abcdef0123456789abcdef01234567"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()  # names the key's budget, in memory and in Redis
PASSWORD = "redis-pass-9f8e7d"


@pytest.fixture(autouse=True)
def fresh_budgets():
    forget_budgets()
    yield
    forget_budgets()


def settings(**extra):
    return conn_settings("cc", host=None, password=KEY, extra=extra)


class FakeClock:
    """A monotonic clock that moves only when told; ``sleep`` records the wait and does not move it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)


# --- the connection's extras ------------------------------------------------------------------------


def test_the_budget_extras_are_read():
    read = settings(max_requests_per_second="2.5", budget_url=f" redis://:{PASSWORD}@redis.internal:6379/0 ")
    assert read.max_requests_per_second == 2.5
    assert read.budget_url == f"redis://:{PASSWORD}@redis.internal:6379/0"
    assert settings(max_requests_per_second=4).max_requests_per_second == 4.0
    assert settings(max_requests_per_second=1, budget_url="rediss://redis.internal").budget_url.startswith("rediss:")


def test_no_budget_extras_mean_no_cap():
    read = settings()
    assert (read.max_requests_per_second, read.budget_url) == (None, None)
    # Older connection forms store an emptied field as "".
    read = settings(max_requests_per_second="", budget_url="")
    assert (read.max_requests_per_second, read.budget_url) == (None, None)
    assert not budget_for(read).shared
    assert [budget_for(read).acquire() for _ in range(100)] == [0.0] * 100


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"max_requests_per_second": 0}, r"'max_requests_per_second' must be a finite number above 0"),
        ({"max_requests_per_second": -2}, r"must be a finite number above 0, got -2"),
        ({"max_requests_per_second": "fast"}, r"must be a finite number above 0, got 'fast'"),
        ({"max_requests_per_second": True}, r"must be a finite number above 0"),
        ({"max_requests_per_second": "inf"}, r"must be a finite number above 0"),
        ({"max_requests_per_second": "nan"}, r"must be a finite number above 0"),
        ({"budget_url": "redis://redis.internal:6379/0"}, r"'budget_url' is set but 'max_requests_per_second' is not"),
        ({"max_requests_per_second": 5, "budget_url": "memcached://cache:11211"}, r"must be a Redis URL"),
        ({"max_requests_per_second": 5, "budget_url": "redis.internal:6379"}, r"must be a Redis URL"),
        ({"max_requests_per_second": 5, "budget_url": "redis://"}, r"must be a Redis URL"),
        ({"max_requests_per_second": 5, "budget_url": "redis://redis.internal:99999"}, r"a port from 1 to 65535"),
        ({"max_requests_per_second": 5, "budget_url": "redis://redis.internal:0"}, r"a port from 1 to 65535"),
        ({"max_requests_per_second": 5, "budget_url": "redis://redis.internal:port"}, r"a port from 1 to 65535"),
        ({"max_requests_per_second": 5, "budget_url": 6379}, r"must be a Redis URL such as .*, got 6379"),
        ({"max_requests_per_second": 5, "budget_url": "redis://:pw@[::1:6379/0"}, r"got '<a URL that cannot be pa"),
        ({"max_request_per_second": 5}, r"unknown extra 'max_request_per_second'; did you mean 'max_requests_per"),
        ({"budget": "redis://x"}, r"unknown extra 'budget'; did you mean 'budget_url'"),
    ],
)
def test_bad_budget_extras_are_refused(extra, match):
    with pytest.raises(ClubCollectValidationError, match=match) as refused:
        settings(**extra)
    assert "Connection 'cc'" in str(refused.value)
    assert ":pw@" not in str(refused.value)


def test_a_budget_url_password_is_never_shown():
    url = f"redis://default:{PASSWORD}@redis.internal:6379/0"
    read = settings(max_requests_per_second=5, budget_url=url)
    assert PASSWORD not in repr(read)
    assert "budget_url='redis://***@redis.internal:6379/0'" in repr(read)
    assert read.secrets == (KEY, PASSWORD)
    assert read.scrub(f"AUTH failed for {PASSWORD} with key {KEY}") == "AUTH failed for *** with key ***"
    assert PASSWORD not in repr(budget_for(read))
    assert KEY not in repr(budget_for(read))
    with pytest.raises(ClubCollectValidationError) as refused:
        settings(max_requests_per_second=5, budget_url=f"http://user:{PASSWORD}@redis.internal")
    assert PASSWORD not in str(refused.value)
    assert shown_budget_url("redis://redis.internal:6379") == "redis://redis.internal:6379"
    assert settings(max_requests_per_second=5).secrets == (KEY,)


def test_an_answer_is_scrubbed_of_the_key_only_not_of_the_budget_password():
    # A short password may be a word of a ticket: changing the thread would break never-twice's read-back.
    read = settings(max_requests_per_second=5, budget_url="redis://:reply@redis.internal:6379/0")
    body = f'{{"message": "Thanks for your reply", "echo": "{KEY}"}}'.encode()
    assert read.scrub_body(body) == b'{"message": "Thanks for your reply", "echo": "***"}'


def test_a_budget_url_without_the_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "limits" else real(name, *a))
    with pytest.raises(ClubCollectValidationError, match=r"needs limits: install the provider's 'budget' extra") as e:
        settings(max_requests_per_second=5, budget_url="redis://redis.internal:6379/0")
    assert "(pip install 'airflow-provider-clubcollect[budget]')" in str(e.value)
    # The cap alone needs nothing installed.
    assert settings(max_requests_per_second=5).max_requests_per_second == 5.0


def test_importing_the_budget_imports_no_redis():
    loaded = modules_after_importing("airflow_provider_clubcollect.budget", "airflow_provider_clubcollect.connection")
    assert not [name for name in loaded if name.split(".")[0] in ("limits", "redis")]


# --- one budget per key in a process -----------------------------------------------------------------


def test_one_budget_per_key_rate_and_url_in_a_process():
    first = budget_for(settings(max_requests_per_second=5))
    assert budget_for(settings(max_requests_per_second="5")) is first
    assert budget_for(settings(max_requests_per_second=6)) is not first
    other_key = conn_settings("cc", host=None, password="another-key", extra={"max_requests_per_second": 5})
    assert budget_for(other_key) is not first
    shared = budget_for(settings(max_requests_per_second=5, budget_url="redis://127.0.0.1:1/0"))
    assert shared is not first
    assert shared.shared
    assert not first.shared
    assert first.digest == DIGEST != KEY


def test_n_threads_take_n_minus_burst_over_rate_on_a_fake_clock():
    clock = FakeClock()
    rate, threads = 4.0, 20
    budget = RequestBudget(rate, digest="d", clock=clock, sleep=clock.sleep)
    burst = 4  # the whole requests in a second
    with ThreadPoolExecutor(max_workers=8) as pool:
        waits = sorted(pool.map(lambda _: budget.acquire(), range(threads)))
    # The first `burst` go at once; each later one a turn (1/rate) after the one before it.
    assert waits == pytest.approx([0.0] * burst + [n / rate for n in range(1, threads - burst + 1)])
    assert max(waits) == pytest.approx((threads - burst) / rate)
    assert sorted(clock.waits) == pytest.approx(waits[burst:])


def test_the_bucket_refills_at_the_rate_up_to_the_burst():
    clock = FakeClock()
    budget = RequestBudget(3.0, clock=clock, sleep=lambda _: None)  # burst 3; the clock stands still while it waits
    assert [budget.acquire() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 1 / 3])
    clock.now += 1 / 3  # the turn reserved above is used now
    assert budget.acquire() == pytest.approx(1 / 3)
    clock.now += 100.0  # idle: the bucket is full again, and no fuller than `burst`
    assert [budget.acquire() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 1 / 3])


def test_a_fractional_rate_keeps_one_request_at_a_time():
    clock = FakeClock()
    budget = RequestBudget(0.5, clock=clock, sleep=clock.sleep)
    assert [budget.acquire() for _ in range(3)] == [0.0, 2.0, 4.0]


def test_threads_wait_at_least_what_the_cap_asks():
    budget = RequestBudget(10.0)  # burst 10
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda _: budget.acquire(), range(15)))
    assert time.monotonic() - started >= (15 - 10) / 10 - 0.01


def test_coroutines_share_the_cap_without_blocking_the_loop():
    # Burst 20.  The budget's clock stands still, so a busy machine pausing the 26 calls cannot shorten the
    # waits it hands out; the coroutines still wait them out on the real loop.
    budget = RequestBudget(20.0, clock=FakeClock())

    async def main() -> tuple[list[float], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        running = asyncio.create_task(ticker())
        waits = await asyncio.gather(*(budget.aacquire() for _ in range(26)))
        running.cancel()
        return sorted(waits), ticks

    started = time.monotonic()
    waits, ticks = asyncio.run(main())
    assert time.monotonic() - started >= (26 - 20) / 20 - 0.01
    assert waits[:20] == [0.0] * 20
    assert waits[-1] == pytest.approx(6 / 20)
    assert ticks > 5  # the loop went on while they waited


# --- against a server that enforces the same budget -----------------------------------------------


def _hammer(sandbox, budget, count: int, workers: int = 6) -> list[int]:
    url = f"{sandbox.base_url}/v2/invoices/inv-1/tickets"
    headers = {"Authorization": f"ApiKey {sandbox.api_key}"}

    def one(_: int) -> int:
        budget.acquire()
        return requests.get(url, headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(count)))


def test_the_cap_keeps_a_process_inside_the_servers_budget(sandbox):
    sandbox.add_invoice("inv-1", "club-1", [])
    # Without a cap, a quick burst runs into the server's budget ...
    sandbox.set_faults(rate_limit_per_second=2, rate_limit_burst=2)
    assert 429 in _hammer(sandbox, RequestBudget(None), 10)
    # ... with the same cap on our side, nothing is refused.  The server's bucket holds two more
    # than ours: the requests' own jitter on the way over.
    sandbox.set_faults(rate_limit_per_second=20, rate_limit_burst=22)
    sandbox.clear_requests()
    statuses = _hammer(sandbox, RequestBudget(20.0), 40)
    assert statuses == [200] * 40
    assert sum(entry["status"] == 429 for entry in sandbox.requests()) == 0


def test_store_slots_keep_the_rate_and_spread_it():
    for rate in (0.05, 0.3, 1 / 3, 0.5, 0.99, 1, 1.5, 2.5, 10, 40, 120):
        budget = RequestBudget(rate)
        amount, seconds = budget._amount, budget._seconds
        assert amount >= 1
        assert amount / seconds == pytest.approx(rate), "the cap, on average"
        assert seconds <= 0.1 or amount == 1, "a tenth of a second's worth at most in one slot"
    assert (RequestBudget(40)._amount, RequestBudget(40)._seconds) == (4, 0.1)


def test_the_hook_and_the_trigger_draw_from_the_connections_budget(sandbox, monkeypatch):
    """max_requests_per_second reaches every request: the hook's (retries included) and the trigger's."""
    import json

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger

    for n in range(3):
        sandbox.add_invoice(f"inv-{n}", "club-1", [{"message": "?", "sender": "CUSTOMER", "date": "2026-01-01"}])
    conn = {**json.loads(sandbox.conn_uri_json), "extra": {"max_requests_per_second": 20}}
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(conn))
    sandbox.set_faults(rate_limit_per_second=20, rate_limit_burst=22)
    sandbox.clear_requests()

    with ClubCollectHook() as hook:
        for _ in range(30):
            hook.get_invoice_tickets("inv-1")
    # The trigger's poll reads one page of 1 ticket per request: 15 polls in a row.
    trigger = UnansweredTicketsTrigger("club-1", min_tickets=99, poke_interval=0.001, timeout_at=None)

    async def fifteen_polls() -> None:
        async with ClubCollectHook() as hook:
            for _ in range(15):
                await trigger.select(await hook.aget_company_tickets("club-1", "unanswered"))

    asyncio.run(fifteen_polls())
    statuses = [entry["status"] for entry in sandbox.requests()]
    assert len(statuses) == 45
    assert statuses.count(429) == 0, "every request waited for the connection's budget"


def test_a_budget_url_password_is_masked_in_airflows_logs(monkeypatch):
    from airflow.providers.common.compat.sdk import redact

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    extra = {"max_requests_per_second": 5, "budget_url": f"redis://:{PASSWORD}@redis.internal:6379/0"}
    conn = {"conn_type": "clubcollect", "password": KEY, "host": "http://127.0.0.1:9/api", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(conn))
    assert ClubCollectHook().settings.budget_url == extra["budget_url"]  # reading the connection masks it
    assert PASSWORD not in str(redact(f"AUTH failed for {PASSWORD}"))
