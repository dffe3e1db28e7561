"""`make e2e`: the provider in a real Airflow deployment (PostgreSQL, Redis, LocalExecutor, then Celery with
two workers), driven through the REST API; docs/deploying.rst lists what it checks."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dev.deployment import (
    AIRFLOW,
    DeploymentError,
    Stack,
    airflow_env,
    free_port,
    loopback_only,
    postgres_bin,
    run_command,
    say,
    start_api,
    start_postgres,
    start_sandbox,
    stop_on_signals,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from dev.deployment import Api

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".e2e"
HOME = WORK / "airflow"
EXAMPLE_DAGS = REPO / "example_dags"
TEST_DAGS = REPO / "tests" / "dags" / "dag_files"
DEFERRED_DAG_ID = "clubcollect_test_deferred_wait"
BUDGET_DAG_ID = "clubcollect_test_budget"
EXPORT_DAG_ID = "clubcollect_export_to_storage"
CONSUMER_DAG_ID = "clubcollect_process_export"
EXPORTS = WORK / "exports"  # the export DAG's root here (its Variable clubcollect_export_root)
EXPORT_COMPANY = "3c74fb2e20441803427404b9607810fd3e949b9d"  # the export example's default company
DEFER_COMPANY = "e2e0deferred0000000000000000000000000000"  # starts with nothing waiting
DEFER_INVOICE = "e2e0deferred0invoice00000000000000000000"

REVIEW_DAG_ID = "clubcollect_review_before_escalation"
REVIEW_REPLY = "Thank you for writing. A colleague reviewed your invoice and will call you this week."
REVIEW_CHOICES = {
    "escalate": "Escalate to ClubCollect support",
    "archive": "Archive the threads",
    "reply": "Reply to the members",
}

WATCH_DAG_ID = "clubcollect_acknowledge_new_messages"
WATCH_COMPANY = "e2e0watched".ljust(40, "0")  # the watcher example's Variable clubcollect_watched_company_id
BURST_WITHIN = 10.0  # seconds from the first poll that could see a burst to its runs: the triggerer and scheduler
BURST = [f"e2e0watched0burst{n}".ljust(40, "0") for n in range(3)]
# The shared request budget: the sandbox's per-key rate and both budget connections' max_requests_per_second.
BUDGET_VARIANTS = ("shared", "alone")
BUDGET_RATE = 20.0
BUDGET_BURST = 5
BUDGET_COMPANIES = 40

RUN_TIMEOUT = 240.0  # seconds a DAG run may take on this 2-core machine under full load
RESUME_WITHIN = 60.0  # seconds from tickets arriving to the deferred sensor's success
# The example DAGs triggered twice and left to run. The review and watcher DAGs have scenarios of their own;
# reply-then-escalate stays paused (tests/dags/test_reply_then_escalate.py runs it on days with and without work).
OWN_SCENARIO = (REVIEW_DAG_ID, WATCH_DAG_ID, "clubcollect_reply_then_escalate")
DAG_IDS = sorted(path.stem for path in EXAMPLE_DAGS.glob("*.py") if path.stem not in OWN_SCENARIO)


@dataclass
class RunRecord:
    dag_id: str
    run_id: str
    kind: str
    state: str = "?"
    duration: float | None = None
    expected: str = "success"

    @property
    def path(self) -> str:
        return f"/dags/{self.dag_id}/dagRuns/{quote(self.run_id, safe='')}"


@dataclass
class Deployment:
    stack: Stack
    key: str
    ports: dict[str, int]
    scratch: Path
    env: dict[str, str]
    api: Api = field(init=False)  # once the api-server is up
    sandbox: Any = field(init=False)


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_for_polls(deploy: Deployment, company: str, since: float, times: int = 1) -> list[float]:
    """Wait until the sandbox answered ``times`` reads of ``company`` from ``since`` on; when they came."""

    def answered() -> list[float] | None:
        at = [r["at"] for r in deploy.sandbox.requests() if company in r["path"] and r["at"] >= since and r["status"]]
        return at if len(at) >= times else None

    return list(wait_until(f"{times} answered read(s) of {company}", answered, 120, deploy.stack, 0.5))


def e2e_env(ports: dict[str, int], key: str) -> dict[str, str]:
    """Every component's environment: PostgreSQL, Celery on Redis, StatsD, the Variables and the connections."""
    pg = f"airflow@127.0.0.1:{ports['pg']}/airflow"

    def connection(**extra: Any) -> str:
        host = f"http://127.0.0.1:{ports['sandbox']}/api"
        return json.dumps({"conn_type": "clubcollect", "password": key, "host": host, "extra": extra})

    return airflow_env(HOME, ports["api"], f"postgresql+psycopg2://{pg}") | {
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dev.e2e.component_hostname",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        # Every component's metrics, the provider's among them, to e2e's own StatsD listener.
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(ports["statsd"]),
        "CLUBCOLLECT_E2E_HOSTNAME": "airflow-e2e",
        # The examples' Variables: the watched company and the export root are e2e's own.
        "AIRFLOW_VAR_CLUBCOLLECT_WATCHED_COMPANY_ID": WATCH_COMPANY,
        "AIRFLOW_VAR_CLUBCOLLECT_EXPORT_ROOT": EXPORTS.as_uri(),
        # The connections as users deploy them, in every component's environment (the key never enters the
        # database); the budget scenario's share one budget in Redis (a database of its own), or cap each process.
        "AIRFLOW_CONN_CLUBCOLLECT_DEFAULT": connection(),
        "AIRFLOW_CONN_CLUBCOLLECT_BUDGET_SHARED": connection(
            max_requests_per_second=BUDGET_RATE, budget_url=f"redis://127.0.0.1:{ports['redis']}/1"
        ),
        "AIRFLOW_CONN_CLUBCOLLECT_BUDGET_ALONE": connection(max_requests_per_second=BUDGET_RATE),
    }


def component_hostname() -> str:
    """Airflow's ``hostname_callable`` here: each Celery worker names itself, so tasks show where they ran."""
    return os.environ.get("CLUBCOLLECT_E2E_HOSTNAME") or socket.getfqdn()


# --- the scenario -----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    deploy: Deployment
    records: list[RunRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        (self.notes if ok else self.failures).append(message)
        say(f"{self.name}: {'ok  ' if ok else 'FAIL'} {message}")

    def trigger(self, dag_id: str, kind: str, logical_date: datetime | None = None, **conf: Any) -> RunRecord:
        body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf}
        run_id = self.deploy.api.call("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]
        return self.record(dag_id, run_id, kind)

    def record(self, dag_id: str, run_id: str, kind: str, fails: bool = False) -> RunRecord:
        self.records.append(RunRecord(dag_id, run_id, kind, expected="failed" if fails else "success"))
        return self.records[-1]

    def runs(self, dag_id: str, run_type: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The DAG's runs of one type, or of any (""), queued since ``since``."""
        query = f"&run_type={run_type}" if run_type else ""
        found = self.deploy.api.get(f"/dags/{dag_id}/dagRuns?limit=100{query}")["dag_runs"]
        return [r for r in found if since is None or _dt(r["queued_at"]) >= since]

    def tasks(self, record: RunRecord) -> list[dict[str, Any]]:
        return list(self.deploy.api.get(f"{record.path}/taskInstances?limit=100")["task_instances"])

    def wait_for_task(self, record: RunRecord, task_id: str, states: tuple[str, ...]) -> dict[str, Any]:
        """Wait for a task of the run to reach one of ``states``; a task that ended otherwise fails."""

        def reached() -> dict[str, Any] | None:
            ti = next((t for t in self.tasks(record) if t["task_id"] == task_id), {"state": None})
            if ti["state"] in ("success", "failed", "skipped"):
                raise DeploymentError(f"{record.dag_id}.{task_id} ended {ti['state']}, not {' or '.join(states)}")
            return ti if ti["state"] in states else None

        return dict(wait_until(f"{record.dag_id}.{task_id}", reached, RUN_TIMEOUT, self.deploy.stack))

    def wait(self, record: RunRecord, timeout: float = RUN_TIMEOUT, judge: bool = True) -> None:
        """Wait for the run to finish; ``judge``: check that it ended as expected."""

        def finished() -> dict[str, Any] | None:
            run = self.deploy.api.get(record.path)
            return run if run["state"] in ("success", "failed") else None

        run = wait_until(f"{record.dag_id} run {record.run_id}", finished, timeout, self.deploy.stack, 2)
        record.state = run["state"]
        if run.get("start_date") and run.get("end_date"):
            record.duration = (_dt(run["end_date"]) - _dt(run["start_date"])).total_seconds()
        if judge:
            self.check(record.state == record.expected, f"{record.dag_id} ({record.kind}) ended {record.state}")

    def pause(self, dag_id: str, paused: bool) -> None:
        self.deploy.api.call("PATCH", f"/dags/{dag_id}", {"is_paused": paused})


def run_phase(phase: Phase, logical_base: datetime) -> None:
    """Every example DAG with a logical date, then without one, and the runs unpausing scheduled."""
    phase_started = datetime.now(timezone.utc)
    sandbox = phase.deploy.sandbox
    sandbox.reset(seed=0)
    sandbox.add_company(DEFER_COMPANY, "E2E deferred")
    sandbox.add_invoice(DEFER_INVOICE, DEFER_COMPANY)
    seed_review_companies(sandbox)
    # Two 429s on the export company's pages, retried after Retry-After, for check_metrics.
    limited = {"fault": "rate_limit", "retry_after": 0.5, "method": "GET", "path_regex": EXPORT_COMPANY}
    sandbox.set_faults(script=[limited] * 2)
    for dag_id in [*DAG_IDS, REVIEW_DAG_ID, DEFERRED_DAG_ID]:
        phase.pause(dag_id, False)

    defer = phase.trigger(DEFERRED_DAG_ID, "manual", company_id=DEFER_COMPANY)
    firsts = [phase.trigger(d, "logical date", logical_base + timedelta(minutes=n)) for n, d in enumerate(DAG_IDS)]
    check_deferral(phase, defer, sandbox)
    run_reviews(phase, sandbox, phase_started)
    for record in firsts:
        phase.wait(record)
        phase.trigger(record.dag_id, "manual, no logical date")
    # Scheduled runs that unpausing created in this phase (catchup=False: the latest interval) count too.
    for dag_id in DAG_IDS:
        for run in phase.runs(dag_id, "scheduled", phase_started):
            phase.record(dag_id, run["dag_run_id"], "scheduled")
    for record in phase.records:
        if record.state == "?":
            phase.wait(record)
    check_exports(phase, phase_started)


def check_exports(phase: Phase, phase_started: datetime) -> None:
    """Each export run emitted one asset event; the scheduler ran the consumer, which read each event once."""
    api = phase.deploy.api
    exports = {r["dag_run_id"] for r in phase.runs(EXPORT_DAG_ID, "", phase_started) if r["state"] == "success"}
    events = [
        e
        for e in api.get(f"/assets/events?source_dag_id={EXPORT_DAG_ID}&limit=100")["asset_events"]
        if e["source_run_id"] in exports
    ]
    phase.check(
        sorted(e["source_run_id"] for e in events) == sorted(exports)
        and len(exports) >= 2
        and all(e["uri"].startswith(f"{EXPORTS.as_uri()}/{EXPORT_COMPANY}/") for e in events)
        and all(Path(e["uri"][7:]).is_file() for e in events),
        f"exports: each of the {len(exports)} export runs, scheduled ones too, emitted one asset event for its file "
        f"under the Variable's root {EXPORTS} ({len(events)} events)",
    )

    def consumed() -> dict[int, list[str]] | None:
        read: dict[int, list[str]] = {}
        for run in phase.runs(CONSUMER_DAG_ID, "asset_triggered"):
            upstream = api.get(f"/dags/{CONSUMER_DAG_ID}/dagRuns/{quote(run['dag_run_id'])}/upstreamAssetEvents")
            mine = [e["id"] for e in upstream["asset_events"] if e["source_run_id"] in exports]
            if mine and run["state"] not in ("success", "failed"):
                return None
            for event_id in mine:
                read.setdefault(event_id, []).append(f"{run['dag_run_id']}:{run['state']}")
        return read if len(read) == len(events) else None

    read = wait_until("the consumer to read every export", consumed, RUN_TIMEOUT, phase.deploy.stack, 2)
    for run_id in sorted({r.rsplit(":", 1)[0] for runs in read.values() for r in runs}):
        phase.wait(phase.record(CONSUMER_DAG_ID, run_id, "scheduled on an export"))
    phase.check(
        all(len(runs) == 1 and runs[0].endswith(":success") for runs in read.values()),
        f"exports: {CONSUMER_DAG_ID} read each of the {len(read)} exports in exactly one successful run",
    )


def thread(*items: tuple[str, str, float]) -> list[dict[str, Any]]:
    """Tickets from (message, sender, age in days)."""
    from airflow_provider_clubcollect.sandbox.client import ticket

    now = datetime.now(timezone.utc)
    return [ticket(message, sender, now - timedelta(days=age)) for message, sender, age in items]


def review_company(choice: str) -> str:
    return f"e2e0review0{choice}".ljust(40, "0")


def seed_review_companies(sandbox: Any) -> None:
    """Per choice: two threads waiting over 7 days (to review), one fresh and one answered (to leave)."""
    threads = {
        "old1": [("Ik wil niet betalen: ik ben <b>geen</b> lid meer | opgezegd", "CUSTOMER", 12)],
        "old2": [("Why this invoice?", "CUSTOMER", 20), ("See our letter.", "COMPANY", 15), ("Which?", "CUSTOMER", 9)],
        "fresh": [("Graag een betalingsregeling.", "CUSTOMER", 2)],
        "answered": [("Wrong amount", "CUSTOMER", 30), ("Corrected, thank you.", "COMPANY", 29)],
    }
    for choice in REVIEW_CHOICES:
        company = review_company(choice)
        sandbox.add_company(company, f"E2E review: {choice}")
        for name, items in threads.items():
            sandbox.add_invoice(f"{company[:24]}{name}".ljust(40, "0"), company, thread(*items))


def answer(phase: Phase, record: RunRecord, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Wait for a human-in-the-loop task to ask, then answer it through the REST API."""
    ti = phase.wait_for_task(record, task_id, ("awaiting_input", "deferred"))
    # Airflow 3.3.2 fails a task answered within a second or two of parking (the scheduler takes the parked try's
    # "success" event for the resumed one).  No person is that fast: wait 10 s from its start, 5 s from seeing it park.
    time.sleep(max(5.0, 10 - (datetime.now(timezone.utc) - _dt(ti["start_date"])).total_seconds()))
    path = f"{record.path}/taskInstances/{task_id}/-1/hitlDetails"
    asked: dict[str, Any] = phase.deploy.api.get(path)
    phase.deploy.api.call("PATCH", path, body)
    return asked


def run_reviews(phase: Phase, sandbox: Any, phase_started: datetime) -> None:
    """The review DAG answered through the REST API once per choice (only a deployment has a person's answer)."""
    records = {
        c: phase.trigger(REVIEW_DAG_ID, f"manual, chose {c}", company_id=review_company(c)) for c in REVIEW_CHOICES
    }
    for choice, record in records.items():
        body = str(answer(phase, record, "review", {"chosen_options": [REVIEW_CHOICES[choice]]}).get("body"))
        mine = [i for i, v in sandbox.state()["invoices"].items() if v["company_id"] == review_company(choice)]
        phase.check(
            sorted(i for i in mine if i in body) == sorted(i for i in mine if i[24:].startswith("old"))
            and "&lt;b\\>geen&lt;/b\\>" in body,
            f"review ({choice}): the person was shown exactly the 2 threads waiting over 7 days, member text escaped",
        )
        if choice == "reply":
            answer(phase, record, "write_reply", {"chosen_options": ["OK"], "params_input": {"reply": REVIEW_REPLY}})
    # Unpausing the daily review DAG scheduled a run on its default company: escalate.
    for run in phase.runs(REVIEW_DAG_ID, "scheduled", phase_started):
        record = phase.record(REVIEW_DAG_ID, run["dag_run_id"], "scheduled, chose escalate")
        answer(phase, record, "review", {"chosen_options": [REVIEW_CHOICES["escalate"]]})
    for choice, record in records.items():
        phase.wait(record)
        detail = phase.deploy.api.get(f"{record.path}/taskInstances/review/-1/hitlDetails")
        phase.check(
            bool(detail.get("response_received")) and detail.get("responded_by_user", {}).get("name") == "admin",
            f"review ({record.kind}): Airflow recorded admin's answer {detail.get('chosen_options')}",
        )
        threads = {i: v for i, v in sandbox.state()["invoices"].items() if v["company_id"] == review_company(choice)}
        replies = {i: sum(t["message"] == REVIEW_REPLY for t in v["tickets"]) for i, v in threads.items()}
        done = {
            "escalate": {i for i, v in threads.items() if v["assigned_to_support"]},
            "archive": {i for i, v in threads.items() if v["actions"]["archive"]},
            "reply": {i for i, n in replies.items() if n == 1 and threads[i]["tickets_created"] == 1},
        }
        old = {i for i in threads if i[24:].startswith("old")}
        phase.check(
            done == {c: old if c == choice else set() for c in done} and sum(replies.values()) == len(done["reply"]),
            f"review ({choice}): exactly the 2 reviewed threads were handled as chosen, once; the others untouched",
        )


def run_watcher(phase: Phase, sandbox: Any) -> None:
    """The asset-watcher DAG: one run per new ticket, none again after the triggerer restarts."""
    deploy = phase.deploy
    sandbox.add_company(WATCH_COMPANY, "E2E watched")
    invoices = [f"e2e0watched0invoice{n}".ljust(40, "0") for n in range(2)]
    # A backlog: one thread waits already; one was answered.
    sandbox.add_invoice(invoices[0], WATCH_COMPANY, thread(("Klopt dit bedrag?", "CUSTOMER", 1)))
    sandbox.add_invoice(invoices[1], WATCH_COMPANY, thread(("Wrong name", "CUSTOMER", 3), ("Fixed.", "COMPANY", 2)))
    (acknowledgement,) = re.findall(r'ACKNOWLEDGEMENT = "([^"]+)"', (EXAMPLE_DAGS / f"{WATCH_DAG_ID}.py").read_text())

    def acks(invoice_ids: list[str]) -> list[int]:
        state = sandbox.state()["invoices"]
        return [sum(t["message"] == acknowledgement for t in state[i]["tickets"]) for i in invoice_ids]

    def message(runs: list[dict[str, Any]], what: str, invoice_id: str = "", text: str = "") -> list[dict[str, Any]]:
        """A member writes (when given); wait for the watcher's next run to settle."""
        if invoice_id:
            sandbox.add_tickets(invoice_id, thread((text, "CUSTOMER", 0)))

        def settled() -> list[dict[str, Any]] | None:
            found = phase.runs(WATCH_DAG_ID, "asset_triggered")
            return found if len(found) > len(runs) and all(r["state"] in ("success", "failed") for r in found) else None

        return list(wait_until(what, settled, RUN_TIMEOUT, deploy.stack))

    phase.pause(WATCH_DAG_ID, False)  # tests/dags asserts that a run without events acknowledges nothing
    first = message([], "the watcher to report the waiting ticket")
    phase.check(acks(invoices) == [1, 0], "watcher: the waiting backlog ticket ran the DAG, which acknowledged it once")
    second = message(first, "the watcher to report the new ticket", invoices[1], "Nog een vraag")
    phase.check(acks(invoices) == [1, 1], "watcher: a new member message ran the DAG, which acknowledged it once")
    # A restart proves something only while a reported ticket still awaits an answer: let the
    # acknowledgement of the next message fail (the sandbox refuses that POST), so it stays waiting.
    sandbox.set_faults(script=[{"fault": "error", "status": 422, "method": "POST", "path_regex": invoices[0]}] * 20)
    third = message(second, "the watcher to report the message", invoices[0], "Hallo?")
    failed = [r["dag_run_id"] for r in third if r["state"] == "failed"]
    phase.check(
        len(third) == len(second) + 1 and len(failed) == 1 and acks(invoices) == [1, 1],
        "watcher: a message whose acknowledgement the API refused ran the DAG once and still awaits an answer",
    )
    sandbox.clear_faults()
    # Restart the triggerer: what was reported stays reported (the asset state store).
    deploy.stack.stop(next(c for c in deploy.stack.components if c.name.startswith("triggerer")))
    restarted = time.time()
    deploy.stack.start("triggerer-restarted", [AIRFLOW, "triggerer", "--skip-serve-logs"], deploy.env)
    wait_for_polls(deploy, WATCH_COMPANY, restarted, 3)  # 10 s after its first: what that reported had BURST_WITHIN
    after_restart = phase.runs(WATCH_DAG_ID, "asset_triggered")
    phase.check(
        len(after_restart) == len(third) and acks(invoices) == [1, 1],
        f"watcher: the waiting, reported message ran nothing again after the triggerer restarted "
        f"({len(after_restart)} asset-triggered runs in all)",
    )
    fourth = message(third, "the restarted watcher to report a new message", invoices[1], "Nog iets")
    phase.check(
        len(fourth) == len(third) + 1 and acks(invoices) == [1, 2],
        "watcher: after the restart, the next new message ran the DAG exactly once",
    )
    for run in fourth:
        refused = run["dag_run_id"] in failed
        phase.wait(phase.record(WATCH_DAG_ID, run["dag_run_id"], "asset event" + "; POST refused" * refused, refused))

    (asset,) = [a for a in deploy.api.get("/assets?limit=100")["assets"] if WATCH_COMPANY in a["uri"]]
    events = deploy.api.get(f"/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]
    payloads = [((e.get("extra") or {}).get("payload") or {}) for e in events]
    phase.check(
        len(events) == len({p.get("ticket_id") for p in payloads}) == 4
        and all(p.get("invoice_id") in invoices for p in payloads),
        f"watcher: 4 asset events, one per new ticket, each carrying its ticket_id ({len(events)} events)",
    )
    phase.check(all(deploy.key not in json.dumps(e) for e in events), "watcher: no asset event carries the API key")
    run_burst(phase, sandbox, {r["dag_run_id"] for r in fourth}, acks)
    phase.pause(WATCH_DAG_ID, True)


def run_burst(phase: Phase, sandbox: Any, earlier_runs: set[str], acks: Callable[[list[str]], list[int]]) -> None:
    """Three member messages at once: each ticket reaches a run from the first poll that could see it."""
    message = thread(("Ik heb een vraag", "CUSTOMER", 0))
    ticket_ids = {sandbox.add_invoice(i, WATCH_COMPANY, message)["tickets"][0]["ticket_id"] for i in BURST}
    arrived = time.time()  # all three; the poll phase (the example polls every 5 s) is chance: measured from the poll

    def handled() -> dict[str, dict[str, Any]] | None:
        """Each burst ticket's run: the one whose triggering events carry it."""
        found: dict[str, dict[str, Any]] = {}
        for run in phase.runs(WATCH_DAG_ID, "asset_triggered"):
            if run["dag_run_id"] not in earlier_runs:
                upstream = f"/dags/{WATCH_DAG_ID}/dagRuns/{quote(run['dag_run_id'])}/upstreamAssetEvents"
                for event in phase.deploy.api.get(upstream)["asset_events"]:
                    payload = (event.get("extra") or {}).get("payload") or {}
                    found |= {t["ticket_id"]: run for t in payload.get("tickets", ()) if t["ticket_id"] in ticket_ids}
        return found if len(found) == len(ticket_ids) else None

    found = wait_until("a run for each ticket of the burst", handled, RUN_TIMEOUT, phase.deploy.stack, 0.5)
    polls = wait_for_polls(phase.deploy, WATCH_COMPANY, arrived)  # logged already: the runs came from them
    latency = (queued := max(_dt(run["queued_at"]).timestamp() for run in found.values())) - min(polls)
    run_ids = sorted({run["dag_run_id"] for run in found.values()})
    for run_id in run_ids:
        phase.wait(phase.record(WATCH_DAG_ID, run_id, f"burst of 3 messages, run {latency:.1f} s after the poll"))
    phase.check(
        latency <= BURST_WITHIN and acks(BURST) == [1, 1, 1],
        f"burst: 3 messages at once reached {len(run_ids)} run(s) {queued - arrived:.1f} s after they arrived, "
        f"{latency:.1f} s after the first poll that saw them (within {BURST_WITHIN:g} s); acks {acks(BURST)}",
    )


def run_budget(phase: Phase, sandbox: Any) -> None:
    """A fan-out and watchers under the sandbox's per-key rate: sharing the budget in Redis, then each process alone."""
    from airflow_provider_clubcollect.sandbox.client import ticket

    asked = datetime.now(timezone.utc) - timedelta(hours=1)
    expected = {}
    for n in range(BUDGET_COMPANIES):  # 60 to 66 waiting tickets each: 12 to 14 pages of 5
        company = f"e2e0budget0fan{n:02d}".ljust(40, "0")
        tickets = [ticket(f"Vraag {k}", "CUSTOMER", asked + timedelta(seconds=k)) for k in range(60 + n % 7)]
        invoice = sandbox.add_invoice(f"{company[:16]}0invoice".ljust(40, "0"), company, tickets)
        expected[company] = len(invoice["tickets"])
    for asset in phase.deploy.api.get("/assets?limit=100")["assets"]:
        if (company := asset["uri"].split("/")[2]).startswith("e2e0budget0"):
            sandbox.add_company(company, "E2E budget: watched")
    sandbox.set_faults(rate_limit_per_second=BUDGET_RATE, rate_limit_burst=BUDGET_BURST)
    try:
        (refused, rate), _ = [budget_fan_out(phase, sandbox, variant, expected) for variant in BUDGET_VARIANTS]
    finally:
        sandbox.clear_faults()
    phase.check(
        refused < 0.01 and 0.9 * BUDGET_RATE <= rate <= 1.02 * BUDGET_RATE,
        f"budget: with the shared budget, {refused:.1%} of requests answered 429 (under 1%) and {rate:.1f} "
        f"requests/s while the fan-out read (within 90% of the sandbox's {BUDGET_RATE:g})",
    )


def budget_fan_out(phase: Phase, sandbox: Any, variant: str, expected: dict[str, int]) -> tuple[float, float]:
    """One fan-out with its watchers polling: the share of 429s, and the requests per second while it read."""
    dag_id = f"{BUDGET_DAG_ID}_{variant}"
    phase.pause(dag_id, False)

    def polled() -> set[str] | None:
        pattern = f"/companies/(e2e0budget0{variant}\\w+)/"
        found = {m[1] for r in sandbox.requests() if (m := re.search(pattern, r["path"]))}
        return found if len(found) >= 4 else None

    watchers = wait_until(f"{dag_id}'s watchers to poll", polled, 120, phase.deploy.stack)
    sandbox.clear_requests()
    record = phase.trigger(dag_id, f"{len(expected)} companies mapped", company_ids=list(expected))
    phase.wait(record, judge=False)
    log = sandbox.requests()
    phase.pause(dag_id, True)

    # While the fan-out read: from each company's first request to its last, merged.
    times: dict[str, list[float]] = {}
    for r in log:
        if (m := re.search(r"/companies/(\w+)/", r["path"])) and m.group(1) in expected:
            times.setdefault(m.group(1), []).append(r["at"])
    merged: list[list[float]] = []
    for start, end in sorted((min(t), max(t)) for t in times.values()):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    # The whole seconds inside a span: the limiter's slots are aligned on them.
    busy = {second for start, end in merged for second in range(math.ceil(start), math.floor(end))}
    per_second = Counter(math.floor(r["at"]) for r in log)
    rate = sum(per_second[second] for second in busy) / max(1, len(busy))
    refused = sum(r["status"] == 429 for r in log) / max(1, len(log))
    xcom = f"{record.path}/taskInstances/totals/xcomEntries/return_value"
    totals = phase.deploy.api.get(xcom)["value"] if record.state == "success" else {}
    tries = [t["try_number"] for t in phase.tasks(record) if t["task_id"] == "fetch"]
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


def check_deferral(phase: Phase, record: RunRecord, sandbox: Any) -> None:
    """The sensor defers on an empty company, the triggerer holds its trigger, tickets arriving resume it."""
    trigger = phase.wait_for_task(record, "wait", ("deferred",))["trigger"]
    # The trigger's first poll: the sensor's own poke on the worker came before the trigger row.
    wait_for_polls(phase.deploy, DEFER_COMPANY, _dt(trigger["created_date"]).timestamp())
    job = phase.wait_for_task(record, "wait", ("deferred",))["triggerer_job"]
    phase.check(
        trigger["classpath"] == "airflow_provider_clubcollect.triggers.tickets.UnansweredTicketsTrigger",
        f"the sensor deferred to UnansweredTicketsTrigger {trigger['id']}, which triggerer job {job['id']} "
        f"({job.get('hostname')}) polled with nothing waiting",
    )
    arrived = time.monotonic()
    sandbox.add_tickets(DEFER_INVOICE, thread(("Ik wil niet betalen.", "CUSTOMER", 0)))
    phase.wait(record, RESUME_WITHIN + 120, judge=False)
    resumed = time.monotonic() - arrived
    record.kind = f"manual, deferred; resumed {resumed:.0f} s after tickets arrived"
    phase.check(
        record.state == "success" and resumed <= RESUME_WITHIN,
        f"the deferred sensor resumed and the run succeeded {resumed:.1f} s after tickets arrived",
    )
    states = [t["state"] for t in phase.deploy.api.get(f"{record.path}/taskInstances/wait/tries")["task_instances"]]
    phase.check(states == ["success"], f"the sensor finished in one try after deferral (tries: {states})")


def check_mapped(phase: Phase) -> None:
    """The phase's mapped tasks spread over both workers: the budget's 40, queued at once, fill more than two slots."""
    mapped = [t for r in phase.records for t in phase.tasks(r) if t.get("map_index", -1) >= 0]
    hosts = sorted({t["hostname"] for t in mapped if t["hostname"]})
    phase.check(len(hosts) >= 2, f"{len(mapped)} mapped tasks spread over both Celery workers ({', '.join(hosts)})")


# --- connection test, metrics, secrets, sockets -----------------------------------------------------


def check_connection_test(phase: Phase) -> None:
    """Airflow's REST connection test: success with the right key, the key problem named for a wrong one."""
    host = f"http://127.0.0.1:{phase.deploy.ports['sandbox']}/api"
    body = {"connection_id": "clubcollect_e2e", "conn_type": "clubcollect", "host": host}
    for right, key in ((True, phase.deploy.key), (False, "wrong-" + secrets.token_hex(8))):
        tested = phase.deploy.api.call("POST", "/connections/test", {**body, "password": key})
        message = str(tested["message"])
        phase.check(
            tested["status"] is right and (right or ("key" in message.lower() and key not in message)),
            f"REST connection test with {'the right key' if right else 'a wrong key, naming the key'}: {message!r}",
        )


def statsd_listener() -> tuple[int, list[str]]:
    """A StatsD server on 127.0.0.1, in a thread: its port, and the list it appends every line it receives to."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (Linux, root): no burst of lines dropped
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

    for _ in range(60):  # a quiet moment whose counts agree: a metric may come late on a busy machine (UDP)
        logged = sandbox.requests()
        time.sleep(1)
        seen = clubcollect_counts(lines[start:])
        expected = Counter(
            f"requests.{route(ApiRequest(r['method'], r['path'].removeprefix('/api/'), ''))[0]}."
            + ("dropped" if r["status"] is None else "429" if r["status"] == 429 else f"{r['status'] // 100}xx")
            for r in logged
        )
        counted = Counter({name: n for name, n in seen.items() if name.startswith("requests.")})
        quiet = len(sandbox.requests()) == len(logged) and all(r["status"] or r["fault"] for r in logged)
        if quiet and counted == expected:
            break
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
    """The API key is in no log or home file, no table of the metadata database, no Redis key or value."""
    deploy, key = phase.deploy, phase.deploy.key.encode()
    # The sandbox is the server: it knows its key.
    files = [p for p in WORK.rglob("*") if p.is_file() and p.name != "sandbox.log"]
    leaked = [str(p.relative_to(WORK)) for p in files if key in p.read_bytes()]
    phase.check(not leaked, f"the API key is in none of {len(files)} log and home files {leaked[:5]}")
    dump = run_command(
        [str(postgres_bin() / "pg_dump"), "-h", "127.0.0.1", "-p", str(deploy.ports["pg"]), "-U", "airflow"]
    )
    phase.check(
        len(dump) > 100_000 and deploy.key not in dump, f"the API key is in no table ({len(dump):,} bytes of pg_dump)"
    )
    redis_cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(deploy.ports["redis"])]
    keys = run_command([*redis_cli, "--scan"]).split()
    run_command([*redis_cli, "SAVE"])
    rdb = (deploy.scratch / "redis" / "dump.rdb").read_bytes()
    phase.check(
        key not in rdb and all(deploy.key not in k for k in keys),
        f"the API key is in no Redis key or value ({len(keys)} keys, {len(rdb):,} bytes saved uncompressed)",
    )


# --- main ---------------------------------------------------------------------------------------------


def print_summary(phases: list[Phase], stack: Stack, started: float) -> int:
    """One table of components, DAG runs and checks, then the failures; the exit status."""
    from tabulate import tabulate

    now = time.monotonic()
    rows: list[tuple[str, str, str]] = []
    for c in [*stack.stopped, *stack.components]:
        state = "stopped" if c.stopped else "running" if c.alive() else "exited"
        rows.append((f"{c.name} (pid {c.process.pid})", state, f"{(c.stopped or now) - c.started:.0f} s up"))
    for p in phases:
        rows += [
            (f"[{p.name}] {r.dag_id} ({r.kind})", r.state, "-" if r.duration is None else f"{r.duration:.0f} s")
            for r in p.records
        ]
        rows.append(
            (f"[{p.name}] checks", "FAILED" if p.failures else "passed", f"{len(p.notes)} ok, {len(p.failures)} failed")
        )
    failures = [f"[{p.name}] {f}" for p in phases for f in p.failures]
    rows.append(("make e2e", "FAILED" if failures or not phases else "passed", f"{now - started:.0f} s"))
    print("\n" + tabulate(rows, headers=("component / DAG run", "state", "duration"), tablefmt="psql"), flush=True)
    if failures:
        print("\nFailed:\n" + "\n".join(f"- {f}" for f in failures) + f"\nLogs: {WORK / 'logs'}")
    return 1 if failures or not phases else 0


def start_services(deploy: Deployment) -> None:
    """PostgreSQL, Redis, the sandbox, the migrated database, then the api-server, dag-processor and triggerer."""
    stack, ports, env = deploy.stack, deploy.ports, deploy.env
    say(f"PostgreSQL on 127.0.0.1:{ports['pg']}, Redis on :{ports['redis']} (throwaway data in {deploy.scratch})")
    start_postgres(stack, deploy.scratch / "pg", ports["pg"])
    (deploy.scratch / "redis").mkdir()
    redis = ["redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"]), "--save", "", "--appendonly", "no"]
    redis += ["--rdbcompression", "no", "--protected-mode", "yes", "--dir", str(deploy.scratch / "redis")]
    stack.start("redis", redis, {"PATH": os.environ["PATH"]})
    deploy.sandbox = start_sandbox(stack, ports["sandbox"], deploy.key)
    say(f"airflow db migrate; api-server on 127.0.0.1:{ports['api']}, dag-processor, triggerer")
    run_command([AIRFLOW, "db", "migrate"], env=env)
    deploy.api = start_api(stack, env)
    stack.start("dag-processor", [AIRFLOW, "dag-processor"], env)
    stack.start("triggerer", [AIRFLOW, "triggerer", "--skip-serve-logs"], env)
    expected = {p.stem for p in EXAMPLE_DAGS.glob("*.py")} | {DEFERRED_DAG_ID}
    expected |= {f"{BUDGET_DAG_ID}_{v}" for v in BUDGET_VARIANTS}

    def parsed() -> bool:
        errors = deploy.api.get("/importErrors")
        if errors["total_entries"]:
            raise DeploymentError(f"DAG import errors: {json.dumps(errors['import_errors'])[:3000]}")
        return expected <= {dag["dag_id"] for dag in deploy.api.get("/dags?limit=100")["dags"]}

    wait_until("the dag-processor to parse every DAG", parsed, 180, stack, 2)


def main() -> int:
    started = time.monotonic()
    if os.geteuid() != 0:
        print("make e2e runs PostgreSQL as the 'postgres' user and so needs root.", file=sys.stderr)
        return 2
    shutil.rmtree(WORK, ignore_errors=True)
    (HOME / "dags").mkdir(parents=True)
    # The DAG files as they are: e2e's values reach them as params (conf) and Variables (airflow_env).
    for dag_file in [*EXAMPLE_DAGS.glob("*.py"), *(TEST_DAGS / f"{d}.py" for d in (DEFERRED_DAG_ID, BUDGET_DAG_ID))]:
        shutil.copy(dag_file, HOME / "dags")
    scratch = Path(tempfile.mkdtemp(prefix="clubcollect-e2e-"))
    os.chmod(scratch, 0o755)
    stack = Stack(WORK)
    phases: list[Phase] = []

    stop_on_signals()
    try:
        statsd_port, metric_lines = statsd_listener()
        ports = {name: free_port() for name in ("pg", "redis", "sandbox", "api")} | {"statsd": statsd_port}
        key = "e2e-key-" + secrets.token_hex(16)
        deploy = Deployment(stack, key, ports, scratch, e2e_env(ports, key))
        start_services(deploy)

        local = Phase("local", deploy)
        phases.append(local)
        scheduler = stack.start("scheduler-local", [AIRFLOW, "scheduler", "--skip-serve-logs"], deploy.env)
        started_lines = len(metric_lines)  # quiet: run_phase empties the sandbox's request log first
        run_phase(local, datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1))
        check_connection_test(local)  # inside the phase: check_metrics waits for its lines too (UDP may lag)
        check_metrics(local, deploy.sandbox, metric_lines, started_lines)
        run_watcher(local, deploy.sandbox)
        check_metrics_hold_no_secret(local, deploy.sandbox, metric_lines)
        check_secrets(local)
        local.check(*loopback_only(stack))
        stack.stop(scheduler)

        say("CeleryExecutor: scheduler and two workers")
        celery = Phase("celery", deploy)
        phases.append(celery)
        celery_env = {**deploy.env, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
        stack.start("scheduler-celery", [AIRFLOW, "scheduler", "--skip-serve-logs"], celery_env)
        worker = [AIRFLOW, "celery", "worker", "--skip-serve-logs", "--concurrency", "2", "--celery-hostname"]
        for name in ("celery-worker-1", "celery-worker-2"):
            stack.start(name, [*worker, f"{name}@%h"], {**celery_env, "CLUBCOLLECT_E2E_HOSTNAME": name})
        run_phase(celery, datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2))
        run_budget(celery, deploy.sandbox)
        check_mapped(celery)
        check_secrets(celery)
        celery.check(*loopback_only(stack))
    except (KeyboardInterrupt, Exception) as exc:  # anything at all, Ctrl-C too: stop everything, print the table
        say(f"FAILED: {type(exc).__name__}: {exc}; stopping everything")
        phases.append(Phase("error", None, failures=[f"{type(exc).__name__}: {exc}"]))  # type: ignore[arg-type]
    finally:
        stack.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    return print_summary(phases, stack, started)


if __name__ == "__main__":
    sys.exit(main())
