"""Fault injection for the sandbox: what goes wrong, on which request, and how often.

Faults are plain data (:class:`FaultSettings`, :class:`ScriptedFault`) parsed from the JSON of
``POST /_sandbox/faults`` and turned into one :class:`FaultDecision` per API request.  Nothing
here does I/O or imports the web stack: the decision is taken under the state's lock and carried
out by the app.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_clubcollect.sandbox.errors import SandboxInputError

#: The connection is closed before any byte of an answer is sent; the request is not applied.
FAULT_DROP: Final = "drop"
#: A POST is applied, then the connection is closed before any byte of the answer is sent.
FAULT_APPLY_THEN_DROP: Final = "apply_then_drop"
#: A JSON error answer with a 4xx/5xx status (500 unless told).
FAULT_ERROR: Final = "error"
#: A POST is applied, then answered with an error status (500 unless told), as a backend that
#: fails after its database committed does.
FAULT_APPLY_THEN_ERROR: Final = "apply_then_error"
#: 429, with a ``Retry-After`` header when one is configured.
FAULT_RATE_LIMIT: Final = "rate_limit"
#: An HTML page with a status (403 unless told), as a web application firewall sends.
FAULT_HTML: Final = "html"
#: A body that is not JSON, with a status (200 unless told).
FAULT_NOT_JSON: Final = "not_json"
#: A pause before the request is handled normally.
FAULT_DELAY: Final = "delay"
FAULT_KINDS: Final = (
    FAULT_DROP,
    FAULT_APPLY_THEN_DROP,
    FAULT_ERROR,
    FAULT_APPLY_THEN_ERROR,
    FAULT_RATE_LIMIT,
    FAULT_HTML,
    FAULT_NOT_JSON,
    FAULT_DELAY,
)
_DEFAULT_STATUS: Final = {
    FAULT_ERROR: 500,
    FAULT_APPLY_THEN_ERROR: 500,
    FAULT_HTML: 403,
    FAULT_NOT_JSON: 200,
    FAULT_RATE_LIMIT: 429,
}
#: Kinds whose answer carries a status of the script's choosing.
_STATUS_KINDS: Final = (FAULT_ERROR, FAULT_APPLY_THEN_ERROR, FAULT_HTML, FAULT_NOT_JSON)
#: Random error answers are one of these, as a load balancer or a failing backend would send.
RANDOM_ERROR_STATUSES: Final = (500, 503)


@dataclass(frozen=True)
class ScriptedFault:
    """
    One fault in the script, used once by the first API request it matches.

    :param fault: one of :data:`FAULT_KINDS`.
    :param status: the HTTP status for ``error``, ``apply_then_error``, ``html`` and ``not_json``.
    :param retry_after: ``Retry-After`` for ``rate_limit``: seconds, or an HTTP date sent as it is;
        ``None`` sends no header.
    :param seconds: the pause for ``delay``.
    :param method: only requests with this HTTP method match (any when ``None``).
    :param path_regex: only requests whose path matches this regular expression (``re.search``)
        match (any when ``None``).
    """

    fault: str
    status: int | None = None
    retry_after: float | str | None = None
    seconds: float = 0.0
    method: str | None = None
    path_regex: str | None = None

    def matches(self, method: str, path: str) -> bool:
        """
        Whether this fault applies to a request.

        :param method: the request's HTTP method.
        :param path: the request's path.
        """
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_regex is None or re.search(self.path_regex, path) is not None

    def to_json(self) -> dict[str, Any]:
        """The fault as JSON, in the shape :func:`parse_scripted_fault` reads."""
        data: dict[str, Any] = {"fault": self.fault}
        if self.fault in _STATUS_KINDS:
            data["status"] = self.status
        if self.fault == FAULT_RATE_LIMIT:
            data["retry_after"] = self.retry_after
        if self.fault == FAULT_DELAY:
            data["seconds"] = self.seconds
        if self.method is not None:
            data["method"] = self.method
        if self.path_regex is not None:
            data["path_regex"] = self.path_regex
        return data


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
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float | None = None
    drop_rate: float = 0.0
    apply_then_drop_rate: float = 0.0
    random_seed: int = 0
    script: list[ScriptedFault] = field(default_factory=list)
    retry_after_choices: list[float | str | None] = field(default_factory=list)
    post_after_apply_share: float = 0.0
    echo_authorization: bool = False
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.random_seed)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON, in the shape :func:`parse_fault_settings` reads."""
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after": self.retry_after,
            "drop_rate": self.drop_rate,
            "apply_then_drop_rate": self.apply_then_drop_rate,
            "random_seed": self.random_seed,
            "script": [fault.to_json() for fault in self.script],
            "retry_after_choices": list(self.retry_after_choices),
            "post_after_apply_share": self.post_after_apply_share,
            "echo_authorization": self.echo_authorization,
        }

    def decide(self, method: str, path: str) -> FaultDecision:
        """
        Choose the fault for one API request, consuming a scripted fault or a random draw.

        Not thread-safe on its own: the caller holds the state's lock.

        :param method: the request's HTTP method.
        :param path: the request's path.
        """
        latency = self.latency_ms / 1000.0
        for index, scripted in enumerate(self.script):
            if scripted.matches(method, path):
                del self.script[index]
                return FaultDecision(
                    fault=scripted.fault,
                    status=scripted.status,
                    retry_after=scripted.retry_after,
                    delay_seconds=latency + (scripted.seconds if scripted.fault == FAULT_DELAY else 0.0),
                    echo_authorization=self.echo_authorization,
                )
        # One draw per request against cumulative shares, so the shares are exact
        # proportions of the same stream and adding one share does not reshuffle the others.
        draw = self._random.random()
        is_post = method.upper() == "POST"
        bands: list[tuple[float, str]] = [
            (self.drop_rate, FAULT_DROP),
            (self.apply_then_drop_rate if is_post else 0.0, FAULT_APPLY_THEN_DROP),
            (self.rate_limit_rate, FAULT_RATE_LIMIT),
            (self.error_rate, FAULT_ERROR),
        ]
        threshold = 0.0
        for share, kind in bands:
            threshold += share
            if draw < threshold:
                status = self._random.choice(RANDOM_ERROR_STATUSES) if kind == FAULT_ERROR else None
                retry_after: float | str | None = self.retry_after
                if kind == FAULT_RATE_LIMIT and self.retry_after_choices:
                    retry_after = self._random.choice(self.retry_after_choices)
                if (
                    is_post
                    and kind in (FAULT_DROP, FAULT_ERROR)
                    and self._random.random() < self.post_after_apply_share
                ):
                    kind = FAULT_APPLY_THEN_DROP if kind == FAULT_DROP else FAULT_APPLY_THEN_ERROR
                return FaultDecision(
                    fault=kind,
                    status=status if status is not None else _DEFAULT_STATUS.get(kind),
                    retry_after=retry_after,
                    delay_seconds=latency,
                    echo_authorization=self.echo_authorization,
                )
        return FaultDecision(fault=None, delay_seconds=latency, echo_authorization=self.echo_authorization)


@dataclass(frozen=True)
class FaultDecision:
    """
    What to do with one API request.

    :param fault: one of :data:`FAULT_KINDS`, or ``None`` to answer normally.
    :param status: the status of an error, rate-limit, HTML or not-JSON answer.
    :param retry_after: ``Retry-After`` of a rate-limit answer (seconds or an HTTP date), ``None`` for no header.
    :param delay_seconds: pause before handling the request (latency plus any scripted delay).
    :param echo_authorization: whether a fault answer quotes the request's ``Authorization`` header.
    """

    fault: str | None
    status: int | None = None
    retry_after: float | str | None = None
    delay_seconds: float = 0.0
    echo_authorization: bool = False


def parse_fault_settings(data: Mapping[str, Any]) -> FaultSettings:
    """
    Read fault settings from the JSON of ``POST /_sandbox/faults``; absent keys take defaults.

    :param data: the decoded JSON object.
    :raises SandboxInputError: naming the bad key and what is allowed.
    """
    known = {
        "latency_ms",
        "error_rate",
        "rate_limit_rate",
        "retry_after",
        "drop_rate",
        "apply_then_drop_rate",
        "random_seed",
        "script",
        "retry_after_choices",
        "post_after_apply_share",
        "echo_authorization",
    }
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
    return FaultSettings(
        latency_ms=_number(data, "latency_ms", 0.0, minimum=0.0),
        retry_after=None if retry_after is None else _number(data, "retry_after", 0.0, minimum=0.0),
        random_seed=seed,
        script=[parse_scripted_fault(item) for item in script],
        retry_after_choices=[_retry_after({"retry_after": choice}) for choice in choices],
        post_after_apply_share=_number(data, "post_after_apply_share", 0.0, minimum=0.0, maximum=1.0),
        echo_authorization=echo,
        **shares,
    )


def parse_scripted_fault(data: object) -> ScriptedFault:
    """
    Read one scripted fault, such as ``{"fault": "error", "status": 503, "method": "POST"}``.

    :param data: the decoded JSON object.
    :raises SandboxInputError: naming the bad key and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise SandboxInputError(f"a scripted fault must be an object, got {data!r}")
    kind = data.get("fault")
    if kind not in FAULT_KINDS:
        raise SandboxInputError(f"unknown fault {kind!r}; allowed: {', '.join(FAULT_KINDS)}")
    status: int | None = None
    if kind in _STATUS_KINDS:
        status = data.get("status", _DEFAULT_STATUS[kind])
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise SandboxInputError(f"status of a {kind!r} fault must be an HTTP status, got {status!r}")
        if kind in (FAULT_ERROR, FAULT_APPLY_THEN_ERROR) and status < 400:
            raise SandboxInputError(f"status of an 'error' fault must be 400 to 599, got {status}")
    elif kind == FAULT_RATE_LIMIT:
        status = _DEFAULT_STATUS[kind]
    method = data.get("method")
    if method is not None and not isinstance(method, str):
        raise SandboxInputError(f"method must be a string, got {method!r}")
    path_regex = data.get("path_regex")
    if path_regex is not None:
        if not isinstance(path_regex, str):
            raise SandboxInputError(f"path_regex must be a string, got {path_regex!r}")
        try:
            re.compile(path_regex)
        except re.error as error:
            raise SandboxInputError(f"path_regex {path_regex!r} is not a regular expression: {error}") from error
    return ScriptedFault(
        fault=str(kind),
        status=status,
        retry_after=_retry_after(data),
        seconds=_number(data, "seconds", 0.0, minimum=0.0) if kind == FAULT_DELAY else 0.0,
        method=method.upper() if method is not None else None,
        path_regex=path_regex,
    )


def _retry_after(data: Mapping[str, Any]) -> float | str | None:
    """A ``Retry-After``: ``None``, seconds, or a string (an HTTP date, sent as it is)."""
    value = data.get("retry_after")
    if value is None or isinstance(value, str):
        return value
    return _number(data, "retry_after", 0.0, minimum=0.0)


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
