"""Reading a ``clubcollect`` connection: base URL rules and extras, before any request."""

from __future__ import annotations

import pytest

from airflow_provider_clubcollect.connection import resolve_base_url
from airflow_provider_clubcollect.exceptions import ClubCollectValidationError
from tests.conftest import conn_settings


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, "https://app.clubcollect.com/api"),
        ("", None, "https://app.clubcollect.com/api"),
        ("sandbox.clubcollect.com", None, "https://sandbox.clubcollect.com/api"),
        ("sandbox.clubcollect.com", 8443, "https://sandbox.clubcollect.com:8443/api"),
        ("https://sandbox.clubcollect.com/api/", None, "https://sandbox.clubcollect.com/api"),
        ("https://proxy.example.com/clubcollect/api", None, "https://proxy.example.com/clubcollect/api"),
        ("http://127.0.0.1:8765/api", None, "http://127.0.0.1:8765/api"),
        ("http://127.8.9.10:8765/api", None, "http://127.8.9.10:8765/api"),
        ("http://localhost:8765/api", None, "http://localhost:8765/api"),
        ("http://[::1]:8765/api", None, "http://[::1]:8765/api"),
    ],
)
def test_base_url(host: str | None, port: int | None, expected: str) -> None:
    assert resolve_base_url(host, port=port) == expected


@pytest.mark.parametrize(
    ("host", "match"),
    [
        ("http://app.clubcollect.com/api", "plain http:// would send the API key in clear text"),
        ("http://10.0.0.5/api", "only for a loopback host"),
        ("http://localhost.evil.com/api", "only for a loopback host"),
        ("ftp://app.clubcollect.com/api", "scheme must be https"),
        ("https://app.clubcollect.com/api?api_key=x", "must not carry a query"),
        ("https://user:pw@app.clubcollect.com/api", "must not carry a query, fragment or credentials"),
    ],
)
def test_unsafe_base_url_is_refused(host: str, match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=match):
        resolve_base_url(host, conn_id="cc")


def test_extras_are_read_and_checked() -> None:
    settings = conn_settings("cc", host=None, password=" key ", extra={"timeout": "12.5", "max_retries": "3"})
    assert (settings.timeout, settings.max_retries, settings.api_key) == (12.5, 3, "key")
    assert settings.connect_timeout == 10.0
    assert "key" not in repr(settings)


def test_extras_typed_into_a_form_read_as_python_numbers_and_blank_as_the_default() -> None:
    settings = conn_settings("cc", host=None, password="k", extra={"timeout": " .5 ", "max_retries": " 1_0 "})
    assert (settings.timeout, settings.max_retries) == (0.5, 10)
    assert conn_settings("cc", host=None, password="k", extra={"timeout": " "}).timeout == 30


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"timeout": 0}, r"extra 'timeout' must be a finite number above 0, got 0"),
        ({"timeout": "soon"}, r"extra 'timeout' must be a finite number above 0, got 'soon'"),
        ({"max_retries": -1}, r"extra 'max_retries' must be an integer from 0 to 100, got -1"),
        ({"max_retries": 2.5}, r"extra 'max_retries' must be an integer from 0 to 100, got 2\.5"),
    ],
)
def test_bad_extras_name_the_connection_and_value(extra: dict[str, object], match: str) -> None:
    with pytest.raises(ClubCollectValidationError, match=rf"Connection 'cc': {match}"):
        conn_settings("cc", host=None, password="key", extra=extra)


def test_hook_arguments_override_extras() -> None:
    settings = conn_settings(
        "cc", host=None, password="k", extra={"timeout": 5, "max_retries": 1}, timeout=2, max_retries=0
    )
    assert (settings.timeout, settings.max_retries) == (2, 0)


@pytest.mark.parametrize(
    "host", ["https://app.clubcollect.com/api?api_key=SECRETKEY", "https://user:SECRETKEY@app.clubcollect.com/api"]
)
def test_refused_base_url_is_named_without_its_query_or_credentials(host: str) -> None:
    with pytest.raises(ClubCollectValidationError) as info:
        resolve_base_url(host, conn_id="cc")
    assert "SECRETKEY" not in str(info.value)
    assert "https://app.clubcollect.com/api" in str(info.value)


def test_extras_as_older_airflow_forms_wrote_them_are_read() -> None:
    # Airflow's connection form once stored extras as "extra__<conn type>__<name>".
    extra = {"extra__clubcollect__timeout": "7", "extra__clubcollect__max_retries": 2}
    settings = conn_settings("cc", host=None, password="key", extra=extra)
    assert (settings.timeout, settings.max_retries) == (7.0, 2)
