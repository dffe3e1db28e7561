"""The README's code stays true: its DAG builds with the real classes, its snippets compile."""

from __future__ import annotations

import re

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import REPO_ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.DOTALL)


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the README's DAG imports airflow.sdk (Airflow 3)")
def test_readme_dag_builds() -> None:
    (dag_code,) = [block for block in BLOCKS if "with DAG(" in block]
    namespace: dict[str, object] = {}
    exec(compile(dag_code, "README.md", "exec"), namespace)

    dag = namespace["waiting"].dag  # type: ignore[attr-defined]
    assert dag.dag_id == "clubcollect_housekeeping"
    assert sorted(dag.task_ids) == ["archive_stale", "escalate", "wait_for_unanswered"]
    assert dag.get_task("escalate").upstream_task_ids == {"wait_for_unanswered"}


def test_readme_snippets_compile() -> None:
    assert len(BLOCKS) >= 2
    for block in BLOCKS:
        compile(block, "README.md", "exec")
