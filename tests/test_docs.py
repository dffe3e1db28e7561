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


# --- the sandbox page names every option, control call, fault setting, kind and field the code has ---

SANDBOX_PAGE = (REPO_ROOT / "docs" / "sandbox.rst").read_text()


def _between(page: str, start: str, end: str) -> str:
    return page[page.index(start) : page.index(end)]


def _first_cells(table: str) -> list[str]:
    """The first cell of each row of an RST list-table, the header row left out."""
    return re.findall(r"^   \* - (.+)$", table, re.MULTILINE)[1:]


def test_sandbox_page_lists_every_command_line_option() -> None:
    from airflow_provider_clubcollect.sandbox.__main__ import build_parser

    section = _between(SANDBOX_PAGE, ".. _sandbox-options:", ".. _sandbox-control-api:")
    documented = [re.match(r"``(--[a-z-]+)", cell)[1] for cell in _first_cells(section)]  # type: ignore[index]
    in_code = [option for action in build_parser()._actions for option in action.option_strings]
    assert documented == [option for option in in_code if option.startswith("--") and option != "--help"]


def test_sandbox_page_lists_every_control_call() -> None:
    from fastapi.routing import APIRoute

    from airflow_provider_clubcollect.sandbox.app import CONTROL_PREFIX, create_app
    from airflow_provider_clubcollect.sandbox.state import SandboxState

    section = _between(SANDBOX_PAGE, ".. _sandbox-control-api:", ".. _sandbox-faults:")
    documented = {tuple(re.fullmatch(r"``([A-Z]+) (\S+)``", cell).groups()) for cell in _first_cells(section)}  # type: ignore[union-attr]
    routes = [route for route in create_app(SandboxState()).routes if isinstance(route, APIRoute)]
    in_code = {
        (method, route.path) for route in routes if route.path.startswith(CONTROL_PREFIX) for method in route.methods
    }
    assert documented == in_code


def _default(value: object) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_sandbox_page_lists_every_fault_setting_kind_and_field() -> None:
    import dataclasses

    from airflow_provider_clubcollect.sandbox.faults import FAULTS, Fault, FaultSettings

    settings_table, kinds_table = _between(SANDBOX_PAGE, ".. _sandbox-faults:", ".. _sandbox-budget:").split(
        "Each scripted fault is an object"
    )
    documented = {re.fullmatch(r"``(\w+)``", cell)[1] for cell in _first_cells(settings_table)}  # type: ignore[index]
    assert documented == {item.name for item in dataclasses.fields(FaultSettings) if item.init}
    # Every kind with its own fields and their defaults: "``error`` (``status``, 500)".
    common = {item.name for item in dataclasses.fields(Fault)}
    assert {"method", "path_regex"} == common
    assert all(f"``{name}``" in kinds_table for name in common)
    documented_kinds = {
        match[1]: re.findall(r"``(\w+)``, ([^)]+)", match[2] or "")
        for match in (re.fullmatch(r"``(\w+)``(?: \((.+)\))?", cell) for cell in _first_cells(kinds_table))
        if match
    }
    assert documented_kinds == {
        name: [(item.name, _default(item.default)) for item in dataclasses.fields(kind) if item.name not in common]
        for name, kind in FAULTS.items()
    }


def test_readme_getting_started_is_the_pages() -> None:
    """The README's first commands are docs/getting-started.rst's, which tests/test_getting_started.py runs."""
    readme = (REPO_ROOT / "README.md").read_text()
    (commands,) = re.findall(r"^## Getting started\n.*?```bash\n(.*?)```", readme, re.DOTALL | re.MULTILINE)
    page_lines = {line.strip() for line in (REPO_ROOT / "docs" / "getting-started.rst").read_text().splitlines()}
    lines = [line for line in commands.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 11
    assert [line for line in lines if line not in page_lines] == []
