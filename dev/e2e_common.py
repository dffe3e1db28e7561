"""What both deployment runs use (`make e2e` on Airflow 3.3, `make e2e-airflow2` on 2.11): nothing of Airflow."""

from __future__ import annotations

import glob
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Watched(Protocol):
        def check_alive(self) -> None: ...


class E2EError(Exception):
    """A check failed, or a component did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, stack: Watched, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise E2EError("PostgreSQL is not installed (apt-get install postgresql); `make e2e` installs it.")
    return Path(found[-1]).parent
