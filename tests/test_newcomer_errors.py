"""A newcomer's wrong base URL, against the sandbox as against production: each error names the fix.

A base URL without ``/api`` meets a plain web server's 404 (the sandbox answers paths outside its API
as one does), which every call turns into the hint; a base URL that cannot be reached (an ``https``
URL against the plain-http sandbox, a closed port) is named in the error, the key never is.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_clubcollect.exceptions import ClubCollectNotFoundError, ClubCollectServerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

HINT = "got 404 without a ClubCollect error code: is the connection's base URL right (it should end in /api)?"
TLS_HINT = "an https:// base URL against a plain http:// server (such as the sandbox) fails so"


def _hook_at(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, base_url: str) -> ClubCollectHook:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    connection = {**json.loads(sandbox.server.connection_json()), "host": base_url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", json.dumps(connection))
    return ClubCollectHook()


def _calls(sandbox: SandboxHandle) -> dict[str, Callable[[ClubCollectHook], Any]]:
    company_id = sandbox.server.state.companies()[0]["company_id"]
    invoice_id = "a" * 40
    return {
        "get_invoice_tickets": lambda hook: hook.get_invoice_tickets(invoice_id),
        "create_ticket": lambda hook: hook.create_ticket(invoice_id, "Hello"),
        "archive_tickets": lambda hook: hook.archive_tickets(invoice_id),
        "assign_tickets_to_support": lambda hook: hook.assign_tickets_to_support(invoice_id),
        "get_company_tickets": lambda hook: hook.get_company_tickets(company_id, "unanswered"),
    }


@pytest.mark.parametrize("path", ["/", "/v2/invoices/x/tickets", "/api/v1/invoices/x/tickets", "/apix/v2"])
def test_the_sandbox_answers_outside_its_api_like_a_plain_web_server(clubcollect_sandbox, path: str) -> None:
    response = requests.get(clubcollect_sandbox.server.root_url + path, timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not Found</h1>" in response.text


@pytest.mark.parametrize("path", ["/api/v2/nothing", "/_sandbox/nothing"])
def test_the_sandbox_answers_inside_its_api_with_the_api_error(clubcollect_sandbox, path: str) -> None:
    response = requests.get(clubcollect_sandbox.server.root_url + path, timeout=10)
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    "call",
    ["get_invoice_tickets", "create_ticket", "archive_tickets", "assign_tickets_to_support", "get_company_tickets"],
)
def test_a_base_url_without_api_gets_the_hint_on_every_call(
    clubcollect_sandbox, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    hook = _hook_at(clubcollect_sandbox, monkeypatch, clubcollect_sandbox.server.root_url)
    with pytest.raises(ClubCollectNotFoundError) as info:
        _calls(clubcollect_sandbox)[call](hook)
    assert HINT in str(info.value)
    assert "It does not exist" not in str(info.value)


@pytest.mark.parametrize("call", ["get_company_tickets", "create_ticket"])
def test_https_against_the_http_sandbox_names_the_url_and_the_likely_cause(
    clubcollect_sandbox, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    https_url = clubcollect_sandbox.base_url.replace("http://", "https://")
    hook = _hook_at(clubcollect_sandbox, monkeypatch, https_url)
    with pytest.raises(ClubCollectServerError) as info:
        _calls(clubcollect_sandbox)[call](hook)
    message = str(info.value)
    assert f") at {https_url}, after 1 attempts" in message
    assert TLS_HINT in message
    # Nothing was sent without a TLS session: a create is not "maybe applied".
    assert "may or may not have been applied" not in message
    assert clubcollect_sandbox.api_key not in message


def test_the_async_transport_names_the_url_too(clubcollect_sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.transport import AsyncTransport
    from airflow_provider_clubcollect.wire import get_invoice_tickets_request

    settings = _hook_at(
        clubcollect_sandbox, monkeypatch, clubcollect_sandbox.base_url.replace("http:", "https:")
    ).settings

    async def send_once() -> Any:
        transport = AsyncTransport(settings)
        try:
            return await transport.send(get_invoice_tickets_request("a" * 40))
        finally:
            await transport.aclose()

    failure = asyncio.run(send_once())
    assert failure.reason.endswith(f"{TLS_HINT}) at {settings.base_url}")
    assert failure.maybe_applied is False


def test_a_closed_port_is_named(clubcollect_sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _hook_at(clubcollect_sandbox, monkeypatch, "http://127.0.0.1:9/api")
    with pytest.raises(ClubCollectServerError) as info:
        hook.get_invoice_tickets("a" * 40)
    assert ") at http://127.0.0.1:9/api, after 1 attempts. ClubCollect could not be reached" in str(info.value)
