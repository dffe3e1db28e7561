"""SandboxServer's lifecycle: ports, URLs, keys, stopping with requests in flight."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from airflow_provider_clubcollect.sandbox.server import SandboxServer


def test_lifecycle_urls_and_key():
    server = SandboxServer(seed=None, api_key="my-key")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    with server:
        assert server.running
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}/api"
        assert server.control_url == f"http://127.0.0.1:{server.port}/_sandbox"
        assert server.api_key == "my-key"
        assert server.state.snapshot()["companies"] == []
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        response = requests.get(
            f"{server.base_url}/v2/companies/x/tickets/answered", headers={"Authorization": "ApiKey my-key"}, timeout=5
        )
        assert (response.status_code, response.json()) == (404, {"error": "not_found"})
    assert not server.running
    server.stop()  # a second stop is harmless
    with pytest.raises(requests.ConnectionError):
        requests.get(server.base_url, timeout=2)


def test_generated_keys_are_40_hex_and_differ():
    first, second = SandboxServer(seed=None), SandboxServer(seed=None)
    assert len(first.api_key) == 40
    assert first.api_key != second.api_key


def test_default_seed_is_zero():
    with SandboxServer() as server:
        assert len(server.state.snapshot()["invoices"]) > 100


def test_a_busy_port_fails_in_the_callers_thread():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError, match="in use"):
            SandboxServer(seed=None, port=busy.getsockname()[1]).start()


def test_stop_does_not_wait_for_a_request_in_flight():
    server = SandboxServer(seed=None).start()
    server.state.add_invoice("inv-1", "club-1")
    server.state.set_faults({"script": [{"fault": "delay", "seconds": 30}]})
    outcome: list[object] = []

    def call() -> None:
        try:
            url = f"{server.base_url}/v2/invoices/inv-1/tickets"
            outcome.append(requests.get(url, headers={"Authorization": f"ApiKey {server.api_key}"}, timeout=30))
        except requests.RequestException as error:
            outcome.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.state.requests() and time.monotonic() < deadline:  # the request is in flight (held 30 s)
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    thread.join(10)
    assert outcome  # the client got an answer or an error, not a hang


def test_the_port_can_be_taken_again_right_after_stop():
    with SandboxServer(seed=None) as server:
        port = server.port
        requests.get(server.control_url + "/state", timeout=5)
    with SandboxServer(seed=None, port=port) as again:
        assert again.port == port
