"""Fault injection over real HTTP: errors, rate limits, dropped connections, odd bodies and latency."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from datetime import datetime, timezone
from http.client import RemoteDisconnected

import httpx
import pytest
import requests

from airflow_provider_clubcollect.sandbox.client import SandboxControlError, ticket


@pytest.fixture
def invoice(server):
    server.state.add_invoice(
        "inv-1", "club-1", [ticket("Ik wil niet betalen", "CUSTOMER", datetime(2026, 3, 1, tzinfo=timezone.utc))]
    )
    return "inv-1"


def tickets_path(invoice_id: str = "inv-1") -> str:
    return f"v2/invoices/{invoice_id}/tickets"


# --- scripted answers -------------------------------------------------------------------------


def test_scripted_error_is_used_once(api, control, invoice):
    control.set_faults(script=[{"fault": "error", "status": 503}])
    first, second = api.get(tickets_path()), api.get(tickets_path())
    assert (first.status_code, first.json()) == (503, {"error": "service_unavailable"})
    assert second.status_code == 200
    assert control.faults()["script"] == []
    assert [(e["status"], e["fault"]) for e in control.requests()] == [(503, "error"), (200, None)]


def test_scripted_error_defaults_to_500(api, control, invoice):
    control.set_faults(script=[{"fault": "error"}])
    response = api.get(tickets_path())
    assert (response.status_code, response.json()) == (500, {"error": "internal_server_error"})


def test_an_error_answer_does_not_apply_the_post(api, server, control, invoice):
    control.set_faults(script=[{"fault": "error", "status": 502}])
    assert api.post(tickets_path(), json={"message": "hi"}).status_code == 502
    assert server.state.invoice(invoice)["tickets_created"] == 0


@pytest.mark.parametrize(("retry_after", "header"), [(1, "1"), (0.25, "0.25"), (None, None)])
def test_scripted_rate_limit(api, control, invoice, retry_after, header):
    control.set_faults(script=[{"fault": "rate_limit", "retry_after": retry_after}])
    response = api.get(tickets_path())
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert response.headers.get("Retry-After") == header


def test_scripted_html_page_like_a_firewall(api, control, invoice):
    control.set_faults(script=[{"fault": "html", "status": 403}])
    response = api.get(tickets_path())
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


def test_scripted_body_that_is_not_json(api, control, invoice):
    control.set_faults(script=[{"fault": "not_json", "status": 200}])
    response = api.get(tickets_path())
    assert response.status_code == 200
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


def test_scripted_faults_match_by_method_and_path(api, control, invoice):
    control.set_faults(
        script=[
            {"fault": "error", "status": 500, "method": "post", "path_regex": r"/actions/archive$"},
            {"fault": "error", "status": 503, "path_regex": "/companies/"},
        ]
    )
    assert api.get(tickets_path()).status_code == 200  # matches neither
    assert api.post(tickets_path(), json={"message": "hi"}).status_code == 200  # POST, other path
    assert api.post(f"{tickets_path()}/actions/archive").status_code == 500
    assert api.post(f"{tickets_path()}/actions/archive").status_code == 204  # used up
    assert api.get("v2/companies/club-1/tickets/answered").status_code == 503
    assert control.faults()["script"] == []


def test_scripted_delay_then_normal_answer(api, control, invoice):
    # A long delay, so that a plain answer on a busy machine is never as slow.
    control.set_faults(script=[{"fault": "delay", "seconds": 1.0}])
    started = time.monotonic()
    assert api.get(tickets_path()).status_code == 200
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    api.get(tickets_path())
    assert time.monotonic() - started < 1.0
    assert [(e["status"], e["fault"]) for e in control.requests()] == [(200, "delay"), (200, None)]


def test_a_scripted_delay_longer_than_the_clients_timeout(api, control, invoice):
    control.set_faults(script=[{"fault": "delay", "seconds": 0.5}])
    with pytest.raises(requests.ReadTimeout):
        api.get(tickets_path(), timeout=0.1)


# --- dropped connections --------------------------------------------------------------------


def test_drop_closes_the_connection_without_sending_a_byte(server, control, invoice):
    control.set_faults(script=[{"fault": "drop"}])
    request = (
        f"GET /api/v2/invoices/inv-1/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: ApiKey {server.api_key}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == b""  # an orderly close with no status line
    assert control.requests()[-1]["status"] is None
    assert control.requests()[-1]["fault"] == "drop"


def test_drop_raises_connection_error_in_requests(api, control, invoice):
    control.set_faults(script=[{"fault": "drop"}])
    with pytest.raises(requests.ConnectionError) as caught:
        api.get(tickets_path())
    assert isinstance(caught.value.args[0].args[1], RemoteDisconnected)


def test_drop_raises_remote_protocol_error_in_httpx(server, control, invoice):
    control.set_faults(script=[{"fault": "drop"}])
    headers = {"Authorization": f"ApiKey {server.api_key}"}
    with httpx.Client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{server.base_url}/{tickets_path()}", headers=headers)


def test_a_dropped_post_is_not_applied(api, server, control, invoice):
    control.set_faults(script=[{"fault": "drop", "method": "POST"}])
    with pytest.raises(requests.ConnectionError):
        api.post(tickets_path(), json={"message": "hi"})
    assert server.state.invoice(invoice)["tickets_created"] == 0
    assert len(server.state.invoice(invoice)["tickets"]) == 1


def test_apply_then_drop_applies_the_post_and_sends_nothing(api, server, control, invoice):
    control.set_faults(script=[{"fault": "apply_then_drop"}, {"fault": "apply_then_drop"}])
    with pytest.raises(requests.ConnectionError):
        api.post(tickets_path(), json={"message": "Graag betalen vóór de 30e"})
    with pytest.raises(requests.ConnectionError):
        api.post(f"{tickets_path()}/actions/archive")
    state = server.state.invoice(invoice)
    assert state["tickets_created"] == 1
    assert state["tickets"][-1]["message"] == "Graag betalen vóór de 30e"
    assert state["actions"]["archive"] == 1
    assert state["status"] == "archived"
    assert [(e["status"], e["fault"]) for e in control.requests()] == [
        (None, "apply_then_drop"),
        (None, "apply_then_drop"),
    ]


def test_the_server_keeps_serving_after_drops(api, control, invoice):
    control.set_faults(script=[{"fault": "drop"}] * 3)
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            api.get(tickets_path())
    assert api.get(tickets_path()).status_code == 200


# --- random faults --------------------------------------------------------------------------


def statuses_of(api, count: int, path: str = "v2/invoices/inv-1/tickets") -> list[int | str]:
    seen: list[int | str] = []
    for _ in range(count):
        try:
            seen.append(api.get(path).status_code)
        except requests.ConnectionError:
            seen.append("dropped")
    return seen


def test_random_errors_are_500_or_503(api, control, invoice):
    control.set_faults(error_rate=1.0)
    assert set(statuses_of(api, 20)) <= {500, 503}


def test_random_faults_repeat_with_the_same_seed(api, control, invoice):
    settings = {"error_rate": 0.3, "rate_limit_rate": 0.2, "drop_rate": 0.1, "random_seed": 7}
    control.set_faults(**settings)
    first = statuses_of(api, 40)
    control.set_faults(**settings)
    assert statuses_of(api, 40) == first
    assert {200, 429, "dropped"} <= set(first)
    assert set(first) & {500, 503}


def test_random_rate_limit_carries_the_configured_retry_after(api, control, invoice):
    control.set_faults(rate_limit_rate=1.0, retry_after=2)
    response = api.get(tickets_path())
    assert (response.status_code, response.headers.get("Retry-After")) == (429, "2")
    control.set_faults(rate_limit_rate=1.0)
    assert "Retry-After" not in api.get(tickets_path()).headers


def test_random_apply_then_drop_touches_only_posts(api, server, control, invoice):
    control.set_faults(apply_then_drop_rate=1.0)
    assert api.get(tickets_path()).status_code == 200
    with pytest.raises(requests.ConnectionError):
        api.post(tickets_path(), json={"message": "hi"})
    assert server.state.invoice(invoice)["tickets_created"] == 1


def test_the_script_comes_before_random_faults(api, control, invoice):
    control.set_faults(error_rate=1.0, script=[{"fault": "not_json", "status": 200}])
    assert api.get(tickets_path()).status_code == 200
    assert api.get(tickets_path()).status_code in (500, 503)


def test_latency_overlaps_between_concurrent_requests(server, control, invoice):
    control.set_faults(latency_ms=1000)
    durations: list[float] = []
    headers = {"Authorization": f"ApiKey {server.api_key}"}

    def call() -> None:
        started = time.monotonic()
        assert requests.get(f"{server.base_url}/{tickets_path()}", headers=headers, timeout=10).status_code == 200
        durations.append(time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(durations) == 6
    assert min(durations) >= 1.0
    # Concurrent, not one after another (6 s): 2 s to spare for starting threads on a busy machine.
    assert time.monotonic() - started < 3.0


def test_faults_leave_the_control_api_alone(control, invoice):
    control.set_faults(error_rate=1.0, latency_ms=0)
    assert control.state()["invoices"]["inv-1"]["status"] == "unanswered"


def test_a_new_fault_is_one_class(api, server, control, invoice):
    from dataclasses import dataclass

    from airflow_provider_clubcollect.sandbox.faults import FAULTS, Answer, Fault

    @dataclass(frozen=True)
    class Teapot(Fault):
        """Applies the POST, then answers 418 with a status of the script's choosing."""

        name = "teapot"
        applies = True
        status: int = 418

        def answer(self, echo):
            return Answer(self.status, json.dumps({"error": "teapot"}))

    try:
        settings = control.set_faults(script=[{"fault": "teapot", "status": 499, "method": "POST"}])
        assert settings["script"] == [{"fault": "teapot", "status": 499, "method": "POST"}]
        response = api.post(tickets_path(), json={"message": "Hallo"})
        assert (response.status_code, response.json()) == (499, {"error": "teapot"})
        assert server.state.invoice("inv-1")["tickets_created"] == 1
        assert [(e["status"], e["fault"]) for e in control.requests()] == [(499, "teapot")]
    finally:
        del FAULTS["teapot"]
    with pytest.raises(SandboxControlError, match="teapot"):
        control.set_faults(script=[{"fault": "teapot"}])


# --- the fault settings themselves --------------------------------------------------------------


def test_fault_settings_round_trip_and_clear(control):
    settings = control.set_faults(latency_ms=5, error_rate=0.1, retry_after=None, script=[{"fault": "drop"}])
    assert settings == control.faults()
    assert settings["script"] == [{"fault": "drop"}]
    assert settings["latency_ms"] == 5
    control.clear_faults()
    cleared = control.faults()
    assert cleared["script"] == []
    assert cleared["error_rate"] == cleared["drop_rate"] == cleared["latency_ms"] == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"error_rate": 1.5},
        {"error_rate": 0.6, "drop_rate": 0.6},
        {"latency_ms": -1},
        {"error_rate": "high"},
        {"colour": "red"},
        {"script": [{"fault": "explode"}]},
        {"script": [{"fault": "error", "status": 200}]},
        {"script": [{"fault": "drop", "path_regex": "("}]},
        {"script": {"fault": "drop"}},
        {"random_seed": 1.5},
    ],
)
def test_invalid_fault_settings_are_refused(control, settings):
    with pytest.raises(SandboxControlError) as caught:
        control.set_faults(**settings)
    assert caught.value.status_code == 422
    assert control.faults()["script"] == []


def call_in_process(app, path: str) -> tuple[int, dict]:
    """Call the ASGI app directly, as an in-process test client does: no transport behind ``send``."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", b"ApiKey k")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_drop_on_a_server_that_cannot_drop_says_so_loudly(caplog):
    from airflow_provider_clubcollect.sandbox.app import create_app
    from airflow_provider_clubcollect.sandbox.state import SandboxState

    state = SandboxState(api_key="k")
    state.add_invoice("inv-1", "club-1")
    state.set_faults({"script": [{"fault": "drop"}]})
    app = create_app(state)
    status, body = call_in_process(app, "/api/v2/invoices/inv-1/tickets")
    assert (status, body["error"]) == (500, "sandbox_cannot_drop")
    assert "cannot drop a connection" in caplog.text
    # Without faults the app works the same in-process.
    assert call_in_process(app, "/api/v2/invoices/inv-1/tickets") == (200, {"tickets": []})
