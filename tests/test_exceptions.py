"""The errors keep what they carry wherever Airflow takes them: through pickling (between
processes) and through a trigger event's payload (from the triggerer to the worker)."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_clubcollect import wire
from airflow_provider_clubcollect.exceptions import (
    ClubCollectAmbiguousError,
    ClubCollectError,
    ClubCollectRateLimitError,
)
from airflow_provider_clubcollect.wire import error_for

REQUEST = wire.get_invoice_tickets_request("inv-1")


@pytest.mark.parametrize(
    ("header", "retry_after"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None), ("inf", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_a_429_error_carries_its_retry_after_in_seconds(header: str | None, retry_after: float | None) -> None:
    headers = {} if header is None else {"retry-after": header}

    error = error_for(REQUEST, wire.RawResponse(429, headers, b'{"error": "rate_limited"}'))

    assert isinstance(error, ClubCollectRateLimitError)
    assert (error.status_code, error.error_code, error.retry_after) == (429, "rate_limited", retry_after)
    assert ("It asked to wait" in str(error)) == (retry_after is not None)


def test_errors_keep_their_own_attributes_through_pickling() -> None:
    rate_limited = ClubCollectRateLimitError("slow down", status_code=429, error_code="x", retry_after=30.0)
    ambiguous = ClubCollectAmbiguousError("lost", status_code=None, timed_out=True)

    again = pickle.loads(pickle.dumps(rate_limited))
    assert (type(again), str(again), again.status_code, again.error_code, again.retry_after) == (
        ClubCollectRateLimitError,
        "slow down",
        429,
        "x",
        30.0,
    )
    assert pickle.loads(pickle.dumps(ambiguous)).timed_out is True


def test_an_error_refuses_an_attribute_its_class_does_not_have() -> None:
    # A misspelt retry_after would otherwise be kept beside a retry_after of None, and the wait lost.
    with pytest.raises(TypeError, match="unexpected keyword argument 'retry_afer'"):
        ClubCollectRateLimitError("slow down", retry_afer=5.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'timed_out'"):
        ClubCollectError("lost", timed_out=True)
    assert ClubCollectAmbiguousError("lost", attempts=3, failure="HTTP 503").attempts == 3


@pytest.mark.parametrize("retry_after", [30.0, None])
def test_a_rate_limit_error_keeps_its_retry_after_through_a_trigger_event(retry_after: float | None) -> None:
    error = ClubCollectRateLimitError("slow down", status_code=429, retry_after=retry_after)

    again = ClubCollectError.from_payload(error.to_payload())

    assert isinstance(again, ClubCollectRateLimitError)
    assert again.retry_after == retry_after
    # A payload from before the field existed, or edited, gives no wait rather than a bad one.
    for edited in ("soon", float("inf"), -1.0, True):
        again = ClubCollectError.from_payload({**error.to_payload(), "retry_after": edited})
        assert again.retry_after is None, edited  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
        ("2024-01-02T04:04:05+01:00", "2024-01-02T03:04:05+00:00"),
        (" 2024-01-02 ", "2024-01-02T00:00:00+00:00"),  # naive means UTC
        ("2024-002", "2024-01-02T00:00:00+00:00"),  # an ordinal date, which only pendulum reads
        ("garbage", None),
        ("P1D", None),  # a duration, not a moment
        (None, None),
    ],
)
def test_ticket_dates_read_as_utc_or_none(text: str | None, expected: str | None) -> None:
    parsed = wire.parse_iso_datetime(text)
    assert (parsed and parsed.isoformat()) == expected
