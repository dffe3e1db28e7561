"""Guides never show a template variable the docs warn about (issue 26): in a run triggered without a
logical date (Airflow 3's default for ``airflow dags trigger``, the REST API and the UI), ``ds``,
``logical_date``, ``data_interval_end`` and their kin are undefined and fail the task."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLE_DAGS, REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

#: The variables docs/deploying.rst warns about, with the rest of the logical date's family.
WARNED = {
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
    "logical_date",
    "execution_date",
    "data_interval_start",
    "data_interval_end",
    "prev_ds",
    "next_ds",
}
PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.rst")])
_EXPRESSION = re.compile(r"\{[{%]-?(.*?)-?[}%]\}", re.DOTALL)
_FILTER = re.compile(r"\|\s*\w+")
_NAME = re.compile(r"(?<![\w.'\"])([A-Za-z_]\w*)")


def snippets(page: Path) -> list[str]:
    """The code a page shows: rst ``code-block``, ``::`` and directive bodies, Markdown fences (not prose)."""
    text = page.read_text()
    if page.suffix == ".md":
        return re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    blocks = []
    for match in re.finditer(r"(?:\.\. code-block::[^\n]*|::)\n((?:\n|[ \t]+[^\n]*\n)+)", text):
        blocks.append(match.group(1))
    return blocks


def warned_names(code: str) -> set[str]:
    """The warned variables a snippet's Jinja expressions read (a name, not an attribute or a string)."""
    expressions = [_FILTER.sub("", expression) for expression in _EXPRESSION.findall(code)]
    return {name for expression in expressions for name in _NAME.findall(expression)} & WARNED


def test_the_docs_still_warn_about_these() -> None:
    deploying = (REPO_ROOT / "docs" / "deploying.rst").read_text()
    for name in ("data_interval_end", "logical_date", "ds"):
        assert f"``{name}``" in deploying


def test_the_check_finds_a_warned_variable() -> None:
    assert warned_names('output_path="s3://b/{{ ds }}/x.jsonl"') == {"ds"}
    assert warned_names("{{ data_interval_end | ts }}") == {"data_interval_end"}
    assert warned_names("{{ dag_run.run_after }} {{ run_id | replace(':', '') }} {{ params.ds }}") == set()
    page = REPO_ROOT / "docs" / "operators" / "fetch_company_tickets.rst"
    assert snippets(page), "the page's code blocks are found"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in PAGES])
def test_no_guide_snippet_uses_a_warned_template_variable(page: Path) -> None:
    found = {name for code in snippets(page) for name in warned_names(code)}
    assert not found, (
        f"{page.name} shows {sorted(found)} in a snippet: use {{{{ dag_run.run_after }}}} or {{{{ run_id }}}}"
    )


@pytest.mark.parametrize("dag_file", sorted(p.name for p in EXAMPLE_DAGS.glob("*.py")))
def test_no_example_dag_uses_a_warned_template_variable(dag_file: str) -> None:
    assert not warned_names((EXAMPLE_DAGS / dag_file).read_text())
