"""Processes, PostgreSQL and Airflow's REST API, for `make e2e` (dev/e2e.py), `make e2e-airflow2`
(dev/e2e_airflow2.py) and `make screenshot` (dev/screenshot.py)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

AIRFLOW = str(Path(sys.executable).parent / "airflow")
REPO = Path(__file__).resolve().parent.parent


class DeploymentError(Exception):
    """A check failed, or a component did not come up."""


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None

    def alive(self) -> bool:
        return self.process.poll() is None


class Stack:
    """Every process started here, each in its own process group (logs in ``work/logs``), stopped in reverse order."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.components: list[Component] = []
        self.stopped: list[Component] = []

    def start(self, name: str, command: list[str], env: dict[str, str], user: str | None = None) -> Component:
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                user=user,
                cwd=self.work,
            )
        self.components.append(Component(name, process, log))
        return self.components[-1]

    def stop(self, component: Component, grace: float = 20.0) -> None:
        if component.alive():
            # The leader first, so that it stops its own children (the scheduler its task
            # processes, PostgreSQL its backends: SIGINT is its fast shutdown).
            with contextlib.suppress(ProcessLookupError):
                component.process.send_signal(signal.SIGINT if component.name == "postgresql" else signal.SIGTERM)
            try:
                component.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.process.pid, signal.SIGKILL)
                component.process.wait(10)
        # Children that outlived their parent (task runners, celery pool processes).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.process.pid, signal.SIGKILL)
        component.stopped = time.monotonic()
        if component in self.components:
            self.components.remove(component)
            self.stopped.append(component)

    def stop_all(self) -> None:
        for component in reversed(list(self.components)):
            self.stop(component)

    def check_alive(self) -> None:
        for c in self.components:
            if not c.alive():
                log = "\n".join(c.log.read_text(errors="replace").splitlines()[-30:])
                raise DeploymentError(f"{c.name} exited with {c.process.returncode}:\n{log}")


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so that everything started is stopped (SIGINT also when ignored)."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


_ports_given: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, and never one handed out before (the OS may pick a freed port again)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, stack: Stack, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def say(message: str) -> None:
    print(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_command(command: list[str], user: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, user=user, env=env, timeout=600, cwd="/")
    if done.returncode != 0:
        output = f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        raise DeploymentError(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{output}")
    return done.stdout


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise DeploymentError("PostgreSQL is not installed (apt-get install postgresql; make e2e installs it).")
    return Path(found[-1]).parent


def start_postgres(stack: Stack, data: Path, port: int) -> None:
    """A throwaway cluster in ``data``, run as the ``postgres`` user on 127.0.0.1, with a database ``airflow``."""
    pg = postgres_bin()
    data.mkdir(parents=True)
    shutil.chown(data, "postgres", "postgres")
    initdb = [str(pg / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"]
    run_command(initdb, "postgres")
    settings = "listen_addresses=127.0.0.1 fsync=off synchronous_commit=off full_page_writes=off max_connections=200"
    command = [str(pg / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data)]
    command += [arg for setting in settings.split() for arg in ("-c", setting)]
    stack.start("postgresql", command, {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}, user="postgres")
    ready = [str(pg / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    wait_until("PostgreSQL", lambda: subprocess.run(ready).returncode == 0, 60, stack, 0.5)
    run_command([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"])


def start_sandbox(stack: Stack, port: int, key: str, *args: str) -> Any:
    """The ClubCollect sandbox on 127.0.0.1 accepting ``key``; its control client once it answers."""
    from airflow_provider_clubcollect.sandbox.client import SandboxClient

    command = [sys.executable, "-m", "airflow_provider_clubcollect.sandbox", "--port", str(port), "--api-key", key]
    stack.start("sandbox", [*command, *args], {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)})
    client = SandboxClient(f"http://127.0.0.1:{port}/_sandbox")

    def up() -> bool:
        with contextlib.suppress(Exception):
            return bool(client.state())
        return False

    wait_until("the sandbox", up, 60, stack, 0.5)
    return client


def loopback_only(stack: Stack) -> tuple[bool, str]:
    """Whether every socket the stack's processes listen on is on loopback, and what was found."""
    import psutil

    pids: set[int] = set()
    for component in stack.components:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(component.process.pid)
            pids |= {parent.pid, *(c.pid for c in parent.children(recursive=True))}
    listening = [
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    outside = [entry for entry in listening if entry[0] not in ("127.0.0.1", "::1")]
    return bool(listening) and not outside, f"all {len(listening)} listening sockets are on loopback {outside}"


def airflow_env(home: Path, api_port: int, database: str) -> dict[str, str]:
    """What every Airflow component shares: its home, the metadata database, the API and its auth."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")}
    return env | {
        "PYTHONPATH": str(REPO),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        # Log servers are not started (--skip-serve-logs); should one start, it binds a free port.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }


class Api:
    """Airflow's REST API, with a token from the simple auth manager."""

    def __init__(self, base: str, password: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.trust_env = False
        answer = self.session.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        answer.raise_for_status()
        self.token: str = answer.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        answer = self.session.request(method, f"{self.base}/api/v2{path}", json=body, timeout=60)
        if answer.status_code not in ok:
            raise DeploymentError(f"{method} {path} answered {answer.status_code}: {answer.text[:2000]}")
        return answer.json() if answer.content else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)


def start_api(stack: Stack, env: dict[str, str]) -> Api:
    """Start the api-server; a REST client once it answers, as admin with a fresh password."""
    import requests

    password = secrets.token_urlsafe(12)
    Path(env["AIRFLOW_HOME"], "passwords.json").write_text(json.dumps({"admin": password}))
    stack.start("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", env["AIRFLOW__API__PORT"]], env)
    base = env["AIRFLOW__API__BASE_URL"]

    def up() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200
        return False

    wait_until("the api-server", up, 180, stack, 2)
    return Api(base, password)
