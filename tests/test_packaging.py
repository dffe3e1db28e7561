"""What the distribution ships and declares: license files, project URLs, Pythons."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_1_PLUS
from tests.conftest import REPO_ROOT

DIST = "airflow-provider-clubcollect"
URL_NAMES = {"Documentation", "Source", "Changelog", "Issues"}


def _project_urls() -> dict[str, str]:
    entries = metadata.metadata(DIST).get_all("Project-URL") or []
    return dict(tuple(part.strip() for part in entry.split(",", 1)) for entry in entries)  # type: ignore[misc]


def test_license_is_the_apache_2_text_and_notice_names_it() -> None:
    license_text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert "Apache License, Version 2.0" in (REPO_ROOT / "NOTICE").read_text()
    assert metadata.metadata(DIST)["License-Expression"] == "Apache-2.0"


def test_metadata_carries_the_four_project_urls() -> None:
    urls = _project_urls()
    assert set(urls) == URL_NAMES
    assert all(url.startswith("https://") for url in urls.values())


@pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="Airflow reads documentation-url from 3.1")
def test_airflow_shows_the_documentation_url() -> None:
    """Airflow's providers page reads ``documentation-url``, which Airflow takes from the Documentation URL."""
    script = textwrap.dedent(
        f"""
        import json
        from airflow.providers_manager import ProvidersManager
        print(json.dumps(ProvidersManager().providers[{DIST!r}].data.get("documentation-url")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    # Airflow before 3.3 keeps the space after the label's comma in the URL.
    assert json.loads(done.stdout.strip().splitlines()[-1]).strip() == _project_urls()["Documentation"]


def test_every_supported_python_has_a_classifier_and_constraints() -> None:
    supported = re.search(r"^SUPPORTED_PYTHONS := (.+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert supported is not None
    versions = supported[1].split()
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    classifiers = metadata.metadata(DIST).get_all("Classifier") or []
    airflow_pins = set()
    for version in versions:
        assert f"Programming Language :: Python :: {version}" in classifiers
        pins = (REPO_ROOT / f"constraints-{version}.txt").read_text()
        airflow_pins.update(re.findall(r"^apache-airflow==(.+)$", pins, re.MULTILINE))
    # One Airflow for every Python: the tests on each prove the same release.
    assert len(airflow_pins) == 1, airflow_pins


def test_the_first_release_is_what_the_changelog_says() -> None:
    """The changelog opens with this version, dated or unreleased, and lists no changes against a release nobody had."""
    from airflow_provider_clubcollect import __version__

    changelog = (REPO_ROOT / "docs" / "changelog.rst").read_text()
    sections = re.findall(r"^(.+)\n-+\n", changelog, re.MULTILINE)
    assert sections == [f"{__version__} (unreleased)"] or re.fullmatch(
        rf"{re.escape(__version__)} \(\d{{4}}-\d{{2}}-\d{{2}}\)", sections[0]
    ), sections
    assert metadata.version(DIST) == __version__
    if len(sections) == 1:  # the first release: what it holds, not what changed
        for word in ("Unreleased", "breaking", "moved from", "renamed", "withdrawn", "instead of", "was 3."):
            assert word not in changelog, word
