"""The ``clubcollect_sandbox`` fixture, used directly and from a user's test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest
import requests

from airflow_provider_clubcollect.sandbox.client import ticket
from airflow_provider_clubcollect.sandbox.seed import seed_id


def test_fixture_points_the_default_connection_at_the_sandbox(clubcollect_sandbox):
    sandbox = clubcollect_sandbox
    assert sandbox.conn_id == "clubcollect_default"
    assert os.environ["AIRFLOW_CONN_CLUBCOLLECT_DEFAULT"] == sandbox.conn_uri_json
    assert json.loads(sandbox.conn_uri_json) == {
        "conn_type": "clubcollect",
        "password": sandbox.api_key,
        "host": sandbox.base_url,
    }
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    assert sandbox.base_url.endswith("/api")
    assert sandbox.api_key not in repr(sandbox)


def test_fixture_starts_from_seed_zero_and_serves_the_api(clubcollect_sandbox):
    company_id = seed_id(0, "company", 0)
    assert clubcollect_sandbox.state()["companies"][0] == company_id
    response = requests.get(
        f"{clubcollect_sandbox.base_url}/v2/companies/{company_id}/tickets/unanswered",
        headers={"Authorization": f"ApiKey {clubcollect_sandbox.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["page"]["total_entries"] > 0
    assert [entry["status"] for entry in clubcollect_sandbox.requests()] == [200]


def test_fixture_handle_offers_the_control_api(clubcollect_sandbox):
    view = clubcollect_sandbox.add_invoice("inv-x", "club-x", [ticket("hi", "CUSTOMER", "2026-01-01T00:00:00Z")])
    assert view["status"] == "unanswered"
    clubcollect_sandbox.set_faults(script=[{"fault": "drop"}], latency_ms=1)
    assert clubcollect_sandbox.invoice("inv-x")["company_id"] == "club-x"
    assert clubcollect_sandbox.sandbox_state is clubcollect_sandbox.server.state


@pytest.fixture
def left_dirty(clubcollect_sandbox_server):
    """What an earlier test may leave on the session's server: data, faults and logged requests."""
    state = clubcollect_sandbox_server.state
    state.add_invoice("inv-x", "club-x", [ticket("hi", "CUSTOMER", "2026-01-01T00:00:00Z")])
    state.set_faults({"script": [{"fault": "drop"}], "latency_ms": 1})
    # Answered, as every request on a server is: an unanswered one would stay counted as in flight.
    state.set_request_status(state.log_request({"method": "GET", "path": "/api/v2/invoices/inv-x/tickets"}), 200)


def test_fixture_resets_between_tests(left_dirty, clubcollect_sandbox):
    # left_dirty is set up first (fixtures follow the signature's order): had clubcollect_sandbox
    # not reset, inv-x and the fault would still be there.
    assert "inv-x" not in clubcollect_sandbox.state()["invoices"]
    assert clubcollect_sandbox.companies()[0]["company_id"] == seed_id(0, "company", 0)
    assert clubcollect_sandbox.faults()["script"] == []
    assert clubcollect_sandbox.faults()["latency_ms"] == 0
    assert clubcollect_sandbox.requests() == []


USER_TEST = textwrap.dedent(
    """
    import json, os, sys

    import requests

    AIRFLOW_LOADED_BY_PLUGIN = "airflow" in sys.modules


    def test_plugin_does_not_load_airflow():
        assert not AIRFLOW_LOADED_BY_PLUGIN


    def test_user_dag_test(clubcollect_sandbox):
        connection = json.loads(os.environ["AIRFLOW_CONN_CLUBCOLLECT_DEFAULT"])
        url = connection["host"] + "/v2/invoices/nope/tickets"
        response = requests.get(url, headers={"Authorization": "ApiKey " + connection["password"]})
        assert response.json() == {"error": "invalid_invoice_id"}


    def test_environment_is_restored():
        assert "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT" not in os.environ
    """
)


@pytest.mark.parametrize(
    "plugin_args",
    [[], ["-p", "airflow_provider_clubcollect.sandbox.pytest_plugin"]],
    ids=["entry-point", "entry-point-and-dash-p"],
)
def test_plugin_in_a_user_session(tmp_path, plugin_args):
    # A separate pytest process, as a user's project would run it: the entry point (or -p, or
    # both at once) alone must provide the fixture, and loading it must not import Airflow.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT"}
    if "clubcollect" not in {ep.name for ep in entry_points(group="pytest11")}:
        # The package is installed without its entry point (an editable install older than the
        # pyproject entry): declare the same entry point in a stand-in distribution.
        dist_info = tmp_path / "site" / "clubcollect_entry_point-0.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: clubcollect-entry-point\nVersion: 0\n")
        (dist_info / "entry_points.txt").write_text(
            "[pytest11]\nclubcollect = airflow_provider_clubcollect.sandbox.pytest_plugin\n"
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(dist_info.parent), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *plugin_args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
