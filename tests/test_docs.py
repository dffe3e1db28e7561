"""The connection page's environment variables mean what the page says they mean."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT

CONNECTION_PAGE = (REPO_ROOT / "docs" / "connection.rst").read_text()


def _exported(form_start: str) -> str:
    """The value of the page's ``export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'`` line that starts so."""
    values = re.findall(r"export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='([^']+)'", CONNECTION_PAGE)
    (value,) = [v for v in values if v.startswith(form_start)]
    return value


@pytest.mark.parametrize(
    ("form_start", "base_url", "timeout", "max_retries"),
    [
        ('{"conn_type"', "https://sandbox.clubcollect.com/api", 60.0, 3),
        ("clubcollect://:YOUR_KEY@sandbox", "https://sandbox.clubcollect.com/api", 60.0, 3),
        ("clubcollect://:YOUR_KEY@http%3A", "http://127.0.0.1:8765/api", 30.0, 5),
    ],
)
def test_connection_page_env_vars_mean_what_it_says(
    form_start: str, base_url: str, timeout: float, max_retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", _exported(form_start))
    settings = ClubCollectHook().settings
    assert (settings.base_url, settings.api_key, settings.timeout, settings.max_retries) == (
        base_url,
        "YOUR_KEY",
        timeout,
        max_retries,
    )


def test_connection_page_host_port_schema_uri_means_https(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    uri = "clubcollect://:KEY@127.0.0.1:8765/api"
    assert f"``{uri}``" in CONNECTION_PAGE
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", uri)
    assert ClubCollectHook().settings.base_url == "https://127.0.0.1:8765/api"
