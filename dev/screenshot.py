"""`make screenshot`: the ClubCollect connection form in Airflow's UI, for docs/connection.rst.

Starts Airflow's api-server alone (SQLite, 127.0.0.1, a throwaway home in ``.screenshot``), stores
a ClubCollect connection through the REST API, and takes the form's two screenshots with headless
Chromium: ``docs/img/connection-form.png`` and ``docs/img/connection-form-extras.png``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from dev.deployment import AIRFLOW, DeploymentError, Stack, airflow_env, free_port, run_command, say, start_api

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".screenshot"
IMAGES = REPO / "docs" / "img"
LABELS = ("API key", "Base URL", "Timeout", "Max retries")


def main() -> int:
    from playwright.sync_api import sync_playwright

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "dags").mkdir(parents=True)
    env = airflow_env(WORK, free_port(), f"sqlite:///{WORK / 'airflow.db'}")
    stack = Stack(WORK)
    key = "screenshot-key-" + secrets.token_hex(8)
    profile = tempfile.mkdtemp(prefix="screenshot-chromium-")
    try:
        say("airflow db migrate (SQLite), then the api-server")
        run_command([AIRFLOW, "db", "migrate"], env=env)
        api = start_api(stack, env)
        connection = {
            "connection_id": "clubcollect_default",
            "conn_type": "clubcollect",
            "description": "ClubCollect partner API",
            "host": "sandbox.clubcollect.com",
            "password": key,
            "extra": json.dumps({"timeout": 30, "max_retries": 5}),
        }
        api.call("POST", "/connections", connection)
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile,
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
                viewport={"width": 1280, "height": 1000},
            )
            browser.add_cookies([{"name": "_token", "value": api.token, "url": api.base}])
            page = browser.new_page()
            page.goto(f"{api.base}/connections", wait_until="networkidle")
            page.get_by_text("clubcollect_default", exact=True).first.wait_for(timeout=30000)
            page.get_by_role("button", name="Edit Connection").first.click()
            page.get_by_text("API key").first.wait_for(timeout=30000)
            page.wait_for_timeout(1000)
            dialog = page.get_by_role("dialog")
            dialog.screenshot(path=str(IMAGES / "connection-form.png"))
            text = dialog.inner_text()
            # The typed extras are in a second section of the accordion (it opens one at a time).
            page.get_by_text("Extra Fields", exact=True).first.click()
            page.get_by_text("Max retries").first.wait_for(timeout=30000)
            page.wait_for_timeout(1000)
            dialog.screenshot(path=str(IMAGES / "connection-form-extras.png"))
            text += dialog.inner_text()
            browser.close()
        if key in text or not all(label in text for label in LABELS):
            raise DeploymentError(f"the form shows the key, or lacks one of {LABELS}: {text[:2000]}")
        say(f"the UI shows the ClubCollect form: screenshots in {IMAGES.relative_to(REPO)}")
        return 0
    except DeploymentError as error:
        say(f"FAILED: {error} (logs in {WORK / 'logs'})")
        return 1
    finally:
        stack.stop_all()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
