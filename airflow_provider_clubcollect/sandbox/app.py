"""The sandbox's web app: the five Tickets API calls under ``/api/v2`` and a control API under ``/_sandbox``.

Paths, parameters, field names and error bodies are written out here as the API's page states
them (SPEC section 1), not imported from the provider's wire module: the sandbox is the API's
stand-in, so a wrong name in the provider fails against it (tests/sandbox/test_sandbox_contract.py
checks the sandbox against the page's examples).  Endpoints are
``async`` so that injected latency overlaps between concurrent requests; the state's lock is
held only inside short synchronous calls.

Fault injection, the request log and dropped connections happen in :class:`SandboxApp.__call__`,
in front of FastAPI's middleware, because dropping a connection needs the server's own ``send``
callable, which Starlette's middleware would wrap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

# Request is needed at runtime: FastAPI reads the endpoints' annotations to inject it.
from fastapi import FastAPI, Request  # noqa: TC002
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_clubcollect.sandbox.errors import SandboxInputError, SandboxNotFoundError
from airflow_provider_clubcollect.sandbox.state import ACTIONS, BASE_PATH, MAX_PAGE_SIZE, STATUSES, parse_date

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from airflow_provider_clubcollect.sandbox.faults import Answer
    from airflow_provider_clubcollect.sandbox.state import SandboxState

logger = logging.getLogger(__name__)

#: Where the API's version 2 lives on the sandbox.
API_PREFIX: Final = f"{BASE_PATH}/v2"
#: Where the control API lives, outside the API's namespace.
CONTROL_PREFIX: Final = "/_sandbox"
#: The deprecated query parameter carrying the key; answered normally but recorded, because the
#: provider must never send it (it puts the key into URLs and access logs).
DEPRECATED_API_KEY_PARAM: Final = "api_key"
#: The page's default ``page_size``.
DEFAULT_PAGE_SIZE: Final = 30

# The error codes the API's page documents.
ERROR_INVALID_INVOICE_ID: Final = "invalid_invoice_id"
ERROR_INVALID_MESSAGE: Final = "invalid_message"
ERROR_NOT_FOUND: Final = "not_found"
ERROR_INVALID_ACTION: Final = "invalid_action"

# Error codes for situations ClubCollect does not document; the sandbox has to answer something.
ERROR_UNAUTHORIZED: Final = "unauthorized"
ERROR_UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
ERROR_INVALID_PAGE: Final = "invalid_page"
ERROR_METHOD_NOT_ALLOWED: Final = "method_not_allowed"
ERROR_INVALID_REQUEST: Final = "invalid_request"

_INTEGER: Final = re.compile(r"[0-9]+")

#: What a plain web server answers for a path it does not serve: the API's JSON errors belong to the
#: API's own paths, so a base URL without ``/api`` meets this page, as it would in front of ClubCollect.
PLAIN_NOT_FOUND: Final = (
    "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body><h1>Not Found</h1></body></html>\n"
)


class SandboxApp(FastAPI):
    """
    The FastAPI app, with fault injection and request logging in front of every API request.

    :param state: the in-memory ClubCollect it serves.
    :param kwargs: passed to :class:`fastapi.FastAPI`.
    """

    def __init__(self, state: SandboxState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sandbox_state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Serve one ASGI connection event; API requests pass the fault injector and the request log.

        :param scope: the ASGI scope.
        :param receive: the ASGI receive callable.
        :param send: the ASGI send callable, the server's own (needed to drop a connection).
        """
        if scope["type"] != "http" or not _is_api_path(scope["path"]):
            await super().__call__(scope, receive, send)
            return
        state = self.sandbox_state
        index = state.log_request(_describe(scope, state.api_key))
        decision = state.decide_fault(scope["method"], scope["path"], _header(scope, "Authorization"))
        if decision.delay_seconds > 0:
            # A slow server has read the request before it works on it, so a client that gives
            # up meanwhile does not stop the request from being applied.
            receive = await _buffered(receive)
            await asyncio.sleep(decision.delay_seconds)
        fault = decision.fault
        authorization = _header(scope, "Authorization") if decision.echo_authorization else None
        echo = "" if authorization is None else f" (request headers: Authorization: {authorization})"
        answer = None if fault is None else fault.answer(echo)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state.set_request_status(index, int(message["status"]), None if fault is None else fault.name)
            await send(message)

        if fault is None or not (fault.applies or fault.drops or answer):
            # No fault, or a delay, served above: the API's own answer.
            await super().__call__(scope, receive, recording_send)
            return

        async def discard(message: Message) -> None:
            # The request is applied, but no byte of its own answer leaves the server.
            return None

        if fault.applies:
            await super().__call__(scope, receive, discard)
        elif not fault.drops:
            await _drain_body(receive)  # so the connection stays usable after the fault's answer
        if answer is None:
            state.set_request_status(index, None, fault.name)
            await _drop_connection(scope, receive, send)
            return
        await _response(answer)(scope, receive, recording_send)


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the returned ``receive`` replays it, then listens on."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replaying_receive() -> Message:
        if replay:
            return replay.pop()
        return await receive()

    return replaying_receive


def create_app(state: SandboxState) -> FastAPI:
    """
    Build the sandbox's web app.

    :param state: the in-memory ClubCollect to serve; it holds the API key.
    :return: an ASGI app serving ``/api/v2/...`` and ``/_sandbox/...``.
    """
    app = SandboxApp(
        state,
        title="ClubCollect sandbox",
        description="A local, in-memory ClubCollect Tickets API for tests and demos.",
        openapi_url=None,  # no schema: the API's contract is ClubCollect's documentation
        docs_url=None,
        redoc_url=None,
    )
    _add_error_handlers(app)
    _add_api_routes(app, state)
    _add_control_routes(app, state)
    return app


# --- the Tickets API --------------------------------------------------------------------------


def _add_api_routes(app: FastAPI, state: SandboxState) -> None:
    invoice_tickets = f"{API_PREFIX}/invoices/{{invoice_id}}/tickets"

    @app.get(invoice_tickets)
    async def fetch_invoice_tickets(invoice_id: str, request: Request) -> Response:
        """Fetch an invoice's tickets, oldest first."""
        refused = _refuse(request, state)
        if refused is not None:
            return refused
        tickets = state.invoice_tickets(invoice_id)
        if tickets is None:
            return _error(404, ERROR_INVALID_INVOICE_ID)
        return JSONResponse({"tickets": tickets})

    @app.post(invoice_tickets)
    async def create_ticket(invoice_id: str, request: Request) -> Response:
        """Create a COMPANY ticket on an invoice."""
        refused = _refuse(request, state)
        if refused is not None:
            return refused
        if not state.has_invoice(invoice_id):
            return _error(404, ERROR_INVALID_INVOICE_ID)
        try:
            body = json.loads(await request.body())
        except ValueError:  # not JSON, or not UTF-8
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip():  # text other than whitespace
            return _error(422, ERROR_INVALID_MESSAGE)
        ticket = state.create_ticket(invoice_id, message)
        if ticket is None:  # the invoice vanished in between (a reset): still its documented error
            return _error(404, ERROR_INVALID_INVOICE_ID)
        return JSONResponse(ticket)

    @app.post(f"{invoice_tickets}/actions/{{action}}")
    async def invoice_action(invoice_id: str, action: str, request: Request) -> Response:
        """Archive an invoice's tickets, or assign them to support; idempotent."""
        if action not in ACTIONS:
            return _error(404, ERROR_NOT_FOUND)
        refused = _refuse(request, state)
        if refused is not None:
            return refused
        if not state.apply_action(invoice_id, action):
            return _error(404, ERROR_INVALID_INVOICE_ID)
        return Response(status_code=204)

    @app.get(f"{API_PREFIX}/companies/{{company_id}}/tickets/{{status}}")
    async def fetch_company_tickets(company_id: str, status: str, request: Request) -> Response:
        """Fetch one page of a company's tickets in one status, oldest first."""
        refused = _refuse(request, state)
        if refused is not None:
            return refused
        if not state.has_company(company_id):
            return _error(404, ERROR_NOT_FOUND)
        if status not in STATUSES:
            return _error(422, ERROR_INVALID_ACTION)
        # Parsed here rather than declared as parameters, so that FastAPI's own validation
        # answer (a 422 with "detail") never replaces the API's error shape.
        page_number = _query_int(request, "page_number", 1)
        page_size = _query_int(request, "page_size", DEFAULT_PAGE_SIZE)
        if page_number is None or page_number < 1 or page_size is None or not 1 <= page_size <= MAX_PAGE_SIZE:
            return _error(422, ERROR_INVALID_PAGE)
        page = state.company_tickets_page(company_id, status, page_number, page_size)
        if page is None:
            return _error(404, ERROR_NOT_FOUND)
        return JSONResponse(page)


def is_authorized(authorization: str | None, api_key: str) -> bool:
    """
    Whether an ``Authorization`` header carries the key exactly as the API expects: ``ApiKey <key>``.

    Any other scheme (``Bearer``), spelling or spacing is refused, so that the sandbox catches a
    client that only works against a lenient server.  Compared in constant time, as a real
    server would.

    :param authorization: the header's value, or ``None`` when it is missing.
    :param api_key: the key the sandbox accepts.
    """
    if authorization is None:
        return False
    expected = f"ApiKey {api_key}".encode()
    return secrets.compare_digest(authorization.encode("utf-8", "surrogateescape"), expected)


def _refuse(request: Request, state: SandboxState) -> Response | None:
    """The 401 or 415 answer a request gets before it is looked at, or ``None`` to go on."""
    if not is_authorized(request.headers.get("Authorization"), state.api_key):
        return _error(401, ERROR_UNAUTHORIZED)
    if request.method == "POST" and _media_type(request.headers.get("content-type")) != "application/json":
        return _error(415, ERROR_UNSUPPORTED_MEDIA_TYPE)
    return None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _query_int(request: Request, name: str, default: int) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return default
    value = values[-1].strip()
    return int(value) if _INTEGER.fullmatch(value) else None


def _error(status: int, code: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    # Whatever goes wrong under the API's and the control API's paths, the body is shaped like the
    # API's errors: {"error": code}.  Elsewhere a 404 is a plain web server's page.

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404 and not any(_is_under(request.url.path, p) for p in (API_PREFIX, CONTROL_PREFIX)):
            return HTMLResponse(PLAIN_NOT_FOUND, status_code=404)
        code = ERROR_METHOD_NOT_ALLOWED if error.status_code == 405 else ERROR_NOT_FOUND
        if error.status_code not in (404, 405):
            code = ERROR_INVALID_REQUEST
        return _error(error.status_code, code, detail=str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return _error(422, ERROR_INVALID_REQUEST, detail=str(error.errors()))

    @app.exception_handler(SandboxInputError)
    async def input_error(request: Request, error: SandboxInputError) -> Response:
        return _error(422, ERROR_INVALID_REQUEST, detail=str(error))

    @app.exception_handler(SandboxNotFoundError)
    async def not_found(request: Request, error: SandboxNotFoundError) -> Response:
        return _error(404, ERROR_NOT_FOUND, detail=str(error))


# --- faults ---------------------------------------------------------------------------------


def _response(answer: Answer) -> Response:
    """A fault's answer as an ASGI response."""
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    return next((value.decode("latin-1") for key, value in scope["headers"] if key.lower() == wanted), None)


async def _drain_body(receive: Receive) -> None:
    """Read the request body to its end, so the connection stays usable after a fault answer."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """
    Close the TCP connection without sending a single byte of an answer.

    uvicorn has no API for this.  Its ``send`` is a bound method of the connection's
    ``RequestResponseCycle``, whose ``transport`` is the asyncio transport: closing it sends a
    FIN with no status line, so ``requests`` raises ``ConnectionError`` (RemoteDisconnected) and
    httpx ``RemoteProtocolError``.  Without that attribute (another server) the drop cannot be
    simulated; the sandbox then says so loudly, in the log and in a 500 answer.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not callable(getattr(transport, "close", None)):
        logger.error(
            "The ClubCollect sandbox cannot drop a connection on this server (its ASGI send has no "
            "transport); answering 500 instead. Serve the sandbox with uvicorn's h11 protocol."
        )
        await _error(500, "sandbox_cannot_drop", detail="this server cannot drop connections")(scope, receive, send)
        return
    transport.close()
    # Wait until the server has noticed the connection is gone: returning earlier would make
    # uvicorn send its own 500 for an app that "returned without starting a response".
    try:
        await asyncio.wait_for(_until_disconnect(receive), timeout=5)
    except asyncio.TimeoutError:
        logger.error("The ClubCollect sandbox closed a connection but the server did not notice it.")


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# --- the request log --------------------------------------------------------------------------


def _is_api_path(path: str) -> bool:
    return _is_under(path, BASE_PATH)


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def _describe(scope: Scope, api_key: str) -> dict[str, Any]:
    """How an API request arrived, for the request log; the API key is never stored."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    query_string = scope.get("query_string", b"").decode("latin-1")
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    api_key_in_query = DEPRECATED_API_KEY_PARAM in query
    if api_key_in_query:
        query[DEPRECATED_API_KEY_PARAM] = "<redacted>"
    return {
        "method": scope["method"],
        "path": scope["path"],
        "query": query,
        "user_agent": headers.get("user-agent"),
        "content_type": headers.get("content-type"),
        "accept": headers.get("accept"),
        "authorized": is_authorized(headers.get("authorization"), api_key),
        "api_key_in_query": api_key_in_query,
        "status": None,
        "fault": None,
        "at": time.time(),
    }


# --- the control API --------------------------------------------------------------------------


def _add_control_routes(app: FastAPI, state: SandboxState) -> None:
    @app.post(f"{CONTROL_PREFIX}/reset")
    async def reset(request: Request) -> Response:
        """Forget everything; with ``{"seed": n}`` load the seed data (``"now"`` fixes its dates)."""
        body = await _json_object(request, allow_empty=True)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SandboxInputError(f"seed must be an integer or null, got {seed!r}")
        now = body.get("now")
        # Seeding a few hundred invoices takes milliseconds; run it off the event loop anyway
        # so that concurrent requests keep flowing.
        await asyncio.to_thread(state.reset, seed, None if now is None else parse_date(now, "now"))
        return JSONResponse({"companies": state.companies()})

    @app.get(f"{CONTROL_PREFIX}/companies")
    async def companies() -> Response:
        """Each company with its name and tickets per status."""
        return JSONResponse(state.companies())

    @app.post(f"{CONTROL_PREFIX}/companies", status_code=201)
    async def add_company(request: Request) -> Response:
        """Add a company: ``{"company_id", optional "name"}``."""
        body = await _json_object(request)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise SandboxInputError(f"name must be a string, got {name!r}")
        return JSONResponse(state.add_company(body.get("company_id", ""), name), status_code=201)

    @app.post(f"{CONTROL_PREFIX}/invoices", status_code=201)
    async def add_invoice(request: Request) -> Response:
        """Add an invoice with tickets (or append tickets to an existing one)."""
        body = await _json_object(request)
        tickets = body.get("tickets", [])
        if not isinstance(tickets, list):
            raise SandboxInputError(f"tickets must be a list, got {tickets!r}")
        view = state.add_invoice(
            body.get("invoice_id", ""),
            body.get("company_id", ""),
            tickets,
            archived=body.get("archived"),
        )
        return JSONResponse(view, status_code=201)

    @app.post(f"{CONTROL_PREFIX}/invoices/{{invoice_id}}/tickets")
    async def add_tickets(invoice_id: str, request: Request) -> Response:
        """Append tickets to an invoice: ``{"tickets": [...]}``; reopens an archived thread."""
        body = await _json_object(request)
        tickets = body.get("tickets")
        if not isinstance(tickets, list):
            raise SandboxInputError(f"tickets must be a list, got {tickets!r}")
        return JSONResponse(state.add_tickets(invoice_id, tickets))

    @app.get(f"{CONTROL_PREFIX}/invoices/{{invoice_id}}")
    async def invoice(invoice_id: str) -> Response:
        """One invoice with its status, flags, tickets and counters."""
        return JSONResponse(state.invoice(invoice_id))

    @app.get(f"{CONTROL_PREFIX}/state")
    async def snapshot() -> Response:
        """Everything the sandbox holds."""
        return JSONResponse(state.snapshot())

    @app.get(f"{CONTROL_PREFIX}/requests")
    async def requests_log() -> Response:
        """The API requests received, oldest first."""
        return JSONResponse(state.requests())

    @app.delete(f"{CONTROL_PREFIX}/requests", status_code=204)
    async def clear_requests() -> Response:
        """Forget the API requests received."""
        state.clear_requests()
        return Response(status_code=204)

    @app.post(f"{CONTROL_PREFIX}/list_changes", status_code=204)
    async def change_list(request: Request) -> Response:
        """Change threads before the n-th list request from now: ``{"after_reads", "answer", "archive", "write"}``."""
        body = await _json_object(request)
        state.change_list(
            body.get("after_reads", 1),
            answer=body.get("answer", []),
            archive=body.get("archive", []),
            write=body.get("write", []),
        )
        return Response(status_code=204)

    @app.get(f"{CONTROL_PREFIX}/faults")
    async def faults() -> Response:
        """The fault settings in force."""
        return JSONResponse(state.faults())

    @app.post(f"{CONTROL_PREFIX}/faults")
    async def set_faults(request: Request) -> Response:
        """Replace the fault settings; keys left out mean no such fault."""
        return JSONResponse(state.set_faults(await _json_object(request, allow_empty=True)))

    @app.delete(f"{CONTROL_PREFIX}/faults", status_code=204)
    async def clear_faults() -> Response:
        """Stop injecting faults."""
        state.clear_faults()
        return Response(status_code=204)


async def _json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise SandboxInputError(f"the body must be a JSON object: {error}") from error
    if not isinstance(body, dict):
        raise SandboxInputError(f"the body must be a JSON object, got {body!r}")
    return body
