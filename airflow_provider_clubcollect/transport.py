"""One request layer for the sync hook and the async trigger.

:func:`call_sync` and :func:`call_async` send a request until it has an answer, retrying up to the
connection's ``max_retries`` with the waits of a :class:`~airflow_provider_clubcollect.retry.Backoff`,
then parse it or raise its typed error.  Both ask one function, :func:`_next_wait`, what to do after
each attempt, so retries, waits, error mapping and parsing exist once and only the socket work (and
``time.sleep`` against ``asyncio.sleep``) differs.  The transports send one attempt each:
:class:`SyncTransport` over ``requests``, :class:`AsyncTransport` over ``httpx``, both imported
when a transport is built, not at module level, to keep DAG parsing fast.  With Airflow's metrics
or traces on, each attempt is recorded by the transport's :class:`~airflow_provider_clubcollect.observability.Watch`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.budget import budget_for
from airflow_provider_clubcollect.exceptions import ClubCollectAmbiguousError, ClubCollectServerError
from airflow_provider_clubcollect.wire import RawResponse, error_for, parse_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    import httpx
    import requests

    from airflow_provider_clubcollect.connection import ClientSettings
    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.wire import ApiRequest

log = logging.getLogger(__name__)


class TransportFailure(NamedTuple):
    """
    No HTTP answer arrived.

    :param reason: what happened (connection refused, timeout, connection dropped), for logs.
    :param maybe_applied: whether the request may have reached the server and been applied; a
        refused connection or a connect timeout never did, a read timeout or a dropped answer may have.
    :param timed_out: whether no answer came within the read timeout: the server may still be at work.
    """

    reason: str
    maybe_applied: bool
    timed_out: bool = False


#: What one attempt produced: an answer, or none.
Outcome = RawResponse | TransportFailure


class Verdict(enum.Enum):
    """What to do after an attempt."""

    #: The outcome is the answer: success, or an error that a retry cannot fix.
    FINAL = "final"
    #: Try again after a wait.
    RETRY = "retry"
    #: A request that is not idempotent may have been applied: retrying blindly could apply it twice.
    AMBIGUOUS = "ambiguous"


class RequestRetries(NamedTuple):
    """How one request is retried: the back-off and the count (the connection's ``max_retries``)."""

    backoff: Backoff
    max_retries: int


def verdict(request: ApiRequest, outcome: Outcome) -> Verdict:
    """
    Judge one attempt's outcome.

    Retried: connection errors and timeouts, 429 (after ``Retry-After`` when given) and 5xx.
    Requests that are not idempotent (creating a ticket) are retried only when the outcome proves
    the server did not apply them (429, a refused connection); otherwise the verdict is
    :attr:`Verdict.AMBIGUOUS` and the caller decides.

    :param request: the request that was sent.
    :param outcome: its answer, or the failure to get one.
    """
    if isinstance(outcome, TransportFailure):
        if outcome.maybe_applied and not request.idempotent:
            return Verdict.AMBIGUOUS
        return Verdict.RETRY
    if outcome.status == 429:
        # A rate-limited request was refused, not applied: safe to retry for any method.
        return Verdict.RETRY
    if outcome.status >= 500:
        return Verdict.RETRY if request.idempotent else Verdict.AMBIGUOUS
    return Verdict.FINAL


def call_sync(request: ApiRequest, retries: RequestRetries, send: Callable[[ApiRequest], Outcome]) -> Any:
    """
    One API call with blocking I/O: send, retry as :func:`verdict` says, parse.

    :param request: what to send.
    :param retries: how many retries, and how long to wait before each.
    :param send: sends one attempt and returns its outcome.
    :return: the parsed JSON answer, or ``None`` for a 204.
    :raises ClubCollectError: the typed error of the final outcome.
    :raises ClubCollectAmbiguousError: when a non-idempotent request may have been applied.
    """
    attempt = 1
    try:
        while True:
            outcome = send(request)
            wait = _next_wait(request, retries, outcome, attempt)
            if wait is None:
                return _parse(request, outcome, attempt)
            time.sleep(wait)
            attempt = _retrying(outcome, attempt, wait)
    finally:
        if attempt > 1:
            observability.RETRY.set(None)


async def call_async(
    request: ApiRequest, retries: RequestRetries, send: Callable[[ApiRequest], Awaitable[Outcome]]
) -> Any:
    """
    :func:`call_sync` on an event loop, never blocking it.

    :param request: what to send.
    :param retries: how many retries, and how long to wait before each.
    :param send: sends one attempt and returns its outcome.
    """
    attempt = 1
    try:
        while True:
            outcome = await send(request)
            wait = _next_wait(request, retries, outcome, attempt)
            if wait is None:
                return _parse(request, outcome, attempt)
            await asyncio.sleep(wait)
            attempt = _retrying(outcome, attempt, wait)
    finally:
        if attempt > 1:
            observability.RETRY.set(None)


def _retrying(outcome: Outcome, attempt: int, wait: float) -> int:
    """The next attempt's number; the transport's metrics and span learn why it is sent (observability.RETRY)."""
    observability.RETRY.set(observability.Retry(attempt + 1, wait, observability.outcome_name(outcome)))
    return attempt + 1


def _parse(request: ApiRequest, outcome: Outcome, attempts: int) -> Any:
    answer = parse_response(request, _answer(outcome), attempts=attempts)
    observability.tickets_read(request, answer)
    return answer


def _next_wait(request: ApiRequest, retries: RequestRetries, outcome: Outcome, attempt: int) -> float | None:
    """Seconds to wait before sending again; ``None`` when the outcome is the answer.  Raises when giving up."""
    judged = verdict(request, outcome)
    if judged is Verdict.FINAL:
        return None
    if judged is Verdict.AMBIGUOUS:
        raise ClubCollectAmbiguousError(
            f"Could not {request.description}: {_describe(outcome)}; it may or may not have been "
            "applied, so it was not sent again blindly.",
            status_code=outcome.status if isinstance(outcome, RawResponse) else None,
            timed_out=isinstance(outcome, TransportFailure) and outcome.timed_out,
        )
    if attempt > retries.max_retries:
        if isinstance(outcome, RawResponse):
            raise error_for(request, outcome, attempts=attempt)
        raise ClubCollectServerError(
            f"Could not {request.description}: {outcome.reason}, after {attempt} attempts. "
            "ClubCollect could not be reached; check the base URL and the network, or try again later."
        )
    wait = retries.backoff.wait_seconds(
        attempt, outcome.headers.get("retry-after") if isinstance(outcome, RawResponse) else None
    )
    log.warning(
        "ClubCollect: could not %s (%s, attempt %d of %d); retrying in %.1f s.",
        request.description,
        _describe(outcome),
        attempt,
        retries.max_retries + 1,
        wait,
    )
    return wait


def _answer(outcome: Outcome) -> RawResponse:
    # A final outcome is always an answer: every transport failure is retried or ambiguous.
    assert isinstance(outcome, RawResponse)
    return outcome


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, TransportFailure):
        return outcome.reason
    return f"HTTP {outcome.status}"


def _connect_timeout(settings: ClientSettings) -> TransportFailure:
    # No connection was made: the request cannot have been applied.
    return TransportFailure(f"connect timeout after {settings.connect_timeout:g} s", False)


def _read_timeout(settings: ClientSettings) -> TransportFailure:
    # Sent, but no answer in time: the server may have applied it, or may still be applying it.
    return TransportFailure(f"no answer within {settings.timeout:g} s", True, timed_out=True)


def _raw(settings: ClientSettings, status: int, headers: Mapping[str, str], body: bytes) -> RawResponse:
    # The key is scrubbed from the body before anything reads it (see ClientSettings.scrub_body).
    # Headers stay in the library's case-insensitive mapping: only Retry-After is ever read.
    return RawResponse(status, headers, settings.scrub_body(body))


class SyncTransport:
    """
    Sends requests with one pooled, keep-alive ``requests.Session``.

    :param settings: base URL, key, timeouts.
    :param pool_size: connections kept per host; at least the number of threads sharing it.
    """

    def __init__(self, settings: ClientSettings, *, pool_size: int = 10) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.settings = settings
        # Every attempt draws from the key's request budget (max_requests_per_second), retries included.
        self.budget = budget_for(settings)
        #: Metrics and spans of every attempt; ``None`` with both off (Airflow's default).
        self.watch = observability.watch_for(settings.conn_id)
        self.session: requests.Session = requests.Session()
        self.session.headers.update(settings.headers())
        # Retries are ours (call_sync); urllib3's own would retry blindly and hide attempts.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Ignore proxy/netrc settings from the environment that could rewrite Authorization.
        self.session.trust_env = False

    def send(self, request: ApiRequest) -> Outcome:
        """
        Send one request once.

        :param request: what to send.
        :return: the answer, or a :class:`TransportFailure` saying whether it may have been applied.
        """
        self.budget.acquire()
        return self._send(request) if self.watch is None else self.watch.sent(request, self._send)

    def _send(self, request: ApiRequest) -> Outcome:
        import requests

        try:
            response = self.session.request(
                request.method,
                self.settings.url(request.path),
                # None rather than an empty list: requests merges even empty params, at a cost per call.
                params=request.params or None,
                json=request.body,
                timeout=(self.settings.connect_timeout, self.settings.timeout),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            return _connect_timeout(self.settings)
        except requests.exceptions.ReadTimeout:
            return _read_timeout(self.settings)
        except requests.exceptions.ConnectionError as exc:
            return _unreachable(self.settings, *_requests_connection_failure(exc))
        except (requests.exceptions.RequestException, ValueError) as exc:
            # ValueError: http.client refusing a header value that requests (before 2.32.6) let through.
            return TransportFailure(self.settings.scrub(f"{type(exc).__name__}: {exc}"), True)
        return _raw(self.settings, response.status_code, response.headers, response.content)

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()


def _requests_connection_failure(exc: requests.exceptions.ConnectionError) -> tuple[str, bool]:
    from urllib3.exceptions import MaxRetryError, NewConnectionError, SSLError

    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, NewConnectionError):
        # The TCP connection was never made: the request cannot have been applied.
        return f"could not connect ({reason})", False
    if isinstance(reason, SSLError):
        # No TLS session, so nothing was sent.
        return f"could not connect ({reason}{_TLS_HINT})", False
    return f"connection lost ({reason or exc})", True


_TLS_HINT = "; an https:// base URL against a plain http:// server (such as the sandbox) fails so"


def _unreachable(settings: ClientSettings, reason: str, maybe_applied: bool) -> TransportFailure:
    # Names the base URL it tried (never the key), so a wrong scheme, host or port shows in the error.
    return TransportFailure(settings.scrub(f"{reason} at {settings.base_url}"), maybe_applied)


def _from_tls(exc: BaseException | None) -> bool:
    # httpx wraps the ssl module's error in its own, a link or two down the chain.
    while exc is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__ or exc.__context__
    return exc is not None


class AsyncTransport:
    """
    Sends requests with one ``httpx.AsyncClient``, for code running on an event loop.

    :param settings: base URL, key, timeouts.
    """

    def __init__(self, settings: ClientSettings) -> None:
        import httpx

        self.settings = settings
        self.budget = budget_for(settings)
        self.watch = observability.watch_for(settings.conn_id)
        self.client: httpx.AsyncClient = httpx.AsyncClient(
            headers=settings.headers(),
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, request: ApiRequest) -> Outcome:
        """
        Send one request once.

        :param request: what to send.
        :return: the answer, or a :class:`TransportFailure` saying whether it may have been applied.
        """
        await self.budget.aacquire()
        return await (self._send(request) if self.watch is None else self.watch.asent(request, self._send))

    async def _send(self, request: ApiRequest) -> Outcome:
        import httpx

        try:
            response = await self.client.request(
                request.method,
                self.settings.url(request.path),
                params=request.params or None,
                json=request.body,
            )
        except httpx.ConnectTimeout:
            return _connect_timeout(self.settings)
        except httpx.ConnectError as exc:
            hint = _TLS_HINT if _from_tls(exc) else ""
            return _unreachable(self.settings, f"could not connect ({exc}{hint})", False)
        except httpx.TimeoutException:
            return _read_timeout(self.settings)
        except httpx.TransportError as exc:
            return TransportFailure(self.settings.scrub(f"connection lost ({type(exc).__name__}: {exc})"), True)
        return _raw(self.settings, response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self.client.aclose()
