"""``python -m airflow_provider_clubcollect.sandbox`` as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

CONN_LINE = re.compile(r"^AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='(?P<json>\{.*\})'$")


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_clubcollect.sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_banner(process: subprocess.Popen[str], timeout: float = 30) -> list[str]:
    """The lines printed up to "Press Ctrl-C to stop."."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Press Ctrl-C"):
            return lines
    process.kill()
    pytest.fail(f"the sandbox CLI printed no banner: {lines}, stderr: {process.communicate()[1]}")


@pytest.fixture
def cli():
    """Start the CLI on a free port (``--port 0``) with a known key and a budget of one request; stop it afterwards."""
    process = start_cli("--port", "0", "--seed", "0", "--api-key", "cli-test-key", "--rate-limit-per-second", "0.05")
    try:
        yield process, read_banner(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_prints_where_it_is_serves_and_enforces_a_budget_per_key(cli):
    process, lines = cli
    text = "\n".join(lines)
    base_url = re.search(r"^Base URL:\s+(\S+)$", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api", base_url)
    assert re.search(r"^API key:\s+cli-test-key$", text, re.MULTILINE)
    assert re.search(r"^Rate limit:\s+0\.05 requests per second per API key \(burst 1\)", text, re.MULTILINE)
    companies = re.findall(
        r"^  ([0-9a-f]{40})  (.+?)  \(\d+ invoices; tickets: unanswered (\d+), answered (\d+), archived (\d+)\)$",
        text,
        re.MULTILINE,
    )
    assert 3 <= len(companies) <= 5
    assert "Hockeyclub De Kieviten" in {name for _, name, *_ in companies}
    (conn_line,) = [line for line in lines if line.startswith("AIRFLOW_CONN_")]
    connection = json.loads(CONN_LINE.match(conn_line).group("json"))
    assert connection == {"conn_type": "clubcollect", "password": "cli-test-key", "host": base_url}
    assert list(connection) == ["conn_type", "password", "host"]

    company_id, _, unanswered, _, _ = companies[0]
    first, second = (
        requests.get(
            f"{base_url}/v2/companies/{company_id}/tickets/unanswered",
            headers={"Authorization": "ApiKey cli-test-key"},
            params={"page_size": 100},
            timeout=10,
        )
        for _ in range(2)
    )
    assert first.status_code == 200
    assert first.json()["page"]["total_entries"] == int(unanswered)
    assert second.status_code == 429
    assert float(second.headers["Retry-After"]) > 0

    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "stopped" in out
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url, timeout=2)


def test_cli_reports_a_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        process = start_cli("--port", str(busy.getsockname()[1]))
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "Cannot listen on 127.0.0.1" in err


def banner_of(*args: str, env: dict[str, str] | None = None) -> str:
    """The banner of a CLI started with these arguments (and environment), stopped with Ctrl-C right after."""
    process = start_cli("--port", "0", *args, env=env)
    try:
        banner = "\n".join(read_banner(process))
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    assert process.returncode == 0, "Ctrl-C stops the CLI cleanly"
    return banner


def api_key_of(banner: str) -> str:
    return re.search(r"^API key:\s+(\S+)$", banner, re.MULTILINE).group(1)


def test_cli_key_is_stable_across_restarts_for_the_same_seed():
    from airflow_provider_clubcollect.sandbox.__main__ import default_api_key

    # Derived from the seed alone, so every start with the same seed has it.
    assert default_api_key(0) == default_api_key(0) != default_api_key(1) != default_api_key(None)
    assert re.fullmatch(r"[0-9a-f]{40}", default_api_key(0))
    text = banner_of("--seed", "0")
    assert api_key_of(text) == default_api_key(0)
    # The connection line carries it, so an exported connection survives a restart.
    assert f'"password": "{default_api_key(0)}"' in text


def test_cli_empty_takes_the_key_from_the_environment():
    text = banner_of("--empty", env={"CLUBCOLLECT_SANDBOX_API_KEY": "env-key"})
    assert "Companies: none" in text
    assert api_key_of(text) == "env-key"
    assert '"password": "env-key"' in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rate-limit-per-second", "0"], "rate_limit_per_second must be a number of requests per second above 0"),
        (["--rate-limit-burst", "3"], "rate_limit_burst needs rate_limit_per_second"),
        (["--rate-limit-per-second", "2", "--rate-limit-burst", "0"], "rate_limit_burst must be a whole number"),
    ],
)
def test_cli_refuses_a_bad_budget(flags, message):
    process = start_cli("--port", "0", *flags)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert message in err
