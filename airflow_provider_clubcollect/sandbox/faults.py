"""Fault injection for the sandbox: what goes wrong, on which request, and how often.

Each fault kind is one small class (:class:`Drop`, :class:`Error`, ...), registered under its
name in :data:`FAULTS` by subclassing :class:`Fault`: a new fault is one class (and, for a field
no other fault has, one reader in ``_FIELD_READERS``).  Faults are
plain data parsed from the JSON of ``POST /_sandbox/faults``; :class:`FaultSettings` turns them
into one :class:`FaultDecision` per API request.  Nothing here does I/O or imports the web stack:
the decision is taken under the state's lock, and the app serves a fault's :class:`Answer`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_provider_clubcollect.sandbox.errors import SandboxInputError

#: Random error answers are one of these, as a load balancer or a failing backend would send.
RANDOM_ERROR_STATUSES = (500, 503)
_FIREWALL_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} Forbidden</title></head>\n"
    "<body><h1>Request blocked</h1><p>The web application firewall refused this request.</p>{echo}</body></html>\n"
)


@dataclass(frozen=True)
class Answer:
    """What the sandbox sends instead of the API's own answer."""

    status: int
    body: str
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


#: Every fault kind by its name in the control API's JSON, filled by :class:`Fault` subclasses.
FAULTS: dict[str, type[Fault]] = {}


@dataclass(frozen=True)
class Fault:
    """
    One fault, used once by the first API request it matches when scripted.

    Subclasses set ``name`` (the JSON ``"fault"``) and say what the fault does: ``applies``
    (the request is applied first, its own answer never sent), ``drops`` (the connection is
    closed with no answer), :meth:`pause` and :meth:`answer`.  Their fields are read from the
    fault's JSON by :meth:`from_json`.

    :param method: only requests with this HTTP method match (any when ``None``).
    :param path_regex: only requests whose path matches this regular expression (``re.search``)
        match (any when ``None``).
    """

    name: ClassVar[str]
    applies: ClassVar[bool] = False
    drops: ClassVar[bool] = False
    #: The lowest status a ``status`` field may take.
    min_status: ClassVar[int] = 100

    method: str | None = None
    path_regex: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FAULTS[cls.name] = cls

    def matches(self, method: str, path: str) -> bool:
        """
        Whether this fault applies to a request.

        :param method: the request's HTTP method.
        :param path: the request's path.
        """
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_regex is None or re.search(self.path_regex, path) is not None

    def pause(self) -> float:
        """Seconds to wait before the request is handled."""
        return 0.0

    def answer(self, echo: str) -> Answer | None:
        """
        The answer sent instead of the API's, or ``None`` for the API's own (or none, for a drop).

        :param echo: what a header-echoing gateway quotes (empty when it does not).
        """
        return None

    def to_json(self) -> dict[str, Any]:
        """The fault as JSON, in the shape :meth:`from_json` reads."""
        data = dataclasses.asdict(self)
        for key in ("method", "path_regex"):
            if data[key] is None:
                del data[key]
        return {"fault": self.name, **data}

    @classmethod
    def from_json(cls, data: object) -> Fault:
        """
        Read one fault, such as ``{"fault": "error", "status": 503, "method": "POST"}``.

        :param data: the decoded JSON object.
        :raises SandboxInputError: naming the bad key and what is allowed.
        """
        if not isinstance(data, Mapping):
            raise SandboxInputError(f"a scripted fault must be an object, got {data!r}")
        name = data.get("fault")
        kind = FAULTS.get(name) if isinstance(name, str) else None
        if kind is None:
            raise SandboxInputError(f"unknown fault {name!r}; allowed: {', '.join(FAULTS)}")
        values: dict[str, Any] = {
            item.name: _FIELD_READERS[item.name](kind, data, item.default) for item in dataclasses.fields(kind)
        }
        return kind(**values)


@dataclass(frozen=True)
class Drop(Fault):
    """The connection is closed before any byte of an answer is sent; the request is not applied."""

    name = "drop"
    drops = True


@dataclass(frozen=True)
class ApplyThenDrop(Drop):
    """A request is applied, then the connection is closed before any byte of the answer is sent."""

    name = "apply_then_drop"
    applies = True


@dataclass(frozen=True)
class Error(Fault):
    """A JSON error answer with ``status`` (400 to 599), as a failing backend sends."""

    name = "error"
    min_status = 400
    status: int = 500

    def answer(self, echo: str) -> Answer:
        # An echoing gateway puts what it saw into the error itself, where a client quotes it.
        code = ("service_unavailable" if self.status == 503 else "internal_server_error") + echo
        return Answer(self.status, json.dumps({"error": code}))


@dataclass(frozen=True)
class ApplyThenError(Error):
    """A request is applied, then answered with an error, as a backend that fails after its database committed."""

    name = "apply_then_error"
    applies = True


@dataclass(frozen=True)
class RateLimit(Fault):
    """429, with ``retry_after`` as ``Retry-After`` (seconds, or an HTTP date sent as it is) unless ``None``."""

    name = "rate_limit"
    detail: ClassVar[str] = "Too many requests; slow down."
    retry_after: float | str | None = None

    def answer(self, echo: str) -> Answer:
        headers = {} if self.retry_after is None else {"Retry-After": _retry_after_header(self.retry_after)}
        return Answer(
            429,
            json.dumps({"error": "rate_limited", "detail": f"{self.detail}{echo}"}),
            headers=headers,
        )


@dataclass(frozen=True)
class BudgetExceeded(RateLimit):
    """
    429 from the per-key budget (``rate_limit_per_second``), ``retry_after`` saying when a token
    is available again.  The budget answers with it; it is not drawn at random.
    """

    name = "budget_exceeded"
    detail = "Too many requests for this API key; retry after the time Retry-After gives."


@dataclass
class TokenBucket:
    """
    One API key's budget: ``burst`` tokens, refilled at ``rate`` per second; a request takes one.

    :param rate: tokens added per second.
    :param burst: the most tokens it holds (a full bucket at first).
    :param now: when it was made, on the clock later calls pass.
    """

    rate: float
    burst: int
    now: float
    tokens: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> float | None:
        """
        Take a token at ``now``: ``None`` when one was there, else the seconds until one will be.

        :param now: the time, on the clock the bucket was made with.
        """
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.now) * self.rate)
        self.now = max(self.now, now)
        # A hair of slack: a client that waited exactly Retry-After must not be refused by rounding.
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return None
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class Html(Fault):
    """An HTML page with ``status``, as a web application firewall sends."""

    name = "html"
    status: int = 403

    def answer(self, echo: str) -> Answer:
        page = _FIREWALL_PAGE.format(status=self.status, echo=f"<p>{echo}</p>")
        return Answer(self.status, page, "text/html")


@dataclass(frozen=True)
class NotJson(Fault):
    """A body that is not JSON, with ``status``."""

    name = "not_json"
    status: int = 200

    def answer(self, echo: str) -> Answer:
        return Answer(self.status, f"Service temporarily degraded; try again.{echo}", "text/plain")


@dataclass(frozen=True)
class Delay(Fault):
    """A pause of ``seconds``, then the request is handled normally."""

    name = "delay"
    seconds: float = 0.0

    def pause(self) -> float:
        return self.seconds


@dataclass(frozen=True)
class FaultDecision:
    """
    What to do with one API request.

    :param fault: the fault, or ``None`` to answer normally.
    :param delay_seconds: pause before handling the request (latency plus any scripted delay).
    :param echo_authorization: whether a fault answer quotes the request's ``Authorization`` header.
    """

    fault: Fault | None
    delay_seconds: float = 0.0
    echo_authorization: bool = False


@dataclass
class FaultSettings:
    """
    Everything the sandbox does wrong on purpose.

    Shares are probabilities from 0 to 1 drawn from a seeded :class:`random.Random`, so a run
    with the same ``random_seed`` and the same requests fails the same way.  The script is used
    first, in order; the shares apply once it is empty.

    :param latency_ms: pause before every API request, in milliseconds.
    :param error_rate: share of API requests answered 500 or 503.
    :param rate_limit_rate: share of API requests answered 429.
    :param retry_after: ``Retry-After`` seconds on those 429 answers; ``None`` sends no header.
    :param drop_rate: share of API requests whose connection is closed with no answer, not applied.
    :param apply_then_drop_rate: share of POST requests applied, then dropped with no answer.
    :param random_seed: seed of the random draws.
    :param script: faults used once each, in order, by the first request each matches.
    :param retry_after_choices: when not empty, each random 429 takes one of these as its
        ``Retry-After`` (seconds, an HTTP date sent as it is, or ``None`` for no header) instead
        of ``retry_after``.
    :param post_after_apply_share: share of the random drops and 5xx answers to POST requests that
        strike after the request was applied (``apply_then_drop``, ``apply_then_error``).
    :param echo_authorization: fault answers quote the request's ``Authorization`` header, as a
        gateway that echoes request headers does: for tests that the key never leaks.
    :param rate_limit_per_second: a budget per API key, as a real API enforces one: a token bucket
        refilled at this many requests per second; a request beyond it is answered 429
        ``rate_limited`` with a ``Retry-After`` (decimal seconds, rounded up to the millisecond)
        saying when a token is available.  ``None``: no budget.  Counted per key presented (valid
        or not), before scripted and random faults, which a refused request does not use up.
    :param rate_limit_burst: the bucket's size: requests served at once from a full bucket;
        ``max(1, round(rate_limit_per_second))`` when ``None``.
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float | None = None
    drop_rate: float = 0.0
    apply_then_drop_rate: float = 0.0
    random_seed: int = 0
    script: list[Fault] = field(default_factory=list)
    retry_after_choices: list[float | str | None] = field(default_factory=list)
    post_after_apply_share: float = 0.0
    echo_authorization: bool = False
    rate_limit_per_second: float | None = None
    rate_limit_burst: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)
    _buckets: dict[str, TokenBucket] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.random_seed)
        if self.rate_limit_per_second is not None and self.rate_limit_burst is None:
            self.rate_limit_burst = default_burst(self.rate_limit_per_second)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON, in the shape :func:`parse_fault_settings` reads."""
        data = {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.init}
        return {
            **data,
            "script": [fault.to_json() for fault in self.script],
            "retry_after_choices": list(self.retry_after_choices),
        }

    def decide(self, method: str, path: str, key_id: str = "", now: float | None = None) -> FaultDecision:
        """
        Choose the fault for one API request: the key's budget first, then a scripted fault or a random draw.

        Not thread-safe on its own: the caller holds the state's lock.

        :param method: the request's HTTP method.
        :param path: the request's path.
        :param key_id: names the API key the request presented (a digest, never the key), for its budget.
        :param now: the time on :func:`time.monotonic`'s clock (the current one when ``None``).
        """
        latency = self.latency_ms / 1000.0
        wait = self._spend(key_id, time.monotonic() if now is None else now)
        if wait is not None:
            # Rounded up, so that a client waiting exactly Retry-After finds a token.
            over = BudgetExceeded(retry_after=math.ceil(wait * 1000.0) / 1000.0)
            return FaultDecision(over, delay_seconds=latency, echo_authorization=self.echo_authorization)
        fault = next((scripted for scripted in self.script if scripted.matches(method, path)), None)
        if fault is not None:
            self.script.remove(fault)
        else:
            fault = self._draw(method.upper() == "POST")
        pause = latency + (fault.pause() if fault is not None else 0.0)
        return FaultDecision(fault, delay_seconds=pause, echo_authorization=self.echo_authorization)

    def _spend(self, key_id: str, now: float) -> float | None:
        """Take a token from the key's bucket: ``None`` when the budget allows the request, else seconds to wait."""
        if self.rate_limit_per_second is None:
            return None
        bucket = self._buckets.get(key_id)
        if bucket is None:
            burst = self.rate_limit_burst or default_burst(self.rate_limit_per_second)
            bucket = self._buckets[key_id] = TokenBucket(self.rate_limit_per_second, burst, now)
        return bucket.take(now)

    def _draw(self, is_post: bool) -> Fault | None:
        # One draw per request against cumulative shares, so the shares are exact
        # proportions of the same stream and adding one share does not reshuffle the others.
        draw = self._random.random()
        bands: list[tuple[float, type[Fault]]] = [
            (self.drop_rate, Drop),
            (self.apply_then_drop_rate if is_post else 0.0, ApplyThenDrop),
            (self.rate_limit_rate, RateLimit),
            (self.error_rate, Error),
        ]
        threshold = 0.0
        for share, kind in bands:
            threshold += share
            if draw >= threshold:
                continue
            if kind is RateLimit:
                retry_after: float | str | None = self.retry_after
                if self.retry_after_choices:
                    retry_after = self._random.choice(self.retry_after_choices)
                return RateLimit(retry_after=retry_after)
            fault = Error(status=self._random.choice(RANDOM_ERROR_STATUSES)) if kind is Error else kind()
            if is_post and isinstance(fault, (Drop, Error)) and self._random.random() < self.post_after_apply_share:
                return ApplyThenError(status=fault.status) if isinstance(fault, Error) else ApplyThenDrop()
            return fault
        return None


def parse_fault_settings(data: Mapping[str, Any]) -> FaultSettings:
    """
    Read fault settings from the JSON of ``POST /_sandbox/faults``; absent keys take defaults.

    :param data: the decoded JSON object.
    :raises SandboxInputError: naming the bad key and what is allowed.
    """
    known = {item.name for item in dataclasses.fields(FaultSettings) if item.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SandboxInputError(f"unknown fault settings {unknown}; allowed: {sorted(known)}")
    shares = {
        name: _number(data, name, 0.0, minimum=0.0, maximum=1.0)
        for name in ("error_rate", "rate_limit_rate", "drop_rate", "apply_then_drop_rate")
    }
    if sum(shares.values()) > 1.0 + 1e-9:
        raise SandboxInputError(f"the fault shares add up to more than 1: {shares}")
    retry_after = data.get("retry_after")
    script = data.get("script", [])
    if not isinstance(script, list):
        raise SandboxInputError(f"script must be a list of faults, got {script!r}")
    seed = data.get("random_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SandboxInputError(f"random_seed must be an integer, got {seed!r}")
    choices = data.get("retry_after_choices", [])
    if not isinstance(choices, list):
        raise SandboxInputError(f"retry_after_choices must be a list, got {choices!r}")
    echo = data.get("echo_authorization", False)
    if not isinstance(echo, bool):
        raise SandboxInputError(f"echo_authorization must be true or false, got {echo!r}")
    rate, burst = _budget(data)
    return FaultSettings(
        latency_ms=_number(data, "latency_ms", 0.0, minimum=0.0),
        retry_after=None if retry_after is None else _number(data, "retry_after", 0.0, minimum=0.0),
        random_seed=seed,
        script=[Fault.from_json(item) for item in script],
        retry_after_choices=[_retry_after(Fault, {"retry_after": choice}, None) for choice in choices],
        post_after_apply_share=_number(data, "post_after_apply_share", 0.0, minimum=0.0, maximum=1.0),
        echo_authorization=echo,
        rate_limit_per_second=rate,
        rate_limit_burst=burst,
        **shares,
    )


def default_burst(rate: float) -> int:
    """The bucket size when ``rate_limit_burst`` is not given: about one second's worth, at least 1."""
    return max(1, round(rate))


def _budget(data: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """``rate_limit_per_second`` and ``rate_limit_burst``, checked."""
    rate = data.get("rate_limit_per_second")
    burst = data.get("rate_limit_burst")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
            raise SandboxInputError(
                f"rate_limit_per_second must be a number of requests per second above 0 (or null for no "
                f"budget), got {rate!r}"
            )
        rate = float(rate)
    if burst is not None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise SandboxInputError(f"rate_limit_burst must be a whole number of requests, at least 1, got {burst!r}")
        if rate is None:
            raise SandboxInputError("rate_limit_burst needs rate_limit_per_second: the rate that refills the bucket")
    return rate, burst


# --- reading a fault's fields: one reader per field name ----------------------------------------


def _status(kind: type[Fault], data: Mapping[str, Any], default: Any) -> int:
    status = data.get("status", default)
    if isinstance(status, bool) or not isinstance(status, int) or not kind.min_status <= status <= 599:
        raise SandboxInputError(
            f"status of a {kind.name!r} fault must be an HTTP status from {kind.min_status} to 599, got {status!r}"
        )
    return status


def _retry_after(kind: type[Fault], data: Mapping[str, Any], default: Any) -> float | str | None:
    """A ``Retry-After``: ``None``, seconds, or a string (an HTTP date, sent as it is)."""
    value = data.get("retry_after", default)
    if value is None or isinstance(value, str):
        return value
    return _number(data, "retry_after", 0.0, minimum=0.0)


def _seconds(kind: type[Fault], data: Mapping[str, Any], default: Any) -> float:
    return _number(data, "seconds", default, minimum=0.0)


def _method(kind: type[Fault], data: Mapping[str, Any], default: Any) -> str | None:
    method = data.get("method")
    if method is not None and not isinstance(method, str):
        raise SandboxInputError(f"method must be a string, got {method!r}")
    return method.upper() if method is not None else None


def _path_regex(kind: type[Fault], data: Mapping[str, Any], default: Any) -> str | None:
    path_regex = data.get("path_regex")
    if path_regex is None:
        return None
    if not isinstance(path_regex, str):
        raise SandboxInputError(f"path_regex must be a string, got {path_regex!r}")
    try:
        re.compile(path_regex)
    except re.error as error:
        raise SandboxInputError(f"path_regex {path_regex!r} is not a regular expression: {error}") from error
    return path_regex


_FIELD_READERS = {
    "status": _status,
    "retry_after": _retry_after,
    "seconds": _seconds,
    "method": _method,
    "path_regex": _path_regex,
}


def _number(
    data: Mapping[str, Any], name: str, default: float, *, minimum: float, maximum: float | None = None
) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SandboxInputError(f"{name} must be a number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise SandboxInputError(f"{name} must be at least {minimum}{upper}, got {value!r}")
    return float(value)


def _retry_after_header(value: float | str) -> str:
    # Retry-After is whole seconds on the wire; fractions stay possible for fast tests; a string
    # (an HTTP date) is sent as it is.
    if isinstance(value, str):
        return value
    # Fixed-point, not "%g": six significant digits would round a long wait down.
    return str(int(value)) if value == int(value) else f"{value:.6f}".rstrip("0").rstrip(".")
