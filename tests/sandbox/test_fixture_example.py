"""The pytest fixture example shown on the docs' sandbox page (docs/sandbox.rst includes it)."""

from __future__ import annotations

# [START howto_sandbox_fixture]
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.sandbox import ticket

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox import SandboxHandle


def test_archive(clubcollect_sandbox: SandboxHandle) -> None:
    clubcollect_sandbox.reset(seed=None)  # start empty
    now = datetime.now(timezone.utc)
    clubcollect_sandbox.add_invoice("inv-1", "club-1", [ticket("Ik wil niet betalen", "CUSTOMER", now)])

    ClubCollectHook().archive_tickets("inv-1")  # clubcollect_default points at the sandbox

    assert clubcollect_sandbox.invoice("inv-1")["status"] == "archived"
    # [END howto_sandbox_fixture]
