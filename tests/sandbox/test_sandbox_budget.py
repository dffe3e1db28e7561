"""The sandbox's budget per API key (SPEC section 12): a token bucket, 429 with Retry-After beyond it.

Over real HTTP on loopback.  Waits come from the server's own Retry-After, and refused requests are
counted in the request log, so nothing here asserts on wall time.

The sandbox accepts one API key.  "Per key" is checked with what exists: a request presenting
another key (refused 401) draws from a bucket of its own, never from the accepted key's.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from airflow_provider_clubcollect.sandbox.client import SandboxControlError, ticket
from airflow_provider_clubcollect.sandbox.faults import TokenBucket, parse_fault_settings

PATH = "v2/invoices/inv-1/tickets"
#: A rate slow enough that no token comes back during a test's few requests, however slow the machine.
SLOW = 0.05


@pytest.fixture
def invoice(server):
    server.state.add_invoice(
        "inv-1", "club-1", [ticket("Ik wil niet betalen", "CUSTOMER", datetime(2026, 3, 1, tzinfo=timezone.utc))]
    )
    return "inv-1"


def retry_after(response) -> float:
    return float(response.headers["Retry-After"])


def test_a_burst_is_served_then_429_with_retry_after_then_served_after_waiting(api, control, invoice):
    # One token a second: the four requests have a second to arrive before it comes back (a fifth of a
    # second was too little on a busy machine).
    control.set_faults(rate_limit_per_second=1, rate_limit_burst=3)
    assert [api.get(PATH).status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get(PATH)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    # One token comes back every second: never more than that to wait, and a decimal, not a date.
    assert 0 < retry_after(refused) <= 1.0
    time.sleep(retry_after(refused))
    assert api.get(PATH).status_code == 200


def test_refused_requests_are_in_the_request_log(api, control, invoice):
    control.set_faults(rate_limit_per_second=SLOW, rate_limit_burst=2)
    statuses = [api.get(PATH).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    log = control.requests()
    assert [(entry["status"], entry["fault"]) for entry in log] == [(200, None)] * 2 + [(429, "budget_exceeded")] * 3
    assert sum(entry["status"] == 429 for entry in log) == 3


def test_retry_after_says_how_long_until_a_token(api, control, invoice):
    control.set_faults(rate_limit_per_second=SLOW, rate_limit_burst=1)
    assert api.get(PATH).status_code == 200
    refused = api.get(PATH)
    # 1 / 0.05 = 20 s for a token, less the moment since the first request took it.
    assert 15 < retry_after(refused) <= 20


def test_the_default_burst_is_the_rate_rounded(control):
    assert control.set_faults(rate_limit_per_second=4.4)["rate_limit_burst"] == 4
    assert control.set_faults(rate_limit_per_second=0.1)["rate_limit_burst"] == 1


def test_each_key_has_its_own_bucket(api, control, invoice):
    control.set_faults(rate_limit_per_second=SLOW, rate_limit_burst=2)
    other = api.headers(Authorization="ApiKey another-partners-key")
    assert [api.get(PATH).status_code for _ in range(3)] == [200, 200, 429]
    # Another key is not refused for the first key's spending: it is answered (401, the sandbox
    # knows one key) until its own bucket runs dry.
    assert [api.get(PATH, headers=other).status_code for _ in range(3)] == [401, 401, 429]
    assert api.get(PATH).status_code == 429


def test_a_refused_request_uses_no_scripted_fault(api, control, invoice):
    control.set_faults(rate_limit_per_second=SLOW, rate_limit_burst=1, script=[{"fault": "error", "status": 503}] * 2)
    assert api.get(PATH).status_code == 503
    assert api.get(PATH).status_code == 429
    assert len(control.faults()["script"]) == 1


def test_the_random_429_share_stays_beside_the_budget(api, control, invoice):
    control.set_faults(rate_limit_per_second=SLOW, rate_limit_burst=3, rate_limit_rate=1.0, retry_after=7)
    answers = [api.get(PATH) for _ in range(4)]
    assert [(a.status_code, a.headers.get("Retry-After")) for a in answers[:3]] == [(429, "7")] * 3
    assert [entry["fault"] for entry in control.requests()] == ["rate_limit"] * 3 + ["budget_exceeded"]


def test_clearing_faults_ends_the_budget(api, control, invoice):
    control.set_faults(rate_limit_per_second=SLOW, rate_limit_burst=1)
    assert [api.get(PATH).status_code for _ in range(2)] == [200, 429]
    control.clear_faults()
    assert control.faults()["rate_limit_per_second"] is None
    assert [api.get(PATH).status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rate_limit_per_second": 0}, "rate_limit_per_second must be a number of requests per second above 0"),
        ({"rate_limit_per_second": -1}, "rate_limit_per_second must be a number"),
        ({"rate_limit_per_second": "5"}, "rate_limit_per_second must be a number"),
        ({"rate_limit_per_second": True}, "rate_limit_per_second must be a number"),
        ({"rate_limit_per_second": 5, "rate_limit_burst": 0}, "rate_limit_burst must be a whole number"),
        ({"rate_limit_per_second": 5, "rate_limit_burst": 2.5}, "rate_limit_burst must be a whole number"),
        ({"rate_limit_burst": 3}, "rate_limit_burst needs rate_limit_per_second"),
    ],
)
def test_invalid_budget_settings_are_refused(control, settings, message):
    with pytest.raises(SandboxControlError, match=message) as refused:
        control.set_faults(**settings)
    assert refused.value.status_code == 422
    assert control.faults()["rate_limit_per_second"] is None


def test_the_pytest_fixture_sets_the_budget(clubcollect_sandbox):
    settings = clubcollect_sandbox.set_faults(rate_limit_per_second=2.5, rate_limit_burst=4)
    assert (settings["rate_limit_per_second"], settings["rate_limit_burst"]) == (2.5, 4)
    assert clubcollect_sandbox.faults()["rate_limit_burst"] == 4


# --- the bucket itself, on a clock the test turns -------------------------------------------------


def test_the_bucket_refills_at_its_rate_up_to_its_size():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [None, None, None]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) is None
    # A long pause fills the bucket, never past its size.
    assert [bucket.take(100.0) for _ in range(4)][-1] == pytest.approx(0.5)


def test_retry_after_is_rounded_up_to_the_millisecond():
    settings = parse_fault_settings({"rate_limit_per_second": 3, "rate_limit_burst": 1})
    assert settings.decide("GET", "/api/v2/x", "key", now=0.0).fault is None
    over = settings.decide("GET", "/api/v2/x", "key", now=0.0).fault
    assert over is not None
    assert over.answer("").headers == {"Retry-After": "0.334"}
