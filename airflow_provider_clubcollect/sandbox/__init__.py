"""A local, in-memory ClubCollect Tickets API for tests, demos and ``airflow dags test``.

Run it with ``python -m airflow_provider_clubcollect.sandbox``, in Python with
:class:`SandboxServer`, or in pytest with the ``clubcollect_sandbox`` fixture.

Importing this package is cheap: the names below load their modules (and the web stack) on
first use, because pytest imports the package for its plugin in every test session.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.client import SandboxClient, SandboxControlError, ticket
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle
    from airflow_provider_clubcollect.sandbox.seed import seed_state
    from airflow_provider_clubcollect.sandbox.server import SandboxServer
    from airflow_provider_clubcollect.sandbox.state import SandboxState

__all__ = [
    "SandboxClient",
    "SandboxControlError",
    "SandboxHandle",
    "SandboxServer",
    "SandboxState",
    "seed_state",
    "ticket",
]

_MODULES = {
    "SandboxClient": "client",
    "SandboxControlError": "client",
    "ticket": "client",
    "SandboxHandle": "handle",
    "SandboxServer": "server",
    "SandboxState": "state",
    "seed_state": "seed",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
