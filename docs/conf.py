"""Sphinx configuration for the airflow-provider-clubcollect documentation (`make docs`)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

# Autodoc imports the provider, which imports Airflow: give Airflow a throwaway home so that the
# build neither reads nor writes the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="clubcollect-docs-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from airflow_provider_clubcollect import __version__  # noqa: E402

project = "airflow-provider-clubcollect"
author = "airflow-provider-clubcollect developers"
copyright = "2026, the airflow-provider-clubcollect developers"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build"]
nitpicky = False

# Autodoc: members in source order, type hints in the description next to the :param: text.
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"

html_theme = "furo"
html_title = f"ClubCollect provider {release}"
html_static_path: list[str] = []
html_theme_options = {
    "source_repository": "https://github.com/clubcollect/airflow-provider-clubcollect",
    "source_branch": "main",
    "source_directory": "docs/",
}
