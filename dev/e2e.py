"""`make e2e`: the provider in a real Airflow deployment, as users run it.

Starts, on 127.0.0.1 only and with throwaway data: PostgreSQL (Debian's package), Redis, the
ClubCollect sandbox, and Airflow's api-server, scheduler, dag-processor and triggerer.  Then, first
on LocalExecutor and again on CeleryExecutor with two ``airflow celery worker`` processes, it
drives Airflow through its REST API (a token from the simple auth manager): unpauses every
example DAG, triggers each twice (with a logical date, then manually without one), and checks:

- every run succeeded, scheduled ones included;
- a deferrable sensor went to ``deferred`` on a company with nothing waiting, its trigger row
  held by the triggerer, and was resumed within seconds of tickets arriving in the sandbox;
- mapped tasks ran once per company (and, on Celery, on both workers);
- the sandbox's end state is exactly what the DAGs should produce, computed here from the
  sandbox's state before the runs: which invoices archived, which assigned to support, which
  replies created, no duplicates;
- the API key appears in no log file, no table of the metadata database (``pg_dump``) and no
  Redis key or value;
- the provider's metrics, sent by every component through Airflow's StatsD client to a listener
  started here, count each request the sandbox logged once, by call and outcome (two 429s
  injected among them), and no metric line holds the key, an ID or a message;
- no process started here listens on anything but 127.0.0.1;
- a burst of three member messages at once reaches asset-triggered runs within the watcher's poll
  interval plus a scheduler loop, none stranded (``run_burst``);
- on Celery, the shared request budget (``run_budget``): the sandbox enforces a budget per key, a
  fan-out over 40 companies plus four asset watchers draw from one budget in Redis (under 1% 429s,
  at least 90% of the budget used while the tasks read, every company read once), then the same
  fan-out with each process capped alone, for comparison.

It also takes a screenshot of the ClubCollect connection form in Airflow's UI with headless
Chromium (``docs/img/connection-form.png``), and checks that Airflow's REST connection test
answers success for the right key and names the key problem for a wrong one.

Everything started is stopped by process group, also on failure and on Ctrl-C.  The last thing
printed is one summary table; the exit status is 0 only when every check passed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".e2e"
LOGS = WORK / "logs"
HOME = WORK / "airflow"
SCREENSHOT = REPO / "docs" / "img" / "connection-form.png"
SCREENSHOT_EXTRAS = REPO / "docs" / "img" / "connection-form-extras.png"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")

EXAMPLE_DAGS = REPO / "example_dags"
DEFERRED_DAG = REPO / "tests" / "dags" / "dag_files" / "clubcollect_test_deferred_wait.py"
DEFERRED_DAG_ID = "clubcollect_test_deferred_wait"
# Never twice across Airflow task retries: posts whose answer is lost, then retried tasks.
RETRIED_DAG = REPO / "tests" / "dags" / "dag_files" / "clubcollect_test_retried_reply.py"
RETRIED_DAG_ID = "clubcollect_test_retried_reply"
RETRIED_COMPANY = "e2e0retried".ljust(40, "0")
# Lineage: the export DAG writes into e2e's own folder; the consumer is scheduled on its exports.
EXPORT_DAG_ID = "clubcollect_export_to_storage"
CONSUMER_DAG_ID = "clubcollect_process_export"
EXPORTS = WORK / "exports"

# The sandbox's default seed (seed 0): the companies the example DAGs act on.
ARCHIVE_COMPANY = "97a4208030e13df423f3ff0479579c9f540ec07f"
ESCALATE_COMPANY = "9555b2fcac1eafcf9a5f77a6fcb9182c0bbe3152"
EXPORT_COMPANY = "3c74fb2e20441803427404b9607810fd3e949b9d"
REPLY_COMPANY = "6f946b943e8c341e6b7c904b61c811924144f485"
# A company added for the deferral scenario: it starts with nothing waiting.
# The invoice clubcollect_answer_invoice replies on (third company).
ANSWER_INVOICE = re.search(
    r'SANDBOX_INVOICE_ID = "(\w+)"', (EXAMPLE_DAGS / "clubcollect_answer_invoice.py").read_text()
).group(1)  # type: ignore[union-attr]
EXAMPLE_COMPANIES = (ARCHIVE_COMPANY, ESCALATE_COMPANY, EXPORT_COMPANY, REPLY_COMPANY)
DEFER_COMPANY = "e2e0deferred0000000000000000000000000000"
DEFER_INVOICE = "e2e0deferred0invoice00000000000000000000"

# Review before escalation: one run per choice, each on a company of its own.
REVIEW_DAG_ID = "clubcollect_review_before_escalation"
REVIEW_REPLY = "Thank you for writing. A colleague reviewed your invoice and will call you this week."
REVIEW_CHOICES = {
    "escalate": "Escalate to ClubCollect support",
    "archive": "Archive the threads",
    "reply": "Reply to the members",
}

HITL_SETTLE = 10.0  # seconds between a human-in-the-loop task's start and the answer (see answer())
# The asset-watcher example, pointed at a company of its own in e2e's copy of the DAG file.
WATCH_DAG_ID = "clubcollect_acknowledge_new_messages"
# Reminds and escalates in its default company, the auto-escalate example's, whose end state is checked
# here: left paused (tests/dags/test_reply_then_escalate.py runs it on days with and without work).
REPLY_ESCALATE_DAG_ID = "clubcollect_reply_then_escalate"
WATCH_COMPANY = "e2e0watched".ljust(40, "0")
WATCH_POLL = 5.0  # the example's poll_interval
# A burst of three messages is handled by runs within a poll interval plus this: a scheduler loop and a margin.
BURST_MARGIN = 5.0
BURST = [f"e2e0watched0burst{n}".ljust(40, "0") for n in range(3)]  # three threads, a message each at once
# The shared request budget (issue 23): a fan-out over many companies plus a few watchers, under the
# sandbox's per-key budget, through a connection sharing the budget in Redis, then one capping each process alone.
BUDGET_DAG = REPO / "tests" / "dags" / "dag_files" / "clubcollect_test_budget.py"
BUDGET_VARIANTS = ("shared", "alone")
BUDGET_RATE = 20.0  # requests per second: the sandbox's budget and both connections' max_requests_per_second
BUDGET_BURST = 5
BUDGET_COMPANIES = 40

RUN_TIMEOUT = 240.0  # seconds a DAG run may take on this 2-core machine under full load
RESUME_WITHIN = 60.0  # seconds from tickets arriving to the deferred sensor's success


class E2EError(Exception):
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


@dataclass
class RunRecord:
    phase: str
    dag_id: str
    run_id: str
    kind: str
    state: str = "?"
    duration: float | None = None
    expected: str = "success"


class Stack:
    """Every process this script starts, each in its own process group, stopped in reverse order."""

    def __init__(self) -> None:
        self.components: list[Component] = []
        self.stopped: list[Component] = []

    def start(self, name: str, command: list[str], env: dict[str, str], user: str | None = None) -> Component:
        log = LOGS / f"{name}.log"
        handle = log.open("ab")
        process = subprocess.Popen(
            command,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            cwd=WORK,
        )
        handle.close()
        component = Component(name, process, log)
        self.components.append(component)
        return component

    def stop(self, component: Component, grace: float = 20.0) -> None:
        if component.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGTERM)
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
        for component in self.components:
            if not component.alive():
                raise E2EError(f"{component.name} exited with {component.process.returncode}:\n{tail(component.log)}")


# --- small helpers ----------------------------------------------------------------------------------


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


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, stack: Stack, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def say(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise E2EError("PostgreSQL is not installed (apt-get install postgresql); `make e2e` installs it.")
    return Path(found[-1]).parent


# --- the services -----------------------------------------------------------------------------------


@dataclass
class Deployment:
    stack: Stack
    key: str
    pg_port: int
    redis_port: int
    sandbox_port: int
    api_port: int
    pg_data: Path
    redis_dir: Path
    env: dict[str, str]
    api: Any = None  # the REST client, once the api-server is up

    @property
    def sandbox_base(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}/api"

    @property
    def sandbox_control(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}/_sandbox"


def start_postgres(stack: Stack, data: Path, port: int) -> None:
    pg = postgres_bin()
    data.mkdir(parents=True)
    shutil.chown(data, "postgres", "postgres")
    run([str(pg / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"], "postgres")
    stack.start(
        "postgresql",
        [
            str(pg / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
        user="postgres",
    )
    wait_until(
        "PostgreSQL",
        lambda: subprocess.run([str(pg / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0,
        60,
        stack,
        0.5,
    )
    run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"])


def run(command: list[str], user: str | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(command, capture_output=True, text=True, user=user, env=env, timeout=timeout, cwd=WORK)
    if done.returncode != 0:
        raise E2EError(
            f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def airflow_env(deploy_key: str, ports: dict[str, int], fernet_key: str, jwt_secret: str) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    pg = f"airflow@127.0.0.1:{ports['pg']}/airflow"

    def connection(**extra: Any) -> str:
        host = f"http://127.0.0.1:{ports['sandbox']}/api"
        return json.dumps({"conn_type": "clubcollect", "password": deploy_key, "host": host, "extra": extra})

    env.update(
        {
            "PYTHONPATH": str(REPO),
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(HOME / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(HOME / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['api']}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dev.e2e.component_hostname",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports["api"]),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{ports['api']}",
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
            # Log servers are not started (--skip-serve-logs); should one start, it binds a free port.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            # Every component's metrics, the provider's among them, to e2e's own StatsD listener.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(ports["statsd"]),
            "CLUBCOLLECT_E2E_HOSTNAME": "airflow-e2e",
            # The provider's connection, as users deploy it: an environment variable on every
            # component (the key then never enters the metadata database).
            "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT": connection(),
            # The retried-create scenario's: one lost answer fails a try, so that Airflow retries it.
            "AIRFLOW_CONN_CLUBCOLLECT_NO_RETRIES": connection(max_retries=0),
            # The budget scenario's (run_budget): one budget in Redis (a database of its own), or a cap per process.
            "AIRFLOW_CONN_CLUBCOLLECT_BUDGET_SHARED": connection(
                max_requests_per_second=BUDGET_RATE, budget_url=f"redis://127.0.0.1:{ports['redis']}/1"
            ),
            "AIRFLOW_CONN_CLUBCOLLECT_BUDGET_ALONE": connection(max_requests_per_second=BUDGET_RATE),
        }
    )
    return env


def component_hostname() -> str:
    """Airflow's ``hostname_callable`` here: each Celery worker names itself, so tasks show where they ran."""
    return os.environ.get("CLUBCOLLECT_E2E_HOSTNAME") or socket.getfqdn()


def start_airflow(stack: Stack, env: dict[str, str], api_port: int) -> None:
    stack.start("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(api_port)], env)
    stack.start("dag-processor", [AIRFLOW, "dag-processor"], env)
    stack.start("triggerer", [AIRFLOW, "triggerer", "--skip-serve-logs"], env)


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
            raise E2EError(f"{method} {path} answered {answer.status_code}: {answer.text[:2000]}")
        return answer.json() if answer.content else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)


def api_up(base: str) -> bool:
    import requests

    try:
        return requests.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


# --- the scenario -----------------------------------------------------------------------------------


def sandbox_client(deploy: Deployment) -> Any:
    from airflow_provider_clubcollect.sandbox.client import SandboxClient

    return SandboxClient(deploy.sandbox_control)


def dag_ids() -> list[str]:
    """The example DAGs triggered twice and left to run; the review and watcher DAGs have scenarios of their own."""
    return sorted(
        path.stem
        for path in EXAMPLE_DAGS.glob("*.py")
        if path.stem not in (REVIEW_DAG_ID, WATCH_DAG_ID, REPLY_ESCALATE_DAG_ID)
    )


def wait_for_dags(deploy: Deployment, expected: list[str]) -> None:
    def parsed() -> bool:
        errors = deploy.api.get("/importErrors")
        if errors["total_entries"]:
            raise E2EError(f"DAG import errors: {json.dumps(errors['import_errors'])[:3000]}")
        found = {dag["dag_id"] for dag in deploy.api.get("/dags?limit=100")["dags"]}
        return set(expected) <= found

    wait_until("the dag-processor to parse every DAG", parsed, 180, deploy.stack, 2)


def trigger(deploy: Deployment, dag_id: str, logical_date: datetime | None, conf: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None}
    if conf:
        body["conf"] = conf
    run: dict[str, Any] = deploy.api.call("POST", f"/dags/{dag_id}/dagRuns", body)
    return str(run["dag_run_id"])


def run_state(deploy: Deployment, dag_id: str, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = deploy.api.get(f"/dags/{dag_id}/dagRuns/{_q(run_id)}")
    return result


def wait_for_run(deploy: Deployment, record: RunRecord, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = run_state(deploy, record.dag_id, record.run_id)
        return run if run["state"] in ("success", "failed") else None

    run: dict[str, Any] = wait_until(f"{record.dag_id} run {record.run_id}", finished, timeout, deploy.stack, 2)
    record.state = run["state"]
    if run.get("start_date") and run.get("end_date"):
        record.duration = (_dt(run["end_date"]) - _dt(run["start_date"])).total_seconds()
    return run


def task_instances(deploy: Deployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = deploy.api.get(f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances?limit=100")[
        "task_instances"
    ]
    return result


def xcom(deploy: Deployment, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    entry = deploy.api.get(
        f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/return_value?map_index={map_index}"
    )
    return entry["value"]


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Phase:
    name: str
    deploy: Deployment
    records: list[RunRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if ok:
            self.notes.append(f"ok: {message}")
        else:
            self.failures.append(message)
        say(f"{self.name}: {'ok  ' if ok else 'FAIL'} {message}")


def run_phase(phase: Phase, logical_base: datetime) -> None:
    deploy = phase.deploy
    phase_started = datetime.now(timezone.utc)
    sandbox = sandbox_client(deploy)
    sandbox.reset(seed=0)
    sandbox.add_company(DEFER_COMPANY, "E2E deferred")
    sandbox.add_invoice(DEFER_INVOICE, DEFER_COMPANY)
    seed_review_companies(sandbox)
    seed_retried(sandbox)
    before = sandbox.state()

    all_dags = [*dag_ids(), REVIEW_DAG_ID, DEFERRED_DAG_ID, RETRIED_DAG_ID]
    for dag_id in all_dags:
        deploy.api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    # The deferral scenario first: the sensor must defer on an empty company, then resume.
    defer = RunRecord(phase.name, DEFERRED_DAG_ID, "", "manual")
    defer.run_id = trigger(deploy, DEFERRED_DAG_ID, None, {"company_id": DEFER_COMPANY})
    phase.records.append(defer)
    retried = RunRecord(phase.name, RETRIED_DAG_ID, "", "manual, posts whose answer is lost")
    retried.run_id = trigger(deploy, RETRIED_DAG_ID, None)
    phase.records.append(retried)

    # Every example DAG: first with a logical date, then (once that finished) without one.
    firsts = []
    for n, dag_id in enumerate(dag_ids()):
        record = RunRecord(phase.name, dag_id, "", "logical date")
        record.run_id = trigger(deploy, dag_id, logical_base + timedelta(minutes=n))
        phase.records.append(record)
        firsts.append(record)

    check_deferral(phase, defer, sandbox)
    run_reviews(phase, sandbox, before, phase_started)

    manual_started: dict[str, datetime] = {}
    for record in firsts:
        wait_for_run(deploy, record)
        manual = RunRecord(phase.name, record.dag_id, "", "manual, no logical date")
        manual_started[record.dag_id] = datetime.now(timezone.utc)
        manual.run_id = trigger(deploy, record.dag_id, None)
        phase.records.append(manual)
    for record in phase.records:
        if record.state == "?":
            wait_for_run(deploy, record)

    # Scheduled runs that unpausing created in this phase (catchup=False: the latest interval) count too.
    for dag_id in dag_ids():
        for run in deploy.api.get(f"/dags/{dag_id}/dagRuns?limit=50")["dag_runs"]:
            if run["run_type"] == "scheduled" and _dt(run["queued_at"]) >= phase_started:
                record = RunRecord(phase.name, dag_id, run["dag_run_id"], "scheduled")
                phase.records.append(record)
                wait_for_run(deploy, record)

    for record in phase.records:
        phase.check(record.state == record.expected, f"{record.dag_id} ({record.kind}) ended {record.state}")

    after = sandbox.state()
    check_end_state(phase, before, after, manual_started)
    check_escalated_once(phase, after)
    check_mapped(phase, before)
    check_retried(phase, retried, after)
    check_exports(phase, before, phase_started)


def seed_retried(sandbox: Any) -> None:
    """Two threads for the retried DAG; the operator's first POST is applied but its answer lost."""
    from airflow_provider_clubcollect.sandbox.client import ticket

    sandbox.add_company(RETRIED_COMPANY, "E2E retried")
    asked = datetime.now(timezone.utc) - timedelta(days=2)
    for invoice_id in ("inv-hook", "inv-operator"):
        sandbox.add_invoice(invoice_id, RETRIED_COMPANY, [ticket("Waarom?", "CUSTOMER", asked)])
    # The read that would find the applied POST fails too: only Airflow's retry of the task, with
    # the intent recorded in its task state store, can find the ticket.  And two 429s on the export
    # company's pages, retried after Retry-After, for the metrics check (check_metrics).
    sandbox.set_faults(
        script=[
            *[{"fault": "rate_limit", "retry_after": 0.5, "method": "GET", "path_regex": EXPORT_COMPANY}] * 2,
            {"fault": "apply_then_drop", "method": "POST", "path_regex": "inv-operator"},
            {"fault": "error", "status": 500, "method": "GET", "path_regex": "inv-operator"},
        ]
    )


def check_retried(phase: Phase, record: RunRecord, after: dict[str, Any]) -> None:
    """Each retried task ran twice, its second try posted nothing, and its XCom is the one ticket."""
    deploy = phase.deploy
    tries = {t["task_id"]: (t["state"], t["try_number"]) for t in task_instances(deploy, RETRIED_DAG_ID, record.run_id)}
    phase.check(
        tries == {"reply_then_fail": ("success", 2), "create": ("success", 2)},
        f"retried create: both tasks failed once after posting and succeeded on Airflow's retry ({tries})",
    )
    for invoice_id, task_id in (("inv-hook", "reply_then_fail"), ("inv-operator", "create")):
        invoice = after["invoices"][invoice_id]
        returned = (
            xcom(deploy, RETRIED_DAG_ID, record.run_id, task_id) if tries.get(task_id, ("",))[0] == "success" else {}
        )
        phase.check(
            invoice["tickets_created"] == 1 and returned.get("ticket_id") == invoice["tickets"][-1]["ticket_id"],
            f"retried create ({task_id}): posted once ({invoice['tickets_created']} tickets created), "
            "the retry returned the ticket the first try created",
        )


def check_exports(phase: Phase, before: dict[str, Any], phase_started: datetime) -> None:
    """Each export run emitted one asset event for its file; the consumer's runs read each event once."""
    deploy = phase.deploy
    count = sum(
        len(v["tickets"])
        for v in before["invoices"].values()
        if v["company_id"] == EXPORT_COMPANY and v["status"] == "unanswered"
    )
    # clubcollect_answer_invoice answers a thread of this company, which then leaves the list.
    answered = before["invoices"][ANSWER_INVOICE]
    counts = {count, count - len(answered["tickets"])} if answered["company_id"] == EXPORT_COMPANY else {count}
    exports = {
        run["dag_run_id"]
        for run in deploy.api.get(f"/dags/{EXPORT_DAG_ID}/dagRuns?limit=100")["dag_runs"]
        if _dt(run["queued_at"]) >= phase_started and run["state"] == "success"
    }
    events = [
        e
        for e in deploy.api.get(f"/assets/events?source_dag_id={EXPORT_DAG_ID}&limit=100")["asset_events"]
        if e["source_run_id"] in exports
    ]
    phase.check(
        sorted(e["source_run_id"] for e in events) == sorted(exports) and len(exports) >= 2,
        f"exports: each of the {len(exports)} export runs emitted one asset event ({len(events)} events)",
    )
    for event in events:
        path = Path(event["uri"].removeprefix("file://"))
        lines = path.read_text().count("\n") if path.is_file() and event["uri"].startswith(EXPORTS.as_uri()) else -1
        extra = event["extra"]
        phase.check(
            extra.get("count") in counts
            and extra == {"company_id": EXPORT_COMPANY, "status": "unanswered", "count": lines},
            f"exports: the event of {event['source_run_id']} names its file and the company, with as many tickets "
            f"as the file holds, {' or '.join(map(str, sorted(counts)))} (extra {extra}, file lines {lines})",
        )

    # The consumer: Airflow created its runs from the events; each event is read by one run.
    def consumed() -> dict[int, list[str]] | None:
        read: dict[int, list[str]] = {}
        for run in deploy.api.get(f"/dags/{CONSUMER_DAG_ID}/dagRuns?limit=100&run_type=asset_triggered")["dag_runs"]:
            upstream = deploy.api.get(f"/dags/{CONSUMER_DAG_ID}/dagRuns/{_q(run['dag_run_id'])}/upstreamAssetEvents")
            mine = [e["id"] for e in upstream["asset_events"] if e["source_run_id"] in exports]
            if mine and run["state"] not in ("success", "failed"):
                return None
            for event_id in mine:
                read.setdefault(event_id, []).append(f"{run['dag_run_id']}:{run['state']}")
        return read if len(read) == len(events) else None

    read = wait_until("the consumer to read every export", consumed, RUN_TIMEOUT, deploy.stack, 2)
    for run_id in sorted({r.rsplit(":", 1)[0] for runs in read.values() for r in runs}):
        record = RunRecord(phase.name, CONSUMER_DAG_ID, run_id, "scheduled on an export")
        phase.records.append(record)
        wait_for_run(deploy, record)
    phase.check(
        all(len(runs) == 1 and runs[0].endswith(":success") for runs in read.values()),
        f"exports: {CONSUMER_DAG_ID} read each of the {len(read)} exports in exactly one successful run "
        f"({len({r for runs in read.values() for r in runs})} runs)",
    )


def review_company(choice: str) -> str:
    return f"e2e0review0{choice}".ljust(40, "0")


def seed_review_companies(sandbox: Any) -> None:
    """Per choice: two threads waiting over 7 days (to review), one fresh and one answered (to leave)."""
    from airflow_provider_clubcollect.sandbox.client import ticket

    now = datetime.now(timezone.utc)
    for choice in REVIEW_CHOICES:
        company = review_company(choice)
        sandbox.add_company(company, f"E2E review: {choice}")
        threads = {
            "old1": [("Ik wil niet betalen: ik ben <b>geen</b> lid meer | opgezegd", "CUSTOMER", 12)],
            "old2": [
                ("Why this invoice?", "CUSTOMER", 20),
                ("See our letter.", "COMPANY", 15),
                ("Which letter?", "CUSTOMER", 9),
            ],
            "fresh": [("Graag een betalingsregeling.", "CUSTOMER", 2)],
            "answered": [("Wrong amount", "CUSTOMER", 30), ("Corrected, thank you.", "COMPANY", 29)],
        }
        for name, items in threads.items():
            sandbox.add_invoice(
                f"{company[:24]}{name}".ljust(40, "0"),
                company,
                [ticket(message, sender, now - timedelta(days=age)) for message, sender, age in items],
            )


def answer(deploy: Deployment, record: RunRecord, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Wait for a human-in-the-loop task to ask, then answer it through the REST API."""

    def asking() -> dict[str, Any] | None:
        for ti in task_instances(deploy, record.dag_id, record.run_id):
            if ti["task_id"] == task_id and ti["state"] in ("awaiting_input", "deferred"):
                return ti
            if ti["task_id"] == task_id and ti["state"] in ("success", "failed", "skipped"):
                raise E2EError(f"{record.dag_id}.{task_id} ended {ti['state']} before anyone answered")
        return None

    ti = wait_until(f"{record.dag_id}.{task_id} to ask", asking, RUN_TIMEOUT, deploy.stack, 1)
    # Airflow 3.3.2 races an answer given within a second or two of the task parking: the
    # scheduler then takes the parked run's "success" event for the resumed, queued try and fails
    # it.  A person never answers that fast; an automated answer waits a few seconds.
    parked_for = (datetime.now(timezone.utc) - _dt(ti["start_date"])).total_seconds()
    time.sleep(max(0.0, HITL_SETTLE - parked_for))
    path = f"/dags/{record.dag_id}/dagRuns/{_q(record.run_id)}/taskInstances/{task_id}/-1/hitlDetails"
    asked: dict[str, Any] = deploy.api.get(path)
    deploy.api.call("PATCH", path, body)
    return asked


def run_reviews(phase: Phase, sandbox: Any, before: dict[str, Any], phase_started: datetime) -> None:
    """The review DAG, answered through the REST API once per choice, and its scheduled run."""
    deploy = phase.deploy
    records = {}
    for choice in REVIEW_CHOICES:
        record = RunRecord(phase.name, REVIEW_DAG_ID, "", f"manual, a person chose {choice}")
        record.run_id = trigger(deploy, REVIEW_DAG_ID, None, {"company_id": review_company(choice)})
        phase.records.append(record)
        records[choice] = record
    for choice, record in records.items():
        asked = answer(deploy, record, "review", {"chosen_options": [REVIEW_CHOICES[choice]]})
        body = str(asked.get("body"))
        mine = [i for i, v in before["invoices"].items() if v["company_id"] == review_company(choice)]
        shown = sorted(i for i in mine if i in body)
        phase.check(
            shown == sorted(i for i in mine if i[24:].startswith("old")) and "&lt;b\\>geen&lt;/b\\>" in body,
            f"review ({choice}): the person was shown exactly the 2 threads waiting over 7 days, member text escaped",
        )
        if choice == "reply":
            answer(deploy, record, "write_reply", {"chosen_options": ["OK"], "params_input": {"reply": REVIEW_REPLY}})
    # Unpausing the daily review DAG scheduled a run on the seeded escalation company: escalate,
    # as the auto-escalate DAG does to the same threads.
    for run in deploy.api.get(f"/dags/{REVIEW_DAG_ID}/dagRuns?limit=50")["dag_runs"]:
        if run["run_type"] == "scheduled" and _dt(run["queued_at"]) >= phase_started:
            record = RunRecord(phase.name, REVIEW_DAG_ID, run["dag_run_id"], "scheduled, a person chose escalate")
            phase.records.append(record)
            answer(deploy, record, "review", {"chosen_options": [REVIEW_CHOICES["escalate"]]})
    for record in records.values():
        wait_for_run(deploy, record)
        detail = deploy.api.get(
            f"/dags/{REVIEW_DAG_ID}/dagRuns/{_q(record.run_id)}/taskInstances/review/-1/hitlDetails"
        )
        phase.check(
            bool(detail.get("response_received")) and detail.get("responded_by_user", {}).get("name") == "admin",
            f"review ({record.kind}): Airflow recorded admin's answer {detail.get('chosen_options')}",
        )

    after = sandbox.state()["invoices"]
    for choice in REVIEW_CHOICES:
        mine = {i: v for i, v in after.items() if v["company_id"] == review_company(choice)}
        old = {i for i in mine if i[24:].startswith("old")}
        escalated = {i for i, v in mine.items() if v["assigned_to_support"]}
        archived = {i for i, v in mine.items() if v["actions"]["archive"]}
        replies = {i: [t for t in v["tickets"] if t["message"] == REVIEW_REPLY] for i, v in mine.items()}
        replied = {i for i, found in replies.items() if found}
        expected = {
            "escalate": (old, set(), set()),
            "archive": (set(), old, set()),
            "reply": (set(), set(), old),
        }[choice]
        phase.check(
            (escalated, archived, replied) == expected
            and all(len(replies[i]) == 1 and mine[i]["tickets_created"] == 1 for i in replied),
            f"review ({choice}): exactly the 2 reviewed threads were "
            f"{ {'escalate': 'escalated', 'archive': 'archived', 'reply': 'answered'}[choice] }"
            f"{', one reply each' if choice == 'reply' else ''}; the fresh and answered ones untouched",
        )


def run_watcher(phase: Phase, sandbox: Any) -> None:
    """The asset-watcher DAG: one run per new ticket, none again after the triggerer restarts."""
    from airflow_provider_clubcollect.sandbox.client import ticket

    deploy = phase.deploy
    now = datetime.now(timezone.utc)
    sandbox.add_company(WATCH_COMPANY, "E2E watched")
    invoices = [f"e2e0watched0invoice{n}".ljust(40, "0") for n in range(2)]
    # A backlog: one thread waits already; one was answered.
    sandbox.add_invoice(invoices[0], WATCH_COMPANY, [ticket("Klopt dit bedrag?", "CUSTOMER", now - timedelta(days=1))])
    sandbox.add_invoice(
        invoices[1],
        WATCH_COMPANY,
        [
            ticket("Wrong name", "CUSTOMER", now - timedelta(days=3)),
            ticket("Fixed.", "COMPANY", now - timedelta(days=2)),
        ],
    )
    acknowledgement = _watch_acknowledgement()

    def acks() -> dict[str, int]:
        state = sandbox.state()["invoices"]
        return {i: sum(t["message"] == acknowledgement for t in state[i]["tickets"]) for i in invoices if i in state}

    def runs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = deploy.api.get(f"/dags/{WATCH_DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return [r for r in found if r["run_type"] == "asset_triggered"]

    deploy.api.call("PATCH", f"/dags/{WATCH_DAG_ID}", {"is_paused": False})
    # Manual runs have no triggering events: they succeed and acknowledge nothing.
    for n, logical_date in enumerate((datetime.now(timezone.utc) - timedelta(hours=1), None)):
        record = RunRecord(phase.name, WATCH_DAG_ID, "", "logical date" if n == 0 else "manual, no logical date")
        record.run_id = trigger(deploy, WATCH_DAG_ID, logical_date)
        phase.records.append(record)
        wait_for_run(deploy, record)
        phase.check(record.state == "success", f"{record.dag_id} ({record.kind}) ended {record.state}")

    def settled(expected_runs: int) -> list[dict[str, Any]] | None:
        found = runs()
        return (
            found if len(found) >= expected_runs and all(r["state"] in ("success", "failed") for r in found) else None
        )

    started = time.monotonic()
    first = wait_until("the watcher to report the waiting ticket", lambda: settled(1), RUN_TIMEOUT, deploy.stack, 1)
    phase.check(
        acks() == {invoices[0]: 1, invoices[1]: 0},
        f"watcher: the waiting backlog ticket ran the DAG, which acknowledged it once "
        f"({time.monotonic() - started:.0f} s after unpausing)",
    )

    arrived = time.monotonic()
    sandbox.add_tickets(invoices[1], [ticket("Nog een vraag", "CUSTOMER", datetime.now(timezone.utc))])
    second = wait_until(
        "the watcher to report the new ticket", lambda: settled(len(first) + 1), RUN_TIMEOUT, deploy.stack, 1
    )
    phase.check(
        acks() == {invoices[0]: 1, invoices[1]: 1},
        f"watcher: a new member message ran the DAG once, acknowledged "
        f"{time.monotonic() - arrived:.0f} s after it arrived",
    )

    # A restart proves something only while a reported ticket still awaits an answer: let the
    # acknowledgement of the next message fail (the sandbox refuses that POST), so it stays waiting.
    refused = {"fault": "error", "status": 422, "method": "POST", "path_regex": invoices[0]}
    sandbox.set_faults(script=[refused] * 20)
    sandbox.add_tickets(invoices[0], [ticket("Hallo?", "CUSTOMER", datetime.now(timezone.utc))])
    third = wait_until(
        "the watcher to report the message", lambda: settled(len(second) + 1), RUN_TIMEOUT, deploy.stack, 1
    )
    failed = [r["dag_run_id"] for r in third if r["state"] == "failed"]
    phase.check(
        len(third) == len(second) + 1 and len(failed) == 1 and acks() == {invoices[0]: 1, invoices[1]: 1},
        "watcher: a message whose acknowledgement the API refused ran the DAG once and still awaits an answer",
    )
    sandbox.clear_faults()
    # Restart the triggerer: what was reported stays reported (the asset state store).
    old = next(c for c in deploy.stack.components if c.name.startswith("triggerer"))
    deploy.stack.stop(old)
    deploy.stack.start("triggerer-restarted", [AIRFLOW, "triggerer", "--skip-serve-logs"], deploy.env)
    time.sleep(6 * WATCH_POLL)  # the new triggerer picks the watcher up and polls several times
    phase.check(
        len(runs()) == len(third) and acks() == {invoices[0]: 1, invoices[1]: 1},
        f"watcher: the waiting, reported message ran nothing again after the triggerer restarted "
        f"({len(runs())} asset-triggered runs in all)",
    )
    sandbox.add_tickets(invoices[1], [ticket("Nog iets", "CUSTOMER", datetime.now(timezone.utc))])
    fourth = wait_until(
        "the restarted watcher to report a new message", lambda: settled(len(third) + 1), RUN_TIMEOUT, deploy.stack, 1
    )
    phase.check(
        len(fourth) == len(third) + 1 and acks() == {invoices[0]: 1, invoices[1]: 2},
        "watcher: after the restart, the next new message ran the DAG exactly once",
    )
    for run in fourth:
        refused_on_purpose = run["dag_run_id"] in failed
        record = RunRecord(
            phase.name,
            WATCH_DAG_ID,
            run["dag_run_id"],
            "asset event" + ("; POST refused on purpose" if refused_on_purpose else ""),
        )
        record.expected = "failed" if refused_on_purpose else "success"
        phase.records.append(record)
        wait_for_run(deploy, record)
        phase.check(record.state == record.expected, f"{record.dag_id} ({record.kind}) ended {record.state}")

    asset = next(
        a
        for a in deploy.api.get("/assets?limit=100")["assets"]
        if a["uri"] == f"clubcollect://{WATCH_COMPANY}/unanswered"
    )
    events = deploy.api.get(f"/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]
    payloads = [((e.get("extra") or {}).get("payload") or {}) for e in events]
    ticket_ids = [p.get("ticket_id") for p in payloads]
    phase.check(
        len(events) == 4 and len(set(ticket_ids)) == 4 and all(p.get("invoice_id") in invoices for p in payloads),
        f"watcher: 4 asset events, one per new ticket, each carrying its ticket_id ({len(events)} events)",
    )
    phase.check(all(deploy.key not in json.dumps(e) for e in events), "watcher: no asset event carries the API key")
    run_burst(phase, sandbox, acknowledgement, {r["dag_run_id"] for r in runs()})
    deploy.api.call("PATCH", f"/dags/{WATCH_DAG_ID}", {"is_paused": True})


def run_burst(phase: Phase, sandbox: Any, acknowledgement: str, earlier_runs: set[str]) -> None:
    """Three member messages at once (issue 26): each ticket reaches a run within a poll and a scheduler loop."""
    from airflow_provider_clubcollect.sandbox.client import ticket

    deploy = phase.deploy
    arrived = datetime.now(timezone.utc)
    ticket_ids = {
        sandbox.add_invoice(invoice_id, WATCH_COMPANY, [ticket("Ik heb een vraag", "CUSTOMER", arrived)])["tickets"][0][
            "ticket_id"
        ]
        for invoice_id in BURST
    }

    def handled() -> dict[str, dict[str, Any]] | None:
        """Each burst ticket's run: the one whose triggering events carry it."""
        found = {}
        for run in deploy.api.get(f"/dags/{WATCH_DAG_ID}/dagRuns?limit=100&run_type=asset_triggered")["dag_runs"]:
            if run["dag_run_id"] not in earlier_runs:
                upstream = f"/dags/{WATCH_DAG_ID}/dagRuns/{_q(run['dag_run_id'])}/upstreamAssetEvents"
                for event in deploy.api.get(upstream)["asset_events"]:
                    payload = (event.get("extra") or {}).get("payload") or {}
                    found.update(
                        {t["ticket_id"]: run for t in payload.get("tickets", ()) if t["ticket_id"] in ticket_ids}
                    )
        return found if len(found) == len(ticket_ids) else None

    found = wait_until("a run for each ticket of the burst", handled, RUN_TIMEOUT, deploy.stack, 0.5)
    latency = max((_dt(run["queued_at"]) - arrived).total_seconds() for run in found.values())
    within = WATCH_POLL + BURST_MARGIN
    for run_id in sorted({run["dag_run_id"] for run in found.values()}):
        record = RunRecord(phase.name, WATCH_DAG_ID, run_id, f"burst of 3 messages, run {latency:.1f} s after")
        phase.records.append(record)
        wait_for_run(deploy, record)
    invoices = sandbox.state()["invoices"]
    acks = [sum(t["message"] == acknowledgement for t in invoices[i]["tickets"]) for i in BURST]
    phase.check(
        latency <= within and acks == [1, 1, 1],
        f"burst: 3 messages at once reached {len({r['dag_run_id'] for r in found.values()})} run(s) "
        f"{latency:.1f} s after they arrived (poll interval {WATCH_POLL:g} s + {BURST_MARGIN:g} s: {within:g} s), "
        f"none stranded; acknowledgements per thread {acks}",
    )


def run_budget(phase: Phase, sandbox: Any) -> None:
    """
    The shared request budget at scale (issue 23): the sandbox enforces BUDGET_RATE per key; a fan-out over
    BUDGET_COMPANIES companies (a mapped task each, on both workers) plus watchers in the triggerer reads them,
    first sharing the budget in Redis, then with each process capped alone, the comparison.
    """
    from airflow_provider_clubcollect.sandbox.client import ticket

    asked = datetime.now(timezone.utc) - timedelta(hours=1)
    expected = {}
    for n in range(BUDGET_COMPANIES):  # 60 to 66 waiting tickets each: 12 to 14 pages of 5
        company = f"e2e0budget0fan{n:02d}".ljust(40, "0")
        tickets = [ticket(f"Vraag {k}", "CUSTOMER", asked + timedelta(seconds=k)) for k in range(60 + n % 7)]
        expected[company] = len(
            sandbox.add_invoice(f"{company[:16]}0invoice".ljust(40, "0"), company, tickets)["tickets"]
        )
    watched = [a["uri"].split("/")[2] for a in phase.deploy.api.get("/assets?limit=100")["assets"]]
    for company in (c for c in watched if c.startswith("e2e0budget0")):
        sandbox.add_company(company, "E2E budget: watched")
    sandbox.set_faults(rate_limit_per_second=BUDGET_RATE, rate_limit_burst=BUDGET_BURST)
    try:
        figures = [budget_fan_out(phase, sandbox, variant, expected) for variant in BUDGET_VARIANTS]
    finally:
        sandbox.clear_faults()
    (refused, rate), _ = figures
    phase.check(
        refused < 0.01 and 0.9 * BUDGET_RATE <= rate <= 1.02 * BUDGET_RATE,
        f"budget: with the shared budget, {refused:.1%} of requests answered 429 (under 1%) and {rate:.1f} "
        f"requests/s while the fan-out read (within 90% of the sandbox's {BUDGET_RATE:g})",
    )


def budget_fan_out(phase: Phase, sandbox: Any, variant: str, expected: dict[str, int]) -> tuple[float, float]:
    """One fan-out with its watchers polling: the share of 429s, and the requests per second while it read."""
    deploy = phase.deploy
    dag_id = f"{BUDGET_DAG.stem}_{variant}"
    deploy.api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def polled() -> set[str]:
        return {
            m.group(1)
            for r in sandbox.requests()
            if (m := re.search(f"/companies/(e2e0budget0{variant}\\w+)/", r["path"]))
        }

    watchers = wait_until(f"{dag_id}'s watchers to poll", lambda: len(polled()) >= 4 and polled(), 120, deploy.stack)
    sandbox.clear_requests()
    record = RunRecord(phase.name, dag_id, "", f"{len(expected)} companies mapped")
    record.run_id = trigger(deploy, dag_id, None, {"company_ids": list(expected)})
    phase.records.append(record)
    wait_for_run(deploy, record)
    log = sandbox.requests()
    deploy.api.call("PATCH", f"/dags/{dag_id}", {"is_paused": True})

    # While the fan-out read: from each company's first request to its last, merged.
    spans: dict[str, list[float]] = {}
    for r in log:
        if (m := re.search(r"/companies/(\w+)/", r["path"])) and m.group(1) in expected:
            span = spans.setdefault(m.group(1), [r["at"], r["at"]])
            span[:] = [min(span[0], r["at"]), max(span[1], r["at"])]
    merged: list[list[float]] = []
    for start, end in sorted(spans.values()):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    # The whole seconds inside a span: the limiter's slots are aligned on them.
    busy = {second for start, end in merged for second in range(math.ceil(start), math.floor(end))}
    per_second = Counter(math.floor(r["at"]) for r in log)
    rate = sum(per_second[second] for second in busy) / max(1, len(busy))
    refused = sum(r["status"] == 429 for r in log) / max(1, len(log))
    totals = xcom(deploy, dag_id, record.run_id, "totals") if record.state == "success" else {}
    tries = [t["try_number"] for t in task_instances(deploy, dag_id, record.run_id) if t["task_id"] == "fetch"]
    summary = (
        f"{refused:.1%} of {len(log)} requests 429, {rate:.1f} requests/s while reading ({len(busy)} s of the run's "
        f"{record.duration or 0:.0f} s), {sum(n > 1 for n in tries)} of {len(tries)} tasks retried"
    )
    record.kind += f", {variant} budget: {summary}"
    read_all = record.state == "success" and totals == expected and len(watchers) >= 4
    if variant == "shared":
        phase.check(
            read_all,
            f"budget ({variant}): each of the {len(expected)} companies' {sum(expected.values())} waiting tickets "
            f"read once by its mapped task, {len(watchers)} watchers polling beside them; {summary}",
        )
    else:
        # The comparison, not judged: without the shared budget a task may spend all its retries on 429s.
        outcome = "every company read" if read_all else "not every company read (tasks gave up on 429s)"
        say(f"{phase.name}: comparison, budget ({variant}): {outcome}; {summary}")
        record.state = f"{record.state} (not judged)"
    return refused, rate


def _watch_acknowledgement() -> str:
    """The example DAG's reply text, read from its source."""
    found = re.search(r'ACKNOWLEDGEMENT = "([^"]+)"', (EXAMPLE_DAGS / f"{WATCH_DAG_ID}.py").read_text())
    if not found:
        raise E2EError(f"no ACKNOWLEDGEMENT in {WATCH_DAG_ID}.py")
    return found.group(1)


def check_deferral(phase: Phase, record: RunRecord, sandbox: Any) -> None:
    deploy = phase.deploy

    def deferred() -> dict[str, Any] | None:
        for ti in task_instances(deploy, record.dag_id, record.run_id):
            if ti["task_id"] == "wait" and ti["state"] == "deferred":
                return ti
            if ti["task_id"] == "wait" and ti["state"] in ("success", "failed"):
                raise E2EError(f"the sensor ended {ti['state']} without deferring")
        return None

    ti = wait_until("the sensor to defer", deferred, RUN_TIMEOUT, deploy.stack, 1)
    trigger_row = ti.get("trigger") or {}
    phase.check(
        trigger_row.get("classpath") == "airflow_provider_clubcollect.triggers.tickets.UnansweredTicketsTrigger",
        f"the sensor deferred to UnansweredTicketsTrigger (trigger id {trigger_row.get('id')})",
    )
    # The triggerer claims the trigger row within a heartbeat or two.
    held = wait_until(
        "the triggerer to hold the trigger",
        lambda: next(
            (t for t in task_instances(deploy, record.dag_id, record.run_id) if t["task_id"] == "wait"), {}
        ).get("triggerer_job"),
        60,
        deploy.stack,
        1,
    )
    phase.check(bool(held), f"triggerer job {held.get('id')} ({held.get('hostname')}) runs the trigger")
    kwargs = json.dumps(trigger_row.get("kwargs"))
    phase.check(deploy.key not in kwargs, "the trigger row's kwargs hold no API key")

    from airflow_provider_clubcollect.sandbox.client import ticket

    time.sleep(3)  # let the trigger poll once with nothing waiting
    arrived = time.monotonic()
    sandbox.add_tickets(DEFER_INVOICE, [ticket("Ik wil niet betalen.", "CUSTOMER", datetime.now(timezone.utc))])
    wait_for_run(deploy, record, RESUME_WITHIN + 120)
    resumed = time.monotonic() - arrived
    record.kind = f"manual, deferred; resumed {resumed:.0f} s after tickets arrived"
    phase.check(
        record.state == "success" and resumed <= RESUME_WITHIN,
        f"the deferred sensor resumed and the run succeeded {resumed:.1f} s after tickets arrived",
    )
    tries = deploy.api.get(f"/dags/{record.dag_id}/dagRuns/{_q(record.run_id)}/taskInstances/wait/tries")
    states = [t["state"] for t in tries["task_instances"]]
    phase.check(states == ["success"], f"the sensor finished in one try after deferral (tries: {states})")
    invoice = sandbox.invoice(DEFER_INVOICE)
    phase.check(invoice["assigned_to_support"], "the tickets found by the trigger were escalated")


def _last_activity(invoice: dict[str, Any]) -> datetime:
    return max(_dt(t["date"]) for t in invoice["tickets"])


def _unanswered_since(invoice: dict[str, Any]) -> datetime | None:
    since = None
    for t in sorted(invoice["tickets"], key=lambda t: _dt(t["date"])):
        if t["sender"] == "COMPANY":
            since = None
        elif since is None:
            since = _dt(t["date"])
    return since


def check_end_state(
    phase: Phase, before: dict[str, Any], after: dict[str, Any], manual_started: dict[str, datetime]
) -> None:
    """Compare the sandbox's end state with what the DAGs should have done, computed from ``before``."""
    inv0, inv1 = before["invoices"], after["invoices"]

    def company(company_id: str) -> dict[str, dict[str, Any]]:
        return {i: v for i, v in inv0.items() if v["company_id"] == company_id}

    # Archive: answered threads idle over 30 days, "now" being when the run was triggered (the task runs moments later).
    archive_now = manual_started["clubcollect_archive_stale"]
    expected_archived = {
        i
        for i, v in company(ARCHIVE_COMPANY).items()
        if v["status"] == "answered" and _last_activity(v) < archive_now - timedelta(days=30)
    }
    archived = {i for i, v in inv1.items() if v["actions"]["archive"] and v["company_id"] == ARCHIVE_COMPANY}
    phase.check(
        archived == expected_archived and all(inv1[i]["status"] == "archived" for i in archived),
        f"archived exactly the {len(expected_archived)} answered threads idle over 30 days "
        f"(got {len(archived)}; missing {sorted(expected_archived - archived)[:3]}, "
        f"extra {sorted(archived - expected_archived)[:3]})",
    )

    # Escalate: unanswered threads waiting over 7 days.
    escalate_now = manual_started["clubcollect_auto_escalate"]
    expected_escalated = {
        i
        for i, v in company(ESCALATE_COMPANY).items()
        if v["status"] == "unanswered" and (s := _unanswered_since(v)) and s < escalate_now - timedelta(days=7)
    }
    escalated = {i for i, v in inv1.items() if v["assigned_to_support"] and v["company_id"] == ESCALATE_COMPANY}
    phase.check(
        escalated == expected_escalated and bool(expected_escalated),
        f"assigned exactly the {len(expected_escalated)} threads waiting over 7 days to support (got {len(escalated)})",
    )

    # Reply with the hook: two runs, one after the other, each answer the thread waiting longest
    # (the oldest ticket awaiting an answer) and archive it.
    waiting = sorted(
        (
            (min(_dt(t["date"]) for t in v["tickets"] if t["sender"] == "CUSTOMER" and _dt(t["date"]) >= s), i)
            for i, v in company(REPLY_COMPANY).items()
            if v["status"] == "unanswered" and (s := _unanswered_since(v))
        )
    )
    expected_replied = {i for _, i in waiting[:2]}
    replied = {i for i, v in inv1.items() if v["tickets_created"] and v["company_id"] == REPLY_COMPANY}
    replies_ok = all(
        inv1[i]["tickets_created"] == 1
        and inv1[i]["status"] == "archived"
        and inv1[i]["tickets"][-1]["sender"] == "COMPANY"
        for i in replied
    )
    phase.check(
        replied == expected_replied and replies_ok,
        f"replied once to and archived each of the 2 threads waiting longest (got {len(replied)} threads, "
        f"{sum(inv1[i]['tickets_created'] for i in replied)} tickets created on them)",
    )
    # clubcollect_answer_invoice replies on one invoice per run; its message counts the thread's
    # tickets, so the second run's reply differs from the first: two tickets, one per run.
    answered = inv1[ANSWER_INVOICE]["tickets"][len(inv0[ANSWER_INVOICE]["tickets"]) :]
    phase.check(
        inv1[ANSWER_INVOICE]["tickets_created"] == 2 and [t["sender"] for t in answered] == ["COMPANY", "COMPANY"],
        "answer-invoice: one reply per run on its invoice, 2 in all",
    )
    phase.check(
        sum(v["tickets_created"] for v in inv1.values() if v["company_id"] in EXAMPLE_COMPANIES) == 4,
        "no ticket created twice: 4 replies in all in the seeded companies (2 answer-invoice, 2 reply-with-hook)",
    )
    untouched = {
        i
        for i, v in inv1.items()
        if v["company_id"] in (EXPORT_COMPANY,) and (v["actions"]["archive"] or v["actions"]["assign_to_support"])
    }
    phase.check(not untouched, "the read-only export company was not changed")


def check_escalated_once(phase: Phase, after: dict[str, Any]) -> None:
    """The daily escalation assigns each waiting thread once: over all runs of the auto-escalate DAG
    (logical date, manual, scheduled), no invoice is returned or assigned twice, and a later run assigns nothing."""
    dag_id = "clubcollect_auto_escalate"
    runs = [r for r in phase.records if r.dag_id == dag_id and r.state == "success"]
    returned = [xcom(phase.deploy, dag_id, r.run_id, "assign_to_support") or [] for r in runs]
    ids = [invoice_id for one in returned for invoice_id in one]
    counts = {
        i: v["actions"]["assign_to_support"]
        for i, v in after["invoices"].items()
        if v["company_id"] == ESCALATE_COMPANY
    }
    # A request retried after its answer was lost reaches the sandbox twice for one escalation: the
    # runs' own results say what each escalated, the sandbox which threads were reached.
    phase.check(
        len(runs) >= 2 and len(ids) == len(set(ids)) == sum(1 for n in counts.values() if n) and [] in returned,
        f"escalate once per episode: {len(runs)} runs of {dag_id} assigned {[len(one) for one in returned]} threads, "
        f"{len(set(ids))} distinct (assign requests per thread at most {max(counts.values(), default=0)})",
    )


def check_mapped(phase: Phase, before: dict[str, Any]) -> None:
    deploy = phase.deploy
    # What each company's fetch should count: the tickets of its unanswered threads.  The other
    # DAGs change no thread's status in companies 1 to 3 while the fan-out runs, only in 4.
    expected: dict[str, int] = {}
    for invoice in before["invoices"].values():
        if invoice["status"] == "unanswered" and invoice["company_id"] in EXAMPLE_COMPANIES:
            expected[invoice["company_id"]] = expected.get(invoice["company_id"], 0) + len(invoice["tickets"])
    hosts: set[str] = set()
    for record in phase.records:
        if record.dag_id != "clubcollect_fan_out":
            continue
        mapped = [t for t in task_instances(deploy, record.dag_id, record.run_id) if t["task_id"] == "fetch_unanswered"]
        indexes = sorted(t["map_index"] for t in mapped)
        once = all(t["try_number"] == 1 and t["state"] == "success" for t in mapped)
        phase.check(indexes == [0, 1, 2, 3] and once, f"fan-out {record.kind}: 4 mapped tasks, each ran once")
        hosts |= {t["hostname"] for t in mapped}
        totals = xcom(deploy, record.dag_id, record.run_id, "totals")
        # Replies change the status of threads in the reply company and of the answer-invoice DAG's one.
        shrinking = (REPLY_COMPANY, before["invoices"][ANSWER_INVOICE]["company_id"])
        stable = {c: n for c, n in expected.items() if c not in shrinking}
        phase.check(
            set(totals) == set(expected)
            and all(totals[c] == n for c, n in stable.items())
            and all(0 < totals[c] <= expected[c] for c in shrinking),
            f"fan-out {record.kind}: each company's unanswered tickets counted "
            f"{ {c[:6]: n for c, n in totals.items()} } (before the runs: { {c[:6]: n for c, n in expected.items()} }; "
            "replied threads leave the list)",
        )
    phase.notes.append(f"fan-out mapped tasks ran on: {', '.join(sorted(hosts))}")
    if phase.name == "celery":
        phase.check(len(hosts) >= 2, f"mapped tasks spread over both Celery workers ({', '.join(sorted(hosts))})")


# --- connection form, connection test, secrets, sockets ---------------------------------------------


def check_connection_test(phase: Phase) -> None:
    deploy = phase.deploy
    body = {"connection_id": "clubcollect_e2e", "conn_type": "clubcollect", "host": deploy.sandbox_base}
    good = deploy.api.call("POST", "/connections/test", {**body, "password": deploy.key})
    phase.check(good["status"] is True, f"REST connection test with the right key: {good['message']!r}")
    wrong_key = "wrong-" + secrets.token_hex(8)
    bad = deploy.api.call("POST", "/connections/test", {**body, "password": wrong_key})
    message = str(bad["message"])
    phase.check(
        bad["status"] is False and "key" in message.lower() and wrong_key not in message,
        f"REST connection test with a wrong key names the key problem: {message!r}",
    )


def screenshot_connection_form(phase: Phase) -> None:
    """The ClubCollect form in Airflow's UI, for the docs' connection page."""
    deploy = phase.deploy
    # A stored connection to open in the form (its key is Fernet-encrypted in the database).
    deploy.api.call(
        "POST",
        "/connections",
        {
            "connection_id": "clubcollect_default",
            "conn_type": "clubcollect",
            "description": "ClubCollect partner API",
            "host": "sandbox.clubcollect.com",
            "password": deploy.key,
            "extra": json.dumps({"timeout": 30, "max_retries": 5}),
        },
        ok=(200, 201, 409),
    )
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="e2e-chromium-")
    base = f"http://127.0.0.1:{deploy.api_port}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile,
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
                viewport={"width": 1280, "height": 1000},
            )
            browser.add_cookies([{"name": "_token", "value": deploy.api.token, "url": base}])
            page = browser.new_page()
            page.goto(f"{base}/connections", wait_until="networkidle")
            page.get_by_text("clubcollect_default", exact=True).first.wait_for(timeout=30000)
            page.get_by_role("button", name="Edit Connection").first.click()
            page.get_by_text("API key").first.wait_for(timeout=30000)
            page.wait_for_timeout(1000)
            dialog = page.get_by_role("dialog")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            dialog.screenshot(path=str(SCREENSHOT))
            text = dialog.inner_text()
            # The typed extras are in a second section of the accordion (it opens one at a time).
            page.get_by_text("Extra Fields", exact=True).first.click()
            page.get_by_text("Max retries").first.wait_for(timeout=30000)
            page.wait_for_timeout(1000)
            dialog.screenshot(path=str(SCREENSHOT_EXTRAS))
            text += dialog.inner_text()
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    phase.check(
        all(label in text for label in ("API key", "Base URL", "Timeout", "Max retries")) and deploy.key not in text,
        f"the UI shows the ClubCollect form (screenshots in {SCREENSHOT.parent.relative_to(REPO)})",
    )
    deploy.api.call("DELETE", "/connections/clubcollect_default")


def statsd_listener() -> tuple[int, list[str]]:
    """A StatsD server on 127.0.0.1, in a thread: its port, and the list it appends every line it receives to."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    lines: list[str] = []

    def serve() -> None:
        while True:
            lines.extend(server.recv(65535).decode(errors="replace").splitlines())

    threading.Thread(target=serve, name="statsd", daemon=True).start()
    return server.getsockname()[1], lines


def clubcollect_counts(lines: list[str]) -> Counter[str]:
    """The provider's StatsD counters (``airflow.clubcollect.<name>:<n>|c``), summed by name."""
    counts: Counter[str] = Counter()
    for line in lines:
        name, _, value = line.partition(":")
        if name.startswith("airflow.clubcollect.") and value.endswith("|c"):
            counts[name.removeprefix("airflow.clubcollect.")] += int(value.split("|")[0])
    return counts


def check_metrics(phase: Phase, sandbox: Any, lines: list[str], start: int) -> None:
    """The requests the provider counted in every component, per call and outcome, against the sandbox's log."""
    from airflow_provider_clubcollect.observability import route
    from airflow_provider_clubcollect.wire import ApiRequest

    for _ in range(30):  # a quiet moment: every request logged was answered, none arrived since
        logged = sandbox.requests()
        time.sleep(1)  # the metrics of answers just given arrive (UDP on loopback)
        seen = clubcollect_counts(lines[start:])
        if len(sandbox.requests()) == len(logged) and all(r["status"] or r["fault"] for r in logged):
            break
    expected = Counter(
        f"requests.{route(ApiRequest(r['method'], r['path'].removeprefix('/api/'), ''))[0]}."
        + ("dropped" if r["status"] is None else "429" if r["status"] == 429 else f"{r['status'] // 100}xx")
        for r in logged
    )
    counted = Counter({name: n for name, n in seen.items() if name.startswith("requests.")})
    phase.check(
        counted == expected,
        f"metrics: StatsD counted {counted.total()} requests by call and outcome, as the sandbox's log "
        f"({len(logged)} since the phase began){'' if counted == expected else f': {counted} vs {expected}'}",
    )
    throttled = sum(r["status"] == 429 for r in logged)
    phase.check(
        throttled > 0 and sum(seen[f"retries.{name[9:]}"] for name in counted if name.endswith(".429")) == throttled,
        f"metrics: {throttled} 429s answered, each counted as a request and as a retry",
    )


def check_metrics_hold_no_secret(phase: Phase, sandbox: Any, lines: list[str]) -> None:
    """No line the components sent to StatsD holds the key, a company or invoice ID, or a ticket's text."""
    state = sandbox.state()
    secrets_ = {phase.deploy.key, *state["companies"], *state["invoices"]}
    secrets_ |= {t["message"] for i in state["invoices"].values() for t in i["tickets"] if len(t["message"]) >= 8}
    ours = [line for line in lines if line.startswith("airflow.clubcollect.")]
    leaked = [line for line in lines if any(secret in line for secret in secrets_)]
    counts = clubcollect_counts(ours)
    phase.check(
        len(ours) > 100 and not leaked,
        f"metrics: none of {len(lines)} StatsD lines ({len(ours)} the provider's) holds the key, an ID or a message "
        f"{leaked[:3]}",
    )
    phase.check(
        counts["watcher.polls.ok"] > 0 and counts["watcher.tickets_reported"] == 4 + len(BURST),
        f"metrics: the watcher's polls ({counts['watcher.polls.ok']}) and its {4 + len(BURST)} tickets reported "
        "(4, then a burst), from the triggerer",
    )


def check_secrets(phase: Phase) -> None:
    deploy = phase.deploy
    key = deploy.key.encode()
    leaked = []
    files = 0
    for path in [*HOME.rglob("*"), *LOGS.glob("*.log")]:
        if path.is_file() and path.name != "sandbox.log":  # the sandbox is the server: it knows its key
            files += 1
            if key in path.read_bytes():
                leaked.append(str(path.relative_to(WORK)))
    phase.check(not leaked, f"the API key is in none of {files} log and home files {leaked[:5]}")

    pg = postgres_bin()
    dump = subprocess.run(
        [str(pg / "pg_dump"), "-h", "127.0.0.1", "-p", str(deploy.pg_port), "-U", "airflow", "airflow"],
        capture_output=True,
        check=True,
    ).stdout
    phase.check(len(dump) > 100_000 and key not in dump, f"the API key is in no table ({len(dump):,} bytes of pg_dump)")

    redis_cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(deploy.redis_port)]
    keys = subprocess.run([*redis_cli, "--scan"], capture_output=True, check=True).stdout.split()
    subprocess.run([*redis_cli, "SAVE"], capture_output=True, check=True)
    rdb = (deploy.redis_dir / "dump.rdb").read_bytes()
    phase.check(
        key not in rdb and all(key not in k for k in keys),
        f"the API key is in no Redis key or value ({len(keys)} keys, {len(rdb):,} bytes saved uncompressed)",
    )


def check_loopback_only(phase: Phase) -> None:
    import psutil

    pids: set[int] = set()
    for component in phase.deploy.stack.components:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(component.process.pid)
            pids |= {parent.pid, *(c.pid for c in parent.children(recursive=True))}
    listening = [
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    outside = [entry for entry in listening if entry[0] not in ("127.0.0.1", "::1")]
    phase.check(
        bool(listening) and not outside,
        f"all {len(listening)} listening sockets are on loopback {outside}",
    )


# --- main ---------------------------------------------------------------------------------------------


def print_summary(phases: list[Phase], stack: Stack, started: float) -> None:
    rows = [("component / DAG run", "state", "duration")]
    for component in [*stack.stopped, *stack.components]:
        end = component.stopped or time.monotonic()
        state = "stopped" if component.stopped else ("running" if component.alive() else "exited")
        rows.append((f"{component.name} (pid {component.process.pid})", state, f"{end - component.started:.0f} s up"))
    for phase in phases:
        for record in phase.records:
            duration = f"{record.duration:.0f} s" if record.duration is not None else "-"
            rows.append((f"[{phase.name}] {record.dag_id} ({record.kind})", record.state, duration))
    for phase in phases:
        rows.append(
            (
                f"[{phase.name}] checks",
                "passed" if not phase.failures else "FAILED",
                f"{len(phase.notes)} ok, {len(phase.failures)} failed",
            )
        )
    rows.append(
        (
            "make e2e",
            "passed" if all(not p.failures for p in phases) and phases else "FAILED",
            f"{time.monotonic() - started:.0f} s",
        )
    )
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "+".join("-" * (w + 2) for w in width)
    print(f"\n+{line}+")
    for n, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, width, strict=False)) + " |")
        if n == 0:
            print(f"+{line}+")
    print(f"+{line}+", flush=True)


def main() -> int:
    started = time.monotonic()
    if os.geteuid() != 0:
        print("make e2e runs PostgreSQL as the 'postgres' user and so needs root.", file=sys.stderr)
        return 2
    shutil.rmtree(WORK, ignore_errors=True)
    LOGS.mkdir(parents=True)
    (HOME / "dags").mkdir(parents=True)
    for dag_file in [*EXAMPLE_DAGS.glob("*.py"), DEFERRED_DAG, RETRIED_DAG, BUDGET_DAG]:
        text = dag_file.read_text()
        if dag_file.stem == WATCH_DAG_ID:  # watch a company of e2e's own, not one the others act on
            text = re.sub(r'SANDBOX_COMPANY_ID = "\w+"', f'SANDBOX_COMPANY_ID = "{WATCH_COMPANY}"', text)
            if WATCH_COMPANY not in text:
                raise E2EError(f"could not point {dag_file.name} at {WATCH_COMPANY}")
        if dag_file.stem == EXPORT_DAG_ID:  # export into e2e's folder, not the example's /tmp default
            text = text.replace('"file:///tmp/clubcollect-exports"', repr(EXPORTS.as_uri()).replace("'", '"'))
            if EXPORTS.as_uri() not in text:
                raise E2EError(f"could not point {dag_file.name} at {EXPORTS}")
        (HOME / "dags" / dag_file.name).write_text(text)
    scratch = Path(tempfile.mkdtemp(prefix="clubcollect-e2e-"))
    os.chmod(scratch, 0o755)

    stack = Stack()
    phases: list[Phase] = []

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    try:
        from cryptography.fernet import Fernet

        statsd_port, metric_lines = statsd_listener()
        ports = {"pg": free_port(), "redis": free_port(), "sandbox": free_port(), "api": free_port()}
        ports["statsd"] = statsd_port
        key = "e2e-key-" + secrets.token_hex(16)
        env = airflow_env(key, ports, Fernet.generate_key().decode(), secrets.token_urlsafe(64))
        password = secrets.token_urlsafe(12)
        (HOME / "passwords.json").write_text(json.dumps({"admin": password}))
        deploy = Deployment(
            stack,
            key,
            ports["pg"],
            ports["redis"],
            ports["sandbox"],
            ports["api"],
            scratch / "pg",
            scratch / "redis",
            env,
        )

        say(f"PostgreSQL on 127.0.0.1:{ports['pg']}, Redis on :{ports['redis']} (throwaway data in {scratch})")
        start_postgres(stack, deploy.pg_data, deploy.pg_port)
        deploy.redis_dir.mkdir()
        stack.start(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(ports["redis"]),
                "--dir",
                str(deploy.redis_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--rdbcompression",
                "no",
                "--protected-mode",
                "yes",
            ],
            {"PATH": os.environ["PATH"]},
        )
        stack.start(
            "sandbox",
            [
                sys.executable,
                "-m",
                "airflow_provider_clubcollect.sandbox",
                "--port",
                str(ports["sandbox"]),
                "--api-key",
                key,
            ],
            {**env, "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT": ""},
        )
        say("airflow db migrate")
        run([AIRFLOW, "db", "migrate"], env=env)
        say(f"api-server on 127.0.0.1:{ports['api']}, dag-processor, triggerer")
        start_airflow(stack, env, ports["api"])
        base = f"http://127.0.0.1:{ports['api']}"
        wait_until("the api-server", lambda: api_up(base), 180, stack, 2)
        deploy.api = Api(base, password)
        budget_dags = [f"{BUDGET_DAG.stem}_{variant}" for variant in BUDGET_VARIANTS]
        wait_for_dags(deploy, [*dag_ids(), REVIEW_DAG_ID, WATCH_DAG_ID, DEFERRED_DAG_ID, RETRIED_DAG_ID, *budget_dags])

        # LocalExecutor.
        local = Phase("local", deploy)
        phases.append(local)
        scheduler = stack.start("scheduler-local", [AIRFLOW, "scheduler", "--skip-serve-logs"], env)
        check_connection_test(local)
        screenshot_connection_form(local)
        started_lines = len(metric_lines)  # quiet: run_phase empties the sandbox's request log first
        run_phase(local, datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1))
        check_metrics(local, sandbox_client(deploy), metric_lines, started_lines)
        run_watcher(local, sandbox_client(deploy))
        check_metrics_hold_no_secret(local, sandbox_client(deploy), metric_lines)
        check_secrets(local)
        check_loopback_only(local)
        stack.stop(scheduler)

        # CeleryExecutor with two workers.
        celery_env = {**env, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
        celery = Phase("celery", deploy)
        phases.append(celery)
        say("CeleryExecutor: scheduler and two workers")
        stack.start("scheduler-celery", [AIRFLOW, "scheduler", "--skip-serve-logs"], celery_env)
        for n in (1, 2):
            stack.start(
                f"celery-worker-{n}",
                [
                    AIRFLOW,
                    "celery",
                    "worker",
                    "--skip-serve-logs",
                    "--concurrency",
                    "2",
                    "--celery-hostname",
                    f"worker{n}@%h",
                ],
                {**celery_env, "CLUBCOLLECT_E2E_HOSTNAME": f"celery-worker-{n}"},
            )
        run_phase(celery, datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2))
        run_budget(celery, sandbox_client(deploy))
        check_secrets(celery)
        check_loopback_only(celery)
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}); stopping everything")
        phases.append(Phase("interrupted", None, failures=["interrupted"]))  # type: ignore[arg-type]
    except Exception as exc:  # anything at all: still stop everything and print the table
        say(f"FAILED: {type(exc).__name__}: {exc}")
        phases.append(Phase("error", None, failures=[str(exc)]))  # type: ignore[arg-type]
    finally:
        stack.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
        print_summary(phases, stack, started)
    failures = [f"[{p.name}] {f}" for p in phases for f in p.failures]
    if failures:
        print("\nFailed:\n" + "\n".join(f"- {f}" for f in failures))
        print(f"Logs: {LOGS}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
