"""``python -m airflow_provider_clubcollect.examples``: the example DAGs copied into a DAGs folder."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from tests.conftest import EXAMPLE_DAGS

if TYPE_CHECKING:
    from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_clubcollect.examples", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_copies_every_example_dag(tmp_path: Path) -> None:
    done = run(str(tmp_path / "dags"))
    assert done.returncode == 0, done.stderr
    copied = sorted(path.name for path in (tmp_path / "dags").iterdir())
    assert copied == sorted(path.name for path in EXAMPLE_DAGS.glob("*.py"))
    assert all((tmp_path / "dags" / name).read_bytes() == (EXAMPLE_DAGS / name).read_bytes() for name in copied)
    assert "Run one with: airflow dags test clubcollect_export_tickets" in done.stdout


def test_copies_the_dags_named_and_keeps_a_changed_file(tmp_path: Path) -> None:
    mine = tmp_path / "clubcollect_archive_stale.py"
    mine.write_text("# my own changes\n")
    done = run(str(tmp_path), "clubcollect_export_tickets", "clubcollect_archive_stale")
    assert done.returncode == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "clubcollect_archive_stale.py",
        "clubcollect_export_tickets.py",
    ]
    assert mine.read_text() == "# my own changes\n"
    assert f"left {mine} alone: it differs from the example (--force overwrites it)" in done.stderr

    assert run(str(tmp_path), "clubcollect_archive_stale", "--force").returncode == 0
    assert mine.read_bytes() == (EXAMPLE_DAGS / mine.name).read_bytes()


def test_an_unknown_dag_id_names_the_examples(tmp_path: Path) -> None:
    done = run(str(tmp_path), "clubcollect_export")
    assert done.returncode == 2
    assert "no example DAG clubcollect_export; the examples are: clubcollect_acknowledge_new_messages," in done.stderr
    assert not any(tmp_path.iterdir())
