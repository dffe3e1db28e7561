"""Registration with Airflow: entry point, provider info schema, connection form, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

DIST = "airflow-provider-clubcollect"


def _airflow(*args: str) -> subprocess.CompletedProcess[str]:
    airflow = Path(sys.executable).with_name("airflow")
    return subprocess.run([str(airflow), *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_provider_info_validates_against_airflow_schema() -> None:
    import airflow
    import jsonschema

    from airflow_provider_clubcollect.get_provider_info import get_provider_info

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == DIST == metadata.metadata(DIST)["Name"]
    assert info["versions"] == [metadata.version(DIST)]


def test_entry_point_points_at_get_provider_info() -> None:
    (entry_point,) = [ep for ep in metadata.entry_points(group="apache_airflow_provider") if ep.dist.name == DIST]
    assert entry_point.value == "airflow_provider_clubcollect.get_provider_info:get_provider_info"
    assert entry_point.load()()["package-name"] == DIST


def test_connection_form_is_declared_as_data() -> None:
    from airflow_provider_clubcollect.get_provider_info import get_provider_info
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "clubcollect"
    assert set(conn["conn-fields"]) == {"timeout", "max_retries"}
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API key"
    assert {"schema", "login", "port"} <= set(conn["ui-field-behaviour"]["hidden-fields"])
    assert "host" in conn["ui-field-behaviour"]["placeholders"]
    # Airflow 2.11 to 3.1 build the form from the hook's methods: the same fields, from the same data.
    behaviour = ClubCollectHook.get_ui_field_behaviour()
    assert behaviour == {key.replace("-", "_"): value for key, value in conn["ui-field-behaviour"].items()}
    assert set(behaviour) == {"hidden_fields", "relabeling", "placeholders"}, "the names Airflow 2.11's schema requires"


def test_providers_manager_loads_it_without_deprecation_warnings() -> None:
    """Run in a fresh interpreter: the providers manager is a process-wide singleton."""
    script = textwrap.dedent(
        """
        import json, logging, warnings
        import airflow
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
        logging.getLogger().addHandler(Keep())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from airflow.providers_manager import ProvidersManager
            version = tuple(int(part) for part in airflow.__version__.split(".")[:2])
            if (3, 0) <= version < (3, 2):
                # Airflow 3.0 and 3.1 build the form with wtforms mocked (no FAB), on a fresh
                # providers manager: what their UI shows.
                from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
                (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "clubcollect"]
                labels = {f"extra__clubcollect__{k}": v["schema"]["title"] for k, v in meta.extra_fields.items()}
            pm = ProvidersManager()
            hook = pm.hooks["clubcollect"]
            if not (3, 0) <= version < (3, 2):
                # Airflow 3.2+: the provider info's conn-fields; 2.11: the hook's wtforms fields.
                widgets = {k: v.field for k, v in pm.connection_form_widgets.items() if "clubcollect" in k}
                labels = {k: v["schema"]["title"] if isinstance(v, dict) else str(v.args[0])
                          for k, v in widgets.items()}
            behaviour = pm.field_behaviours["clubcollect"]
            providers = list(pm.providers)
        print(json.dumps({
            "warnings": [f"{w.category.__name__}: {w.message} ({w.filename})" for w in caught],
            "logs": [r for r in records if "clubcollect" in r.lower()],
            "hook": [hook.hook_class_name, hook.connection_id_attribute_name, hook.hook_name],
            "widgets": labels,
            "behaviour": behaviour,
            "providers": providers,
        }))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ours = [w for w in result["warnings"] if "Deprecat" in w and ("clubcollect" in w.lower())]
    assert ours == []
    assert result["logs"] == []
    assert result["hook"] == [
        "airflow_provider_clubcollect.hooks.clubcollect.ClubCollectHook",
        "clubcollect_conn_id",
        "ClubCollect",
    ]
    # The same fields and labels on every Airflow: from the provider info (3.2+) or the hook's methods.
    assert result["widgets"] == {
        "extra__clubcollect__max_retries": "Max retries",
        "extra__clubcollect__timeout": "Timeout (seconds per request)",
    }
    assert result["behaviour"]["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert DIST in result["providers"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("providers", "list", "-o", "json"), DIST),
        (("providers", "hooks", "-o", "json"), "clubcollect"),
    ],
)
def test_airflow_cli_lists_the_provider(command: tuple[str, ...], expected: str) -> None:
    done = _airflow(*command)
    assert done.returncode == 0, done.stderr
    # Airflow before 3.1 logs to stdout ahead of the JSON: "[2026-...] {providers_manager.py...} INFO - ...".
    start = re.search(r"^\[(?!\d{4}-)", done.stdout, re.MULTILINE)
    assert start is not None, done.stdout[-4000:]
    rows = json.loads(done.stdout[start.start() :])
    if command[1] == "list":
        assert any(row["package_name"] == DIST for row in rows)
    else:
        (row,) = [row for row in rows if row["connection_type"] == expected]
        assert row["class"] == "airflow_provider_clubcollect.hooks.clubcollect.ClubCollectHook"
        assert row["package_name"] == DIST
        assert row["hook_name"] == "ClubCollect"
