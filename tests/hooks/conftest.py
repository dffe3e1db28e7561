from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.conftest import fast_backoff

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer

API_KEY = "test-key-7d1f0c9a2b4e6f8a0c2e4f6a8b0d2e4f6a8c0e2a"


@pytest.fixture
def api(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """A pytest-httpserver standing in for ClubCollect, with ``clubcollect_default`` pointed at it."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT",
        json.dumps({"conn_type": "clubcollect", "password": API_KEY, "host": httpserver.url_for("/api")}),
    )
    return httpserver


@pytest.fixture
def hook(api: HTTPServer):
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    with ClubCollectHook(backoff=fast_backoff()) as hook:
        yield hook
