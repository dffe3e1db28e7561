"""`make e2e-airflow2`: a short deployment run of the provider on Airflow 2.11.

Run it in the Airflow 2.11 venv (``make install AIRFLOW=2.11``), as root::

    .venv-airflow-2.11/bin/python -m dev.e2e_airflow2 [--keep]

It starts, on 127.0.0.1 only and with throwaway data in one temporary folder: the ClubCollect
sandbox, a PostgreSQL cluster (Debian's package, run as the ``postgres`` user), and Airflow 2.11's
``scheduler`` (LocalExecutor, DAG parsing inside it) and ``triggerer``, configured as users deploy
them: the connection as ``AIRFLOW_CONN_CLUBCOLLECT_DEFAULT`` in JSON, never in the database.
Airflow is driven through its CLI (``dags unpause``, ``dags trigger``) and read through the
metadata database.  It checks:

- the deferrable sensor (``tests/dags/dag_files/clubcollect_test_deferred_wait.py``) on a company
  with nothing waiting goes to ``deferred``, its ``UnansweredTicketsTrigger`` row is claimed by the
  triggerer (the row's kwargs, decrypted, hold no API key), rides out a 503 that quotes the
  Authorization header, and once a customer ticket arrives the triggerer fires it (its own log
  says so), the task resumes in the same try, the sensor's XCom is that ticket and the ticket's
  thread is escalated on the sandbox;
- the archive example (``example_dags/clubcollect_archive_stale.py``), unpaused (its scheduled run)
  and triggered, ends green with exactly the answered threads idle for over 30 days archived
  (``selection.select_threads``), its first request having met a 503 quoting the key;
- the API key (or any 12 characters of it) is in no file under AIRFLOW_HOME, no output of the
  scheduler, triggerer, PostgreSQL or the CLI, and no column of any table (``pg_dump``, bytea
  values decoded); the scan is shown to work on the sandbox's own output, which prints the key;
- every socket the processes started here listen on is on loopback.

Everything started is stopped by process group, also on failure and on Ctrl-C, and the folder is
removed (``--keep`` keeps it and prints where).  The last lines are a PASS/FAIL summary with
timings; the exit status is 0 only when every check passed.  Every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dev.deployment import (
    AIRFLOW,
    DeploymentError,
    Stack,
    airflow_env,
    free_port,
    loopback_only,
    postgres_bin,
    say,
    start_postgres,
    start_sandbox,
    stop_on_signals,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


REPO = Path(__file__).resolve().parent.parent

ARCHIVE_DAG = REPO / "example_dags" / "clubcollect_archive_stale.py"
ARCHIVE_DAG_ID = "clubcollect_archive_stale"
ARCHIVE_TASK_ID = "archive_stale_answered"


def _archive_company() -> str:
    """The company the archive example acts on (its params' default: the sandbox seed's first company)."""
    found = re.search(r'SANDBOX_COMPANY_ID = "(\w+)"', ARCHIVE_DAG.read_text())
    if not found:
        raise SystemExit(f"no SANDBOX_COMPANY_ID in {ARCHIVE_DAG}")
    return found.group(1)


ARCHIVE_COMPANY = _archive_company()
DEFER_DAG = REPO / "tests" / "dags" / "dag_files" / "clubcollect_test_deferred_wait.py"
DEFER_DAG_ID = "clubcollect_test_deferred_wait"
TRIGGER_CLASSPATH = "airflow_provider_clubcollect.triggers.tickets.UnansweredTicketsTrigger"
# A company added for the deferral: one thread with no ticket, so nothing waits at first.
DEFER_COMPANY = "e2e0airflow2deferred".ljust(40, "0")
DEFER_INVOICE = "e2e0airflow2invoice".ljust(40, "0")
DEFER_TICKET = "e2e0airflow2ticket".ljust(40, "0")

# The masking probe: user code that logs the key, once in a task (its logger and its stdout) and
# once in a trigger, as a careless DAG author would.  Airflow's secrets masker must turn each into
# ***: the provider registers the key with it (and Airflow 2.11 does so for every Connection it
# builds).  The provider's own messages never carry the key (it scrubs answers that quote it), so
# only such a probe shows that masking itself works in the worker and in the triggerer.
PROBE_DAG_ID = "clubcollect_e2e_masking_probe"
PROBE = "masking-probe"
PROBE_SOURCE = f'''"""Written by dev/e2e_airflow2.py: logs the ClubCollect API key on purpose, for masking to hide."""

from __future__ import annotations

import asyncio

import pendulum
from airflow import DAG
from airflow.models.baseoperator import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook


class KeyProbeTrigger(BaseTrigger):
    def serialize(self):
        return ("{PROBE_DAG_ID}.KeyProbeTrigger", {{}})

    async def run(self):
        settings = await asyncio.to_thread(lambda: ClubCollectHook().settings)
        self.log.warning("{PROBE} in the triggerer: the key is %s", settings.api_key)
        yield TriggerEvent({{"logged": True}})


class KeyProbeOperator(BaseOperator):
    def execute(self, context):
        key = ClubCollectHook().settings.api_key
        self.log.warning("{PROBE} on the worker: the key is %s", key)
        print(f"{PROBE} on the worker's stdout: the key is {{key}}")
        self.defer(trigger=KeyProbeTrigger(), method_name="done")

    def done(self, context, event=None):
        return "probed"


with DAG(dag_id="{PROBE_DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    KeyProbeOperator(task_id="log_the_key")
'''

DAG_TIMEOUT = 180.0  # seconds a DAG run may take
START_TIMEOUT = 120.0  # seconds for a component to come up, or the DAG files to be parsed
CLI_TIMEOUT = 120.0


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the run ------------------------------------------------------------------------------------------


@dataclass
class Run:
    """The deployment and what the checks found."""

    scratch: Path
    key: str
    ports: dict[str, int]
    stack: Stack
    env: dict[str, str] = field(default_factory=dict)
    checks: list[tuple[bool, str]] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)
    cli_output: list[str] = field(default_factory=list)
    db: Any = None
    sandbox: Any = None
    deferral: dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.scratch / "airflow"

    @property
    def logs(self) -> Path:
        return self.scratch / "logs"

    def check(self, ok: bool, message: str) -> bool:
        self.checks.append((ok, message))
        say(f"{'ok  ' if ok else 'FAIL'} {message}")
        return ok

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        say(f"{name} ...")
        try:
            yield
        finally:
            self.timings.append((name, time.monotonic() - started))

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            cwd=self.scratch,
            stdin=subprocess.DEVNULL,
        )
        output = done.stdout + done.stderr
        self.cli_output.append(output)
        if done.returncode != 0:
            raise DeploymentError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{output[-3000:]}")
        return output

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with self.db.cursor() as cursor:
            cursor.execute(sql, params)
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def key_fragments(key: str, size: int = 12) -> list[bytes]:
    """Every 12 characters of the key: a message cut short may still quote part of it."""
    return [key[start : start + size].encode() for start in range(len(key) - size + 1)]


def leaks(content: bytes, fragments: list[bytes]) -> bool:
    return any(fragment in content for fragment in fragments)


def deployment_env(run: Run) -> dict[str, str]:
    db = f"postgresql+psycopg2://airflow@127.0.0.1:{run.ports['pg']}/airflow"
    return airflow_env(run.home, free_port(), db) | {
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
        "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        # The provider's connection, as users deploy it: an environment variable on every
        # component (the key then never enters the metadata database).
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT": json.dumps(
            {"conn_type": "clubcollect", "password": run.key, "host": f"http://127.0.0.1:{run.ports['sandbox']}/api"}
        ),
    }


def start(run: Run) -> None:
    run.logs.mkdir()
    (run.home / "dags").mkdir(parents=True)
    for dag_file in (ARCHIVE_DAG, DEFER_DAG):
        shutil.copy(dag_file, run.home / "dags" / dag_file.name)
    (run.home / "dags" / f"{PROBE_DAG_ID}.py").write_text(PROBE_SOURCE)
    run.env = deployment_env(run)

    with run.step("sandbox and PostgreSQL"):
        run.sandbox = start_sandbox(run.stack, run.ports["sandbox"], run.key, "--seed", "0")
        start_postgres(run.stack, run.scratch / "pg", run.ports["pg"])

    with run.step("airflow db migrate"):
        run.cli("db", "migrate")
        import psycopg2

        run.db = psycopg2.connect(host="127.0.0.1", port=run.ports["pg"], user="airflow", dbname="airflow")
        run.db.autocommit = True

    with run.step("scheduler and triggerer up, DAG files parsed"):
        run.stack.start("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"], run.env)
        run.stack.start("triggerer", [AIRFLOW, "triggerer", "--skip-serve-logs"], run.env)

        def parsed() -> bool:
            errors = run.query("SELECT filename, stacktrace FROM import_error")
            if errors:
                raise DeploymentError(f"DAG import errors: {errors}")
            found = {r["dag_id"] for r in run.query("SELECT dag_id FROM serialized_dag")}
            return {ARCHIVE_DAG_ID, DEFER_DAG_ID, PROBE_DAG_ID} <= found

        wait_until("the scheduler to parse the DAG files", parsed, START_TIMEOUT, run.stack, 1)

        def triggerer_up() -> bool:
            return bool(
                run.query(
                    "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' "
                    "AND latest_heartbeat IS NOT NULL"
                )
            )

        wait_until("the triggerer's job", triggerer_up, START_TIMEOUT, run.stack, 1)


# --- the scenarios --------------------------------------------------------------------------------------


def run_states(run: Run, dag_id: str) -> list[dict[str, Any]]:
    return run.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = %s ORDER BY id", dag_id)


def task_instance(run: Run, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
    rows = run.query(
        "SELECT state, try_number, trigger_id, next_method FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index = -1",
        dag_id,
        run_id,
        task_id,
    )
    return rows[0] if rows else None


def xcom(run: Run, dag_id: str, run_id: str, task_id: str) -> Any:
    rows = run.query(
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND key = 'return_value' "
        "AND map_index = -1",
        dag_id,
        run_id,
        task_id,
    )
    if not rows:
        return None
    return json.loads(bytes(rows[0]["value"]).decode())


def wait_for_run(run: Run, dag_id: str, run_id: str, timeout: float = DAG_TIMEOUT) -> str:
    def finished() -> str | None:
        rows = [r for r in run_states(run, dag_id) if r["run_id"] == run_id]
        return rows[0]["state"] if rows and rows[0]["state"] in ("success", "failed") else None

    state: str = wait_until(f"{dag_id} run {run_id}", finished, timeout, run.stack, 1)
    return state


def decrypt_kwargs(run: Run, stored: str) -> bytes:
    """A trigger row's kwargs as Airflow 2.11 stores them: Fernet-encrypted serialized JSON."""
    from cryptography.fernet import Fernet

    if stored.startswith("{"):
        return stored.encode()
    return Fernet(run.env["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(stored.encode())


def start_deferral(run: Run) -> str:
    """Trigger the deferrable sensor on a company with nothing waiting; wait until the triggerer holds it."""
    run.sandbox.add_company(DEFER_COMPANY, "E2E Airflow 2")
    run.sandbox.add_invoice(DEFER_INVOICE, DEFER_COMPANY)
    run_id = f"e2e2__deferred__{int(time.time())}"
    run.cli("dags", "unpause", DEFER_DAG_ID)
    run.cli("dags", "trigger", DEFER_DAG_ID, "--run-id", run_id, "--conf", json.dumps({"company_id": DEFER_COMPANY}))

    def deferred() -> dict[str, Any] | None:
        ti = task_instance(run, DEFER_DAG_ID, run_id, "wait")
        if ti and ti["state"] in ("success", "failed", "skipped", "up_for_retry"):
            raise DeploymentError(f"the sensor ended {ti['state']} without deferring")
        return ti if ti and ti["state"] == "deferred" else None

    ti = wait_until("the sensor to defer", deferred, DAG_TIMEOUT, run.stack, 1)
    rows = run.query("SELECT id, classpath, kwargs, triggerer_id FROM trigger WHERE id = %s", ti["trigger_id"])
    trigger = rows[0] if rows else {}
    run.check(
        trigger.get("classpath") == TRIGGER_CLASSPATH and ti["next_method"] == "execute_complete",
        f"the sensor is deferred (state {ti['state']}, next_method {ti['next_method']}) "
        f"on trigger {ti['trigger_id']} ({trigger.get('classpath')})",
    )
    if trigger:
        kwargs = decrypt_kwargs(run, trigger["kwargs"])
        run.check(
            DEFER_COMPANY.encode() in kwargs and not leaks(kwargs, key_fragments(run.key)),
            f"the trigger row's kwargs, decrypted ({len(kwargs)} bytes), name the company and hold no API key",
        )

    def held() -> int | None:
        found = run.query("SELECT triggerer_id FROM trigger WHERE id = %s", ti["trigger_id"])
        return found[0]["triggerer_id"] if found and found[0]["triggerer_id"] else None

    job_id = wait_until("the triggerer to claim the trigger", held, 60, run.stack, 1)
    job = run.query("SELECT job_type, state FROM job WHERE id = %s", job_id)
    run.check(
        bool(job) and job[0]["job_type"] == "TriggererJob" and job[0]["state"] == "running",
        f"triggerer job {job_id} ({job[0]['job_type'] if job else '?'}) holds the trigger",
    )
    run.deferral = {"run_id": run_id, "trigger_id": ti["trigger_id"], "triggerer_job": job_id}
    return run_id


def echo_faults(run: Run) -> None:
    """The next read of each scenario's company meets a 503 whose body quotes the Authorization header.

    The deferred company is polled by the triggerer only (the worker's first poke is over), the
    archive company by the worker: masking is exercised in both processes.
    """
    run.sandbox.clear_requests()
    run.sandbox.set_faults(
        echo_authorization=True,
        script=[
            {"fault": "error", "status": 503, "method": "GET", "path_regex": DEFER_COMPANY},
            {"fault": "error", "status": 503, "method": "GET", "path_regex": ARCHIVE_COMPANY},
        ],
    )


def met_503(run: Run, company: str) -> bool:
    return any(r["status"] == 503 and company in r["path"] for r in run.sandbox.requests())


def start_archive(run: Run) -> tuple[list[str], str]:
    """Unpause (a scheduled run) and trigger (a manual run) the archive example."""
    from airflow_provider_clubcollect.selection import select_threads

    state = run.sandbox.state()["invoices"]
    answered = [
        dict(t, invoice_id=invoice_id)
        for invoice_id, invoice in sorted(state.items())
        if invoice["company_id"] == ARCHIVE_COMPANY and invoice["status"] == "answered"
        for t in invoice["tickets"]
    ]
    expected = select_threads(answered, timedelta(days=30), datetime.now(timezone.utc))
    if not expected:
        raise DeploymentError("the sandbox's seed should hold stale answered threads for the archive example")
    run_id = f"e2e2__archive__{int(time.time())}"
    run.cli("dags", "unpause", ARCHIVE_DAG_ID)
    run.cli("dags", "trigger", ARCHIVE_DAG_ID, "--run-id", run_id)
    return expected, run_id


def finish_deferral(run: Run, run_id: str) -> None:
    from airflow_provider_clubcollect.sandbox.client import ticket

    info = run.deferral

    def retried() -> bool:  # the trigger's poll met the echoing 503, and its retry was answered (nothing waiting)
        statuses = [r["status"] for r in run.sandbox.requests() if DEFER_COMPANY in r["path"]]
        return 503 in statuses and 200 in statuses[statuses.index(503) + 1 :]

    wait_until("the trigger to meet the echoing 503 and retry", retried, 60, run.stack, 0.5)
    ti = task_instance(run, DEFER_DAG_ID, run_id, "wait")
    run.check(
        ti is not None and ti["state"] == "deferred",
        "the trigger met the 503 quoting the key in the triggerer, retried, and still waits "
        f"(state {ti and ti['state']})",
    )
    arrived = time.monotonic()
    run.sandbox.add_tickets(
        DEFER_INVOICE,
        [ticket("Ik wil niet betalen.", "CUSTOMER", datetime.now(timezone.utc), ticket_id=DEFER_TICKET)],
    )
    state = wait_for_run(run, DEFER_DAG_ID, run_id)
    run.check(
        state == "success",
        f"{DEFER_DAG_ID} run ended {state}, {time.monotonic() - arrived:.1f} s after the ticket arrived",
    )

    ti = task_instance(run, DEFER_DAG_ID, run_id, "wait") or {}
    run.check(
        ti.get("state") == "success" and ti.get("try_number") == 1 and ti.get("trigger_id") is None,
        f"the sensor resumed in its first try (state {ti.get('state')}, try {ti.get('try_number')}, "
        f"trigger_id now {ti.get('trigger_id')})",
    )
    name = f"{DEFER_DAG_ID}/{run_id}/wait/-1/1 (ID {info['trigger_id']})"
    triggerer_log = (run.logs / "triggerer.log").read_text(errors="replace")
    trigger_logs = list((run.home / "logs").rglob("*.trigger.*.log"))
    fired = [
        p for p in trigger_logs if run_id in str(p) and "Trigger " + name + " fired" in p.read_text(errors="replace")
    ]
    run.check(
        f"trigger {name} starting" in triggerer_log and f"trigger {name} completed" in triggerer_log and bool(fired),
        f"the triggerer ran trigger {info['trigger_id']} and fired it "
        f"(its log: starting/completed; {fired[0].name if fired else 'no trigger log file'}: fired)",
    )
    with contextlib.suppress(DeploymentError):
        wait_until(
            "the trigger row's clean-up",
            lambda: not run.query("SELECT id FROM trigger WHERE id = %s", info["trigger_id"]),
            30,
            run.stack,
        )
    remaining = run.query("SELECT id FROM trigger WHERE id = %s", info["trigger_id"])
    run.check(not remaining, f"the triggerer removed trigger row {info['trigger_id']} after it fired")

    returned = xcom(run, DEFER_DAG_ID, run_id, "wait")
    ids = [t.get("ticket_id") for t in returned or []]
    run.check(ids == [DEFER_TICKET], f"the sensor's XCom holds the arrived ticket ({ids})")
    escalated = xcom(run, DEFER_DAG_ID, run_id, "escalate")
    invoice = run.sandbox.invoice(DEFER_INVOICE)
    run.check(
        invoice["assigned_to_support"]
        and invoice["actions"]["assign_to_support"] == 1
        and escalated == [DEFER_INVOICE],
        f"the thread was escalated once on the sandbox (actions {invoice['actions']}, escalate XCom {escalated})",
    )


def finish_archive(run: Run, expected: list[str], manual_run_id: str) -> None:
    def all_done() -> list[dict[str, Any]] | None:
        runs = run_states(run, ARCHIVE_DAG_ID)
        ours = [r for r in runs if r["run_id"] == manual_run_id]
        # Unpausing makes the scheduler create the latest interval's run (catchup=False) too.
        scheduled = [r for r in runs if r["run_type"] == "scheduled"]
        return runs if ours and scheduled and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(f"{ARCHIVE_DAG_ID}'s manual and scheduled runs", all_done, DAG_TIMEOUT, run.stack, 1)
    kinds = sorted(f"{r['run_type']}:{r['state']}" for r in runs)
    run.check(
        all(r["state"] == "success" for r in runs) and "scheduled:success" in kinds and "manual:success" in kinds,
        f"{ARCHIVE_DAG_ID}: every run succeeded ({', '.join(kinds)})",
    )
    archived_by_runs = sorted(
        {i for r in runs for i in (xcom(run, ARCHIVE_DAG_ID, r["run_id"], ARCHIVE_TASK_ID) or [])}
    )
    state = run.sandbox.state()["invoices"]
    archived = sorted(i for i, inv in state.items() if inv["actions"]["archive"])
    run.check(
        archived == expected
        and archived_by_runs == expected
        and all(state[i]["status"] == "archived" for i in expected),
        f"{ARCHIVE_DAG_ID}: exactly the {len(expected)} answered threads idle over 30 days were archived "
        f"(sandbox {len(archived)}, XComs {len(archived_by_runs)})",
    )
    run.check(
        met_503(run, ARCHIVE_COMPANY), f"{ARCHIVE_DAG_ID}: its first read met the 503 quoting the key, and was retried"
    )


def start_probe(run: Run) -> str:
    run_id = f"e2e2__probe__{int(time.time())}"
    run.cli("dags", "unpause", PROBE_DAG_ID)
    run.cli("dags", "trigger", PROBE_DAG_ID, "--run-id", run_id)
    return run_id


def finish_probe(run: Run, run_id: str) -> None:
    """The key the probe logged is *** in the task's log (logger and stdout) and the trigger's log."""
    state = wait_for_run(run, PROBE_DAG_ID, run_id)
    folder = run.home / "logs" / f"dag_id={PROBE_DAG_ID}" / f"run_id={run_id}" / "task_id=log_the_key"
    task_log = "\n".join(p.read_text(errors="replace") for p in folder.glob("attempt=*.log"))
    trigger_log = "\n".join(p.read_text(errors="replace") for p in folder.glob("*.trigger.*.log"))
    triggerer_out = (run.logs / "triggerer.log").read_text(errors="replace")
    lines = {
        "the worker's log": (task_log, f"{PROBE} on the worker: the key is ***"),
        "the worker's stdout": (task_log, f"{PROBE} on the worker's stdout: the key is ***"),
        "the trigger's log": (trigger_log + triggerer_out, f"{PROBE} in the triggerer: the key is ***"),
    }
    for where, (text, masked) in lines.items():
        run.check(
            state == "success" and masked in text,
            f"masking: a task that logs the key shows it as *** in {where} (run {state})",
        )


# --- secrets and sockets ---------------------------------------------------------------------------------


HEX_BYTEA = re.compile(rb"\\\\?x((?:[0-9a-f]{2}){4,})")


def check_secrets(run: Run) -> None:
    fragments = key_fragments(run.key)
    # The scan works: the sandbox prints the key it accepts when it starts.
    run.check(
        leaks((run.logs / "sandbox.log").read_bytes(), fragments),
        "the key scan finds the key in the sandbox's own banner",
    )

    leaked = []
    files = 0
    for path in [*run.home.rglob("*"), *run.logs.glob("*.log")]:
        if path.is_file() and path.name != "sandbox.log":  # the sandbox is the server: it knows its key
            files += 1
            if leaks(path.read_bytes(), fragments):
                leaked.append(str(path.relative_to(run.scratch)))
    task_logs = [p for p in (run.home / "logs").rglob("*.log") if "dag_id=" in str(p)]
    run.check(
        not leaked and len(task_logs) >= 3,
        f"the API key is in none of {files} files (AIRFLOW_HOME, {len(task_logs)} task and trigger logs, "
        f"scheduler/triggerer/PostgreSQL output) {leaked[:5]}",
    )
    masked = [p.name for p in task_logs if b"***" in p.read_bytes()]
    say(f"note: task/trigger logs showing a masked value (***): {masked or 'none'}")
    run.check(
        not leaks("\n".join(run.cli_output).encode(), fragments),
        f"the API key is in no output of the {len(run.cli_output)} CLI calls",
    )

    pg = postgres_bin()
    dump = subprocess.run(
        [str(pg / "pg_dump"), "--data-only", "-h", "127.0.0.1", "-p", str(run.ports["pg"]), "-U", "airflow", "airflow"],
        capture_output=True,
        check=True,
        timeout=CLI_TIMEOUT,
    ).stdout
    # bytea columns (XCom values, pickled callbacks) are dumped as hex: decode them too.
    decoded = b"\n".join(bytes.fromhex(m.group(1).decode()) for m in HEX_BYTEA.finditer(dump))
    xcoms = run.query("SELECT count(*) AS n FROM xcom")[0]["n"]
    run.check(
        len(dump) > 10_000 and xcoms >= 3 and not leaks(dump, fragments) and not leaks(decoded, fragments),
        f"the API key is in no table ({len(dump):,} bytes of pg_dump --data-only, {len(decoded):,} bytes of "
        f"bytea decoded, {xcoms} XCom rows)",
    )
    in_query = [r["path"] for r in run.sandbox.requests() if r["api_key_in_query"]]
    run.check(not in_query, "no request sent the key in its URL")


# --- main --------------------------------------------------------------------------------------------------


def scenario(run: Run) -> None:
    start(run)
    with run.step("deferrable sensor: deferred and held by the triggerer"):
        defer_run = start_deferral(run)
    with run.step("archive example, deferred sensor resumed, masking probe"):
        echo_faults(run)
        expected, archive_run = start_archive(run)
        probe_run = start_probe(run)
        finish_deferral(run, defer_run)
        finish_archive(run, expected, archive_run)
        finish_probe(run, probe_run)
    with run.step("secrets and sockets"):
        run.check(*loopback_only(run.stack))
        check_secrets(run)


def summary(run: Run, started: float, error: str | None) -> bool:
    passed = error is None and bool(run.checks) and all(ok for ok, _ in run.checks)
    print("\n=== e2e on Airflow " + version("apache-airflow"))
    for ok, message in run.checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {message}")
    if error:
        print(f"  FAIL  {error}")
    print("  timings: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.timings))
    print(
        f"=== {'PASS' if passed else 'FAIL'}: {sum(ok for ok, _ in run.checks)} checks passed, "
        f"{sum(not ok for ok, _ in run.checks) + bool(error)} failed, in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, AIRFLOW_HOME)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if os.geteuid() != 0:
        print("e2e_airflow2.py runs PostgreSQL as the 'postgres' user and so needs root.", file=sys.stderr)
        return 2
    airflow_version = version("apache-airflow")
    if not airflow_version.startswith("2."):
        print(
            f"e2e_airflow2.py runs on Airflow 2 (this is {airflow_version}): use .venv-airflow-2.11.", file=sys.stderr
        )
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="clubcollect-e2e-airflow2-"))
    os.chmod(scratch, 0o755)  # the postgres user reaches its data folder inside
    # Anything in this process that imports Airflow configures itself here, never in ~/airflow.
    os.environ["AIRFLOW_HOME"] = str(scratch / "airflow")
    run = Run(
        scratch=scratch,
        key="e2e2-key-" + secrets.token_hex(16),
        ports={"pg": free_port(), "sandbox": free_port()},
        stack=Stack(scratch),
    )

    stop_on_signals()
    error = None
    say(
        f"Airflow {airflow_version}; sandbox on 127.0.0.1:{run.ports['sandbox']}, "
        f"PostgreSQL on 127.0.0.1:{run.ports['pg']}, in {scratch}"
    )
    try:
        scenario(run)
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except Exception as exc:  # anything at all: still stop everything and print the summary
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if error:
            say(f"FAILED: {error}")
            for name in ("scheduler", "triggerer"):
                print(f"--- last lines of the {name}'s output\n{tail(run.logs / f'{name}.log')}")
        if run.db is not None:
            with contextlib.suppress(Exception):
                run.db.close()
        say("stopping everything started here")
        run.stack.stop_all()
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    passed = summary(run, started, error)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
