"""One request loop for the sync hook and its async path, over ``requests`` or ``httpx`` (imported when built)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.budget import budget_for
from airflow_provider_clubcollect.exceptions import ClubCollectAmbiguousError, ClubCollectServerError
from airflow_provider_clubcollect.wire import RawResponse, error_for, parse_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx
    import requests

    from airflow_provider_clubcollect.connection import ClientSettings
    from airflow_provider_clubcollect.retry import Backoff
    from airflow_provider_clubcollect.wire import ApiRequest

log = logging.getLogger(__name__)


class TransportFailure(NamedTuple):
    """No HTTP answer arrived; ``maybe_applied``: the request may have reached the server."""

    reason: str
    maybe_applied: bool
    timed_out: bool = False  # no answer within the read timeout: the server may still be at work


Outcome = RawResponse | TransportFailure


def call_sync(request: ApiRequest, backoff: Backoff, max_retries: int, send: Callable[[ApiRequest], Outcome]) -> Any:
    """One API call: send, retry connection errors, timeouts, 429 and 5xx, return the parsed answer (204: ``None``)."""
    attempts = _Attempts(request, backoff, max_retries)
    while (wait := attempts.judge(send(request))) is not None:
        time.sleep(wait)
    return attempts.answer


async def call_async(
    request: ApiRequest, backoff: Backoff, max_retries: int, send: Callable[[ApiRequest], Awaitable[Outcome]]
) -> Any:
    attempts = _Attempts(request, backoff, max_retries)
    while (wait := attempts.judge(await send(request))) is not None:
        await asyncio.sleep(wait)
    return attempts.answer


class _Attempts:
    """What to do after each attempt of one call; the retry the next one is goes to ``observability.RETRY``."""

    def __init__(self, request: ApiRequest, backoff: Backoff, max_retries: int) -> None:
        self.request, self.backoff, self.max_retries, self.attempt, self.answer = request, backoff, max_retries, 1, None
        observability.RETRY.set(None)  # the first attempt is no retry, whatever this thread sent before

    def judge(self, outcome: Outcome) -> float | None:
        """Seconds to wait before sending again; ``None`` once :attr:`answer` is parsed; raises when giving up."""
        request, attempt = self.request, self.attempt
        if isinstance(outcome, TransportFailure):
            failure, maybe_applied = outcome.reason, outcome.maybe_applied
        elif outcome.status == 429 or outcome.status >= 500:  # a 429 was refused, not applied
            failure, maybe_applied = f"HTTP {outcome.status}", outcome.status != 429
        else:
            self.answer = parse_response(request, outcome, attempts=attempt)
            observability.tickets_read(request, self.answer)
            return None
        if maybe_applied and not request.idempotent:
            raise ClubCollectAmbiguousError(
                f"Could not {request.description}: {failure}; it may or may not have been "
                "applied, so it was not sent again blindly.",
                status_code=outcome.status if isinstance(outcome, RawResponse) else None,
                timed_out=isinstance(outcome, TransportFailure) and outcome.timed_out,
                attempts=attempt,
                failure=failure,
            )
        if attempt > self.max_retries:
            if isinstance(outcome, RawResponse):
                raise error_for(request, outcome, attempts=attempt)
            raise ClubCollectServerError(
                f"Could not {request.description}: {failure}, after {attempt} attempts. "
                "ClubCollect could not be reached; check the base URL and the network, or try again later."
            )
        retry_after = outcome.headers.get("retry-after") if isinstance(outcome, RawResponse) else None
        wait = self.backoff.wait_seconds(attempt, retry_after)
        log.warning(
            "ClubCollect: could not %s (%s, attempt %d of %d); retrying in %.1f s.",
            request.description,
            failure,
            attempt,
            self.max_retries + 1,
            wait,
        )
        self.attempt += 1
        observability.RETRY.set(observability.Retry(self.attempt, wait, observability.outcome_name(outcome)))
        return wait


class _Transport:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.budget = budget_for(settings)  # every attempt draws from the key's budget
        self.watch = observability.watch_for(settings.conn_id)
        # No connection was made: nothing was applied.  Sent but unanswered: maybe applied, maybe still being applied.
        self.connect_timeout = TransportFailure(f"connect timeout after {settings.connect_timeout:g} s", False)
        self.read_timeout = TransportFailure(f"no answer within {settings.timeout:g} s", True, timed_out=True)

    def _answer(self, response: requests.Response | httpx.Response) -> RawResponse:
        # The key is scrubbed from the body before anything reads it; only Retry-After is read of the headers.
        return RawResponse(response.status_code, response.headers, self.settings.scrub_body(response.content))

    def _failure(self, kind: str, detail: object) -> TransportFailure:
        cause = detail  # the ssl module's error sits a link or two down the chain of either library's
        while isinstance(cause, BaseException) and not isinstance(cause, ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        tls = "; an https:// base URL against a plain http:// server (such as the sandbox) fails so"
        reason = f"{kind} ({detail}{tls if isinstance(cause, ssl.SSLError) else ''}) at {self.settings.base_url}"
        return TransportFailure(self.settings.scrub(reason), kind != "could not connect")


class SyncTransport(_Transport):
    """Sends requests with one pooled ``requests.Session``; ``pool_size``: at least the threads sharing it."""

    def __init__(self, settings: ClientSettings, *, pool_size: int = 10) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        super().__init__(settings)
        self.session: requests.Session = requests.Session()
        self.session.headers.update(settings.headers())
        # Retries are ours (call_sync); urllib3's own would retry blindly and hide attempts.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.trust_env = False  # no proxy or netrc settings that could rewrite Authorization

    def send(self, request: ApiRequest) -> Outcome:
        self.budget.acquire()
        return self._send(request) if self.watch is None else self.watch.sent(request, self._send)

    def _send(self, request: ApiRequest) -> Outcome:
        import requests
        from urllib3.exceptions import MaxRetryError, NewConnectionError, SSLError

        try:
            response = self.session.request(
                request.method,
                self.settings.url(request.path),
                params=request.params or None,  # requests merges even empty params, at a cost per call
                json=request.body,
                timeout=(self.settings.connect_timeout, self.settings.timeout),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            return self.connect_timeout
        except requests.exceptions.ReadTimeout:
            return self.read_timeout
        except requests.exceptions.ConnectionError as exc:
            reason = exc.args[0] if exc.args else exc
            reason = reason.reason if isinstance(reason, MaxRetryError) else reason
            # No TCP connection or no TLS session: nothing was sent.
            kind = "could not connect" if isinstance(reason, (NewConnectionError, SSLError)) else "connection lost"
            return self._failure(kind, reason)
        except (requests.exceptions.RequestException, ValueError) as exc:
            # ValueError: http.client refusing a header value that requests (before 2.32.6) let through.
            return TransportFailure(self.settings.scrub(f"{type(exc).__name__}: {exc}"), True)
        return self._answer(response)


class AsyncTransport(_Transport):
    def __init__(self, settings: ClientSettings) -> None:
        import httpx

        super().__init__(settings)
        self.reads = 0  # in flight: a client replaced by a changed connection closes after its last
        self.client: httpx.AsyncClient = httpx.AsyncClient(
            headers=settings.headers(),
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, request: ApiRequest) -> Outcome:
        await self.budget.aacquire()
        return await (self._send(request) if self.watch is None else self.watch.asent(request, self._send))

    async def _send(self, request: ApiRequest) -> Outcome:
        import httpx

        try:
            response = await self.client.request(
                request.method, self.settings.url(request.path), params=request.params or None, json=request.body
            )
        except httpx.ConnectTimeout:
            return self.connect_timeout
        except httpx.ConnectError as exc:
            return self._failure("could not connect", exc)
        except httpx.TimeoutException:
            return self.read_timeout
        except httpx.TransportError as exc:
            return TransportFailure(self.settings.scrub(f"connection lost ({type(exc).__name__}: {exc})"), True)
        return self._answer(response)

    async def aclose(self) -> None:
        await self.client.aclose()
