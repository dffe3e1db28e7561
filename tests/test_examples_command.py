"""``python -m airflow_provider_clubcollect.examples``: the example DAGs copied into a DAGs folder.

In process (tests/test_getting_started.py runs the command itself, from the wheel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_provider_clubcollect.examples import main
from tests.conftest import EXAMPLE_DAGS

if TYPE_CHECKING:
    from pathlib import Path


def test_copies_every_example_dag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "dags")]) == 0
    copied = sorted(path.name for path in (tmp_path / "dags").iterdir())
    assert copied == sorted(path.name for path in EXAMPLE_DAGS.glob("*.py"))
    assert all((tmp_path / "dags" / name).read_bytes() == (EXAMPLE_DAGS / name).read_bytes() for name in copied)
    assert "Run one with: airflow dags test clubcollect_export_tickets" in capsys.readouterr().out


def test_copies_the_dags_named_and_keeps_a_changed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "clubcollect_archive_stale.py"
    mine.write_text("# my own changes\n")
    assert main([str(tmp_path), "clubcollect_export_tickets", "clubcollect_archive_stale"]) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "clubcollect_archive_stale.py",
        "clubcollect_export_tickets.py",
    ]
    assert mine.read_text() == "# my own changes\n"
    assert f"left {mine} alone: it differs from the example (--force overwrites it)" in capsys.readouterr().err

    assert main([str(tmp_path), "clubcollect_archive_stale", "--force"]) == 0
    assert mine.read_bytes() == (EXAMPLE_DAGS / mine.name).read_bytes()


def test_an_unknown_dag_id_names_the_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), "clubcollect_export"])
    assert info.value.code == 2
    message = "no example DAG clubcollect_export; the examples are: clubcollect_acknowledge_new_messages,"
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_broken_install_says_to_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_provider_clubcollect.examples._HERE", tmp_path / "site-packages" / "pkg")
    with pytest.raises(SystemExit, match=r"No example DAGs next to .*pkg: reinstall airflow-provider-clubcollect"):
        main([str(tmp_path / "dags")])
    assert not (tmp_path / "dags").exists()
