"""docs/getting-started.rst, followed to the letter: its commands, read from the page, in a fresh home.

A new user's machine: an empty ``HOME`` (the page's ``~/clubcollect-venv`` and ``~/airflow`` land in
it), a virtual environment made by the page's own commands, the provider from the wheel built from
this checkout, Airflow under constraints.  Two substitutions only, each checked to apply once: the
wheel in place of the name ``airflow-provider-clubcollect`` (not on PyPI yet) and the checkout's
pinned constraints in place of Airflow's constraints URL (the test runs without the network).  The
sandbox block runs in the background, as the page's "second terminal".

Slow (a fresh venv from pip's cache, Airflow's database, a DAG run: about two minutes), so
``make test`` leaves it out and ``make getting-started`` runs it (CI too): it runs only when
``CLUBCOLLECT_GETTING_STARTED=1``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PAGE = (REPO_ROOT / "docs" / "getting-started.rst").read_text()
DAG_ID = "clubcollect_export_tickets"

pytestmark = pytest.mark.skipif(
    os.environ.get("CLUBCOLLECT_GETTING_STARTED") != "1",
    reason="a fresh venv and a DAG run (about 2 minutes): run it with make getting-started",
)


def block(name: str) -> str:
    """The commands of the page's ``code-block:: bash`` with ``:name: name``."""
    match = re.search(
        rf"^\.\. code-block:: bash\n    :name: {re.escape(name)}\n\n((?:    .*\n|\n)+)", PAGE, re.MULTILINE
    )
    assert match, f"no bash block named {name} in docs/getting-started.rst"
    return "\n".join(line[4:] for line in match[1].splitlines()).strip() + "\n"


def substituted(text: str, old: str, new: str) -> str:
    assert len(re.findall(old, text)) == 1, f"the page's command changed: {old!r} should occur once in {text}"
    return re.sub(old, new, text)


def test_the_getting_started_page_from_the_wheel(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(REPO_ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("airflow_provider_clubcollect-*.whl")

    install = substituted(block("getting-started-install"), r"(?<= )airflow-provider-clubcollect(?= )", str(wheel))
    install = substituted(
        install, r'CONSTRAINT_URL="https://[^"]+"', f'CONSTRAINT_URL="{REPO_ROOT}/constraints-${{PYTHON_VERSION}}.txt"'
    )
    sandbox_log = tmp_path / "sandbox.log"
    script = "\n".join(
        [
            "set -euo pipefail",
            install,
            # The second terminal: the sandbox in the background, stopped when the script ends.
            f"( {block('getting-started-sandbox')} ) > {sandbox_log} 2>&1 &",
            "trap 'kill %1' EXIT",
            f"for _ in $(seq 120); do grep -q 'Press Ctrl-C' {sandbox_log} && break; sleep 0.5; done",
            block("getting-started-airflow"),
            block("getting-started-run"),
            f"airflow dags list-runs {DAG_ID} -o json > {tmp_path}/runs.json",
        ]
    )
    # A new user's environment: their own HOME, pip's settings and cache, nothing of this test's Airflow.
    env = {name: value for name, value in os.environ.items() if name.startswith("PIP_") or name in ("PATH", "LANG")}
    env |= {"HOME": str(home), "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))}
    done = subprocess.run(
        ["bash", "-c", script], cwd=home, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = done.stdout + done.stderr
    # The sandbox's log exists only once the page's install step passed: a failure before it shows the output.
    started = sandbox_log.read_text()[-2000:] if sandbox_log.exists() else "(not started: the install failed)"
    assert done.returncode == 0, f"{output[-6000:]}\nsandbox:\n{started}"

    # The connection line the page exports is the one the sandbox printed: its key survives restarts.
    printed = re.search(r"^AIRFLOW_CONN_CLUBCOLLECT_DEFAULT=(.+)$", sandbox_log.read_text(), re.MULTILINE)
    assert printed, sandbox_log.read_text()
    assert f"export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT={printed[1]}" in block("getting-started-airflow")
    # The provider came from the wheel into the page's venv, and the DAG from the package data.
    (packaged,) = (home / "clubcollect-venv").glob("lib/python3.*/site-packages/airflow_provider_clubcollect")
    assert (packaged / "example-dags" / f"{DAG_ID}.py").is_file()
    assert [path.name for path in (home / "airflow" / "dags").glob("*.py")] == [f"{DAG_ID}.py"]
    # Airflow may print a warning before its JSON.
    listed = [line for line in (tmp_path / "runs.json").read_text().splitlines() if line.startswith("[")]
    (run,) = json.loads(listed[-1])
    assert run["state"] == "success", output[-6000:]
