"""`make bench`: how close the provider comes to the round-trip bound, against a sandbox in its own process.

A benchmark, not a test (it is not part of ``make test``): it starts the sandbox as two processes
of this script (``--serve``) sharing one loopback API port, each seeded in memory alike, injects
20 ms of latency into every API request, and measures, in this one run, each figure and the ratio
its target is about:

a. reading 10,000 tickets of one company (100 pages): the hook and the trigger, wall time (median
   of 5 reads) and requests (of them, the pager's looks at the tail), against the bound
   ``(1 + ceil((pages - 1) / C)) x RTT`` (RTT: the measured round trip of one page); and a
   do-it-yourself ``requests`` loop at page_size 30 (the default of HttpOperator's pagination)
   against the hook;
b. archiving 1,000 invoices at C=8 and C=32, against ``ceil(1000 / C) x RTT`` (RTT: one archive);
c. the import time of each public module over ``import airflow.sdk``, in a fresh interpreter with
   a warm bytecode cache, median of 7;
d. streaming 100,000 tickets to ``file://`` against returning them as a list: peak memory
   (tracemalloc, in a second run) and wall time;
e. client CPU per request: the hook against a bare ``requests.Session`` with the same headers;
f. watchers: :data:`WATCHERS` ``UnansweredTicketsEventTrigger`` instances on one event loop, one
   company of one ticket each, polling every :data:`WATCH_POLL` s: the memory each adds (resident
   set, after a warm-up watcher) and the client CPU per poll; every watcher must report its first
   ticket once and a second one added mid-run once;
g. the request budget: :data:`BUDGET_PROCESSES` processes paging 10,000 tickets each through the hook
   against a sandbox that enforces :data:`BUDGET_RATE` requests/s (burst :data:`BUDGET_BURST`) per
   key, without and with the shared budget (a ``redis-server`` of its own on a free loopback port):
   wall time over the budget's bound (pages / rate) and the share of 429s.

It prints one table with PASS or FAIL per target, and the machine's load (other work on a shared
machine moves these figures).  Everything started is stopped, also on failure and on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
LATENCY_MS = 20
C = 8
#: Sandbox processes serving the API (see start_sandboxes).
SERVERS = 2
COMPANY = "bench-company-10k"
BIG_COMPANY = "bench-company-100k"
ARCHIVE_COMPANY = "bench-company-archive"
#: f. watchers: how many, each on a company of its own with one ticket, polling this often (seconds).
WATCHERS = 300
WATCH_POLL = 2.0
WATCH_COMPANY = "bench-watch"
#: g. the request budget the sandbox enforces per key, and how many processes share it.
BUDGET_RATE = 40
BUDGET_BURST = 10
BUDGET_PROCESSES = 4
PUBLIC_MODULES = (
    "airflow_provider_clubcollect.hooks.clubcollect",
    "airflow_provider_clubcollect.operators.tickets",
    "airflow_provider_clubcollect.sensors.tickets",
    "airflow_provider_clubcollect.triggers.tickets",
    "airflow_provider_clubcollect.retry",
    "airflow_provider_clubcollect.exceptions",
)


@dataclass
class Row:
    """One line of the table: a figure, its ratio, and the target the ratio is held to."""

    figure: str
    value: str
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sandboxes(api_key: str, servers: int = SERVERS) -> tuple[list[subprocess.Popen[bytes]], str, Sandboxes]:
    """
    :data:`SERVERS` sandbox processes sharing one API port (``SO_REUSEPORT``), each seeded alike.

    ClubCollect serves concurrent requests in parallel; one sandbox process serves them on one
    event loop, one after the other, so the latency of the last of C requests would include the
    server's CPU for the C - 1 before it, a cost no client can avoid.  The kernel spreads the
    client's connections over the processes.  Each also listens on a port of its own, for the
    control API (faults and the request log are per process).
    """
    port = free_port()
    processes, controls = [], []
    for _ in range(servers):
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(api_key.encode() + b"\n")  # not on the command line, where ps shows it
        process.stdin.close()
        processes.append(process)
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(b"control port "):
            raise RuntimeError(f"a sandbox did not start (exit status {process.wait()})")
        controls.append(int(line.split()[-1]))
    from airflow_provider_clubcollect.sandbox.client import SandboxClient

    clients = [SandboxClient(f"http://127.0.0.1:{control}/_sandbox") for control in controls]
    return processes, f"http://127.0.0.1:{port}", Sandboxes(clients)


class Sandboxes:
    """The control API of every sandbox process at once."""

    def __init__(self, clients: list[Any]) -> None:
        self.clients = clients

    def set_faults(self, **settings: Any) -> None:
        for client in self.clients:
            client.set_faults(**settings)

    def clear_faults(self) -> None:
        for client in self.clients:
            client.clear_faults()

    def clear_requests(self) -> None:
        for client in self.clients:
            client.clear_requests()

    def requests(self) -> list[dict[str, Any]]:
        return [request for client in self.clients for request in client.requests()]


def serve(port: int) -> None:
    """One sandbox process of :func:`start_sandboxes`: seeded in memory, then serving until stopped."""
    import uvicorn

    from airflow_provider_clubcollect.sandbox.app import create_app
    from airflow_provider_clubcollect.sandbox.state import SandboxState

    state = SandboxState(api_key=sys.stdin.readline().strip())
    seed(state, COMPANY, 100, 100)
    seed(state, BIG_COMPANY, 200, 500)
    seed(state, ARCHIVE_COMPANY, 1000, 1)
    for n in range(WATCHERS):
        seed(state, f"{WATCH_COMPANY}-{n:03d}", 1, 1)
    shared = socket.socket()
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    shared.bind(("127.0.0.1", port))
    control = socket.socket()
    control.bind(("127.0.0.1", 0))
    for sock in (shared, control):
        sock.listen(128)
    print(f"control port {control.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        create_app(state), log_level="warning", lifespan="off", http="h11", proxy_headers=False, access_log=False
    )
    uvicorn.Server(config).run(sockets=[shared, control])


def seed(state: Any, company: str, invoices: int, tickets_each: int) -> None:
    """The same tickets, with the same IDs, in every sandbox process."""
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for n in range(invoices):
        invoice_id = f"{company}-{n:05d}"
        tickets = [
            {
                "message": f"Vraag {k}",
                "sender": "CUSTOMER",
                "date": (start + timedelta(minutes=n * tickets_each + k)).isoformat(),
                "ticket_id": f"{invoice_id}-{k}",
            }
            for k in range(tickets_each)
        ]
        state.add_invoice(invoice_id, company, tickets)


def median_seconds(call: Callable[[], object], times: int = 7) -> float:
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def median_timed(call: Callable[[], Any], times: int = 5) -> tuple[float, Any]:
    """The median wall time of ``times`` calls, and the last call's result.

    A moment of load on a shared machine then moves one read, not the figure.
    """
    samples = [timed(call) for _ in range(times)]
    return statistics.median(wall for wall, _ in samples), samples[-1][1]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = call()
    return time.perf_counter() - began, result


def row(figure: str, value: str, ratio: float | None, target: str, ok: bool | None) -> Row:
    return Row(figure, value, ratio, target, ok)


def requests_sent(client: Any) -> str:
    """The company-list requests the sandboxes served, and how many were the pager's looks at the tail."""
    reads = [r for r in client.requests() if "/companies/" in r["path"]]
    looks = sum(r["query"].get("page_size") == "1" for r in reads)
    return f"{len(reads)} requests ({looks} looks)"


def bench_paging(client: Any, base_url: str, rows: list[Row]) -> None:
    import requests

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger

    hook = ClubCollectHook()
    url = f"{base_url}/api/v2/companies/{COMPANY}/tickets/unanswered"
    session = requests.Session()
    session.trust_env = False
    session.headers.update(hook.settings.headers())

    def one_page(number: int = 1, size: int = 100) -> dict[str, Any]:
        response = session.get(url, params={"page_number": number, "page_size": size}, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    one_page()  # a connection, warm
    rtt = median_seconds(one_page)
    pages = one_page()["page"]["total_pages"]
    bound = (1 + math.ceil((pages - 1) / C)) * rtt
    rows.append(Row("RTT of one page of 100 (median of 7)", f"{rtt * 1000:.1f} ms"))

    def plain_threads() -> int:
        # What this machine and this sandbox allow right now: page 1, then 8 threads, no checks.
        from concurrent.futures import ThreadPoolExecutor

        first = one_page()
        with ThreadPoolExecutor(C) as pool:
            rest = list(pool.map(one_page, range(2, first["page"]["total_pages"] + 1)))
        return len(first["tickets"]) + sum(len(body["tickets"]) for body in rest)

    plain_threads()
    wall, count = median_timed(plain_threads)
    assert count == 10_000, count
    rows.append(Row(f"a. reference: a bare {C}-thread requests loop", f"{wall:.2f} s", wall / bound))

    hook.get_company_tickets(COMPANY, "unanswered")  # warm: connections, threads
    client.clear_requests()
    hook.get_company_tickets(COMPANY, "unanswered")
    sent = requests_sent(client)
    wall, tickets = median_timed(lambda: hook.get_company_tickets(COMPANY, "unanswered"))
    assert len(tickets) == 10_000, len(tickets)
    rows.append(
        row(
            f"a. hook: 10,000 tickets, {pages} pages, C={C}",
            f"{wall:.2f} s, {sent}",
            wall / bound,
            f"<= 1.3x bound ({bound:.2f} s)",
            wall / bound <= 1.3,
        )
    )
    hook_wall = wall

    async def trigger_read() -> tuple[float, int, float, int]:
        trigger = UnansweredTicketsTrigger(COMPANY)
        async with ClubCollectHook() as ahook:

            async def poll() -> list[dict[str, Any]]:
                read = await ahook.aget_company_tickets(COMPANY, "unanswered", max_concurrency=trigger.max_concurrency)
                return await trigger.select(read)

            await poll()  # warm
            began = time.perf_counter()
            waiting = await poll()
            poll_wall = time.perf_counter() - began
            assert len(waiting) == 10_000, len(waiting)
            # The read alone, as the hook's figure is: what a trigger's poll does before selecting.
            walls, count, sent = [], 0, ""
            for _ in range(5):
                client.clear_requests()
                began = time.perf_counter()
                count = len(
                    await ahook.aget_company_tickets(COMPANY, "unanswered", max_concurrency=trigger.max_concurrency)
                )
                walls.append(time.perf_counter() - began)
                sent = requests_sent(client)
            return statistics.median(walls), count, poll_wall, sent

    wall, count, poll_wall, sent = asyncio.run(trigger_read())
    assert count == 10_000, count
    rows.append(Row("a. trigger poll: the read and the selection of 10,000 tickets", f"{poll_wall:.2f} s"))
    rows.append(
        row(
            f"a. trigger: 10,000 tickets, {pages} pages, C={C}",
            f"{wall:.2f} s, {sent}",
            wall / bound,
            f"<= 1.3x bound ({bound:.2f} s)",
            wall / bound <= 1.3,
        )
    )

    def diy() -> int:
        count, number = 0, 1
        while True:
            body = one_page(number, 30)
            count += len(body["tickets"])
            if number >= body["page"]["total_pages"]:
                return count
            number += 1

    client.clear_requests()
    wall, count = timed(diy)
    assert count == 10_000, count
    rows.append(
        row(
            "a. DIY requests loop, page_size 30, one at a time",
            f"{wall:.2f} s, {len(client.requests())} requests",
            wall / hook_wall,
            ">= 10x the hook's time",
            wall / hook_wall >= 10,
        )
    )
    session.close()
    hook.close()


def bench_archive(client: Any, base_url: str, rows: list[Row]) -> None:
    import requests

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.operators.tickets import ArchiveTicketsOperator

    ids = [f"{ARCHIVE_COMPANY}-{n:05d}" for n in range(1000)]
    session = requests.Session()
    session.trust_env = False
    session.headers.update(ClubCollectHook().settings.headers())
    archive_url = f"{base_url}/api/v2/invoices/{ids[0]}/tickets/actions/archive"
    session.post(archive_url, timeout=30)
    rtt = median_seconds(lambda: session.post(archive_url, timeout=30).raise_for_status())
    session.close()
    rows.append(Row("RTT of one archive (median of 7)", f"{rtt * 1000:.1f} ms"))
    for concurrency in (8, 32):
        operator = ArchiveTicketsOperator(task_id="archive", invoice_ids=ids, max_concurrency=concurrency)
        wall, done = timed(lambda operator=operator: operator.execute({}))
        assert len(done) == 1000
        bound = math.ceil(1000 / concurrency) * rtt
        rows.append(
            row(
                f"b. archive 1,000 invoices, C={concurrency}",
                f"{wall:.2f} s",
                wall / bound,
                f"<= 1.3x bound ({bound:.2f} s)" if concurrency == 8 else f"(bound {bound:.2f} s)",
                wall / bound <= 1.3 if concurrency == 8 else True,
            )
        )


def bench_imports(rows: list[Row]) -> None:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="clubcollect-bench-pycache-")
    code = "import time, {before}\nbegan = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - began)\n"

    def median_ms(module: str, before: str = "airflow.sdk") -> float:
        def once() -> float:
            out = subprocess.run(
                [sys.executable, "-c", code.format(module=module, before=before)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            return float(out.stdout.strip().splitlines()[-1])

        once()  # writes the bytecode cache
        return statistics.median(once() for _ in range(7)) * 1000

    for module in PUBLIC_MODULES:
        ms = median_ms(module)
        rows.append(
            row(
                f"c. import {module.removeprefix('airflow_provider_clubcollect.')}",
                f"{ms:.1f} ms",
                ms / 10,
                "<= 10 ms",
                ms <= 10,
            )
        )
    # A trigger module must subclass Airflow's BaseTrigger: airflow.triggers.base (pydantic models)
    # is paid by every trigger module, so its share is printed apart from the provider's.
    rows.append(
        Row("c. reference: import airflow.triggers.base (Airflow's)", f"{median_ms('airflow.triggers.base'):.1f} ms")
    )
    ms = median_ms("airflow_provider_clubcollect.triggers.tickets", "airflow.sdk, airflow.triggers.base")
    rows.append(Row("c. import triggers.tickets over airflow.triggers.base too", f"{ms:.1f} ms", ms / 10, "(<= 10 ms)"))


def bench_streaming(rows: list[Row]) -> None:
    from airflow_provider_clubcollect.operators.tickets import FetchCompanyTicketsOperator

    target = Path(tempfile.mkdtemp(prefix="clubcollect-bench-")) / "tickets.jsonl"

    def as_list() -> Any:
        return FetchCompanyTicketsOperator(task_id="fetch", company_id=BIG_COMPANY).execute({})

    def streamed() -> Any:
        return FetchCompanyTicketsOperator(
            task_id="fetch", company_id=BIG_COMPANY, output_path=f"file://{target}"
        ).execute({})

    def peak(call: Callable[[], Any]) -> int:
        tracemalloc.start()
        try:
            result = call()
            size = tracemalloc.get_traced_memory()[1]
            del result
            return size
        finally:
            tracemalloc.stop()

    as_list()  # warm
    list_wall, tickets = timed(as_list)
    assert len(tickets) == 100_000
    del tickets
    stream_wall, result = timed(streamed)
    assert result["count"] == 100_000, result
    list_peak, stream_peak = peak(as_list), peak(streamed)
    rows.append(Row("d. return 100,000 tickets as a list", f"{list_wall:.2f} s, peak {list_peak / 2**20:.0f} MiB"))
    rows.append(
        row(
            "d. stream them to file:// : memory",
            f"peak {stream_peak / 2**20:.1f} MiB",
            stream_peak / list_peak,
            "<= 0.25x the list's",
            stream_peak / list_peak <= 0.25,
        )
    )
    rows.append(
        row(
            "d. stream them to file:// : wall",
            f"{stream_wall:.2f} s",
            stream_wall / list_wall,
            "<= 1.2x the list's",
            stream_wall / list_wall <= 1.2,
        )
    )
    target.unlink()


def bench_cpu(client: Any, base_url: str, rows: list[Row]) -> None:
    import requests

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    invoice_id = f"{ARCHIVE_COMPANY}-00000"  # a thread of one ticket: the cost of a request, not of parsing
    client.clear_faults()  # CPU is what is measured: no need to wait for the latency
    hook = ClubCollectHook()
    session = requests.Session()
    session.trust_env = False
    session.headers.update(hook.settings.headers())
    url = f"{base_url}/api/v2/invoices/{invoice_id}/tickets"
    n = 3000

    def bare() -> Any:
        response = session.get(url, timeout=30)
        response.raise_for_status()
        return response.json()

    def hooked() -> Any:
        return hook.get_invoice_tickets(invoice_id)

    for _ in range(50):
        hooked()
        bare()
    # Call by call, alternated, each timed on this thread's CPU clock (both run wholly in it, and
    # threads left from earlier steps cannot charge their time to either); the medians ignore the
    # calls a garbage collection or an interrupt happened to land in.
    hook_cpu, bare_cpu = [], []
    for _ in range(n):
        began = time.thread_time()
        hooked()
        middle = time.thread_time()
        bare()
        hook_cpu.append(middle - began)
        bare_cpu.append(time.thread_time() - middle)
    hook_ms, bare_ms = statistics.median(hook_cpu) * 1000, statistics.median(bare_cpu) * 1000
    rows.append(
        row(
            "e. client CPU per request, hook vs bare requests.Session",
            f"{hook_ms:.2f} ms vs {bare_ms:.2f} ms",
            hook_ms / bare_ms,
            "<= 1.1x",
            hook_ms / bare_ms <= 1.1,
        )
    )
    session.close()
    hook.close()
    client.set_faults(latency_ms=LATENCY_MS)


def resident_bytes() -> int:
    """This process's resident set, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_watchers(client: Sandboxes, rows: list[Row]) -> None:
    """f. :data:`WATCHERS` event watchers on one loop: memory per watcher, CPU per poll, each ticket once."""
    from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsEventTrigger

    companies = [f"{WATCH_COMPANY}-{n:03d}" for n in range(WATCHERS)]
    seen: dict[str, list[str]] = {c: [] for c in companies}

    async def watch(company: str) -> None:
        trigger = UnansweredTicketsEventTrigger(company, poll_interval=WATCH_POLL)
        async for event in trigger.run():
            seen[company].extend(t["ticket_id"] for t in event.payload["tickets"])

    def polls() -> int:
        return sum(1 for r in client.requests() if f"/{WATCH_COMPANY}-" in r["path"])

    async def until(what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"watchers: {what} within {timeout:g} s")
            await asyncio.sleep(0.05)

    async def run() -> tuple[float, float, int]:
        # A warm-up watcher of its own: imports, the shared client, Airflow's connection read.
        warm = asyncio.ensure_future(watch(companies[0]))
        await until("the warm-up watcher reported", lambda: bool(seen[companies[0]]), 60)
        base = resident_bytes()
        tasks = [asyncio.ensure_future(watch(c)) for c in companies[1:]]
        try:
            await until("every watcher reported its ticket", lambda: all(seen.values()), 120)
            await asyncio.sleep(WATCH_POLL)  # every watcher has polled twice: steady state
            memory = (resident_bytes() - base) / (WATCHERS - 1)
            await asyncio.to_thread(client.clear_requests)
            cpu = time.process_time()
            await asyncio.sleep(5 * WATCH_POLL)
            cpu_per_poll = (time.process_time() - cpu) / await asyncio.to_thread(polls)
            await asyncio.to_thread(client.clear_requests)
            # A second member message in every company, mid-run: reported once each, none missed.
            for company in companies:
                for sandbox in client.clients:
                    await asyncio.to_thread(
                        sandbox.add_tickets,
                        f"{company}-00000",
                        [
                            {
                                "message": "Nog een vraag",
                                "sender": "CUSTOMER",
                                "date": "2026-06-01T00:00:00+00:00",
                                "ticket_id": f"{company}-second",
                            }
                        ],
                    )
            await until(
                "every watcher reported the second ticket", lambda: all(len(s) >= 2 for s in seen.values()), 120
            )
            await asyncio.sleep(2 * WATCH_POLL)  # more polls: nothing may come again
            return memory, cpu_per_poll, await asyncio.to_thread(polls)
        finally:
            for task in [warm, *tasks]:
                task.cancel()
            await asyncio.gather(warm, *tasks, return_exceptions=True)

    client.set_faults()  # no latency: polls of one page, as fast as the loop takes them
    memory, cpu_per_poll, later_polls = asyncio.run(run())
    client.set_faults(latency_ms=LATENCY_MS)
    exact = all(seen[c] == [f"{c}-00000-0", f"{c}-second"] for c in companies)
    rows.append(
        row(
            f"f. {WATCHERS} watchers on one loop: memory per watcher (RSS)",
            f"{memory / 1024:.0f} KB",
            memory / (100 * 1024),
            "<= 100 KB",
            memory <= 100 * 1024,
        )
    )
    rows.append(
        row(
            "f. watchers: client CPU per poll of a one-page company",
            f"{cpu_per_poll * 1000:.2f} ms",
            cpu_per_poll / 0.002,
            "<= 2 ms",
            cpu_per_poll <= 0.002,
        )
    )
    rows.append(
        row(
            "f. watchers: each ticket reported once, none missed (2 per watcher)",
            f"{sum(len(v) for v in seen.values())} reports, {later_polls} polls after the 2nd",
            None,
            "exactly 2 each",
            exact,
        )
    )


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    """A ``redis-server`` of its own on a free loopback port, nothing saved; stop it by its PID."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, port
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def page_with_budget() -> None:
    """One process of g.: say it is ready, wait for the common start, read the company's 10,000 tickets."""
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    with ClubCollectHook() as hook:
        assert hook.settings.max_retries  # the connection read before the start, not in the window
        print("ready", flush=True)
        sys.stdin.readline()
        count = len(hook.get_company_tickets(COMPANY, "unanswered"))
        # When the read ended, on the clock the parent shares: a Python's exit is no part of the figure.
        print(f"read {count} at {time.time()!r}", flush=True)


def bench_budget(api_key: str, rows: list[Row]) -> None:
    """g. :data:`BUDGET_PROCESSES` processes against one key's budget, without and with the shared budget."""
    processes, base_url, client = start_sandboxes(api_key, servers=1)  # one bucket per key
    redis, redis_port = start_redis()
    try:
        client.set_faults(rate_limit_per_second=BUDGET_RATE, rate_limit_burst=BUDGET_BURST)
        results = {}
        cap = {"max_requests_per_second": BUDGET_RATE, "max_retries": 100}  # every ticket read, however refused
        for label, extra in (
            ("each process capped alone", cap),
            ("shared budget (Redis)", dict(cap, budget_url=f"redis://127.0.0.1:{redis_port}/0")),
        ):
            conn = {"conn_type": "clubcollect", "password": api_key, "host": f"{base_url}/api", "extra": extra}
            env = dict(os.environ, AIRFLOW_CONN_CLUBCOLLECT_DEFAULT=json.dumps(conn))
            time.sleep(1.5)  # the sandbox's bucket refills: each run starts with a full burst
            client.clear_requests()
            workers = [
                subprocess.Popen(
                    [sys.executable, __file__, "--page-with-budget"],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(BUDGET_PROCESSES)
            ]
            # Every Python started and read its connection before the clock starts; then all at once.
            for worker in workers:
                assert worker.stdout is not None
                while worker.stdout.readline() not in (b"ready\n", b""):
                    pass
            began = time.time()
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write(b"go\n")
                worker.stdin.flush()
            with ThreadPoolExecutor(len(workers)) as pool:  # read every pipe at once: none may fill and stall
                outputs = list(pool.map(lambda w: w.communicate(timeout=600)[0], workers))
            last_lines = [o.splitlines()[-1].split() if o.strip() else [] for o in outputs]
            if any(w.returncode for w in workers) or any(line[:2] != [b"read", b"10000"] for line in last_lines):
                raise RuntimeError(f"g. a paging process failed ({label}): exit {[w.returncode for w in workers]}")
            wall = max(float(line[-1]) for line in last_lines) - began
            statuses = [r["status"] for r in client.requests()]
            answered = sum(1 for s in statuses if s != 429)
            refused = len(statuses) - answered
            bound = answered / BUDGET_RATE
            results[label] = (wall, bound, refused, len(statuses))
        for label, (wall, bound, refused, sent) in results.items():
            shared = label.startswith("shared")
            rows.append(
                row(
                    f"g. {BUDGET_PROCESSES} processes at {BUDGET_RATE} req/s (burst {BUDGET_BURST}), {label}",
                    f"{wall:.1f} s, {refused} of {sent} requests refused (429: {refused / sent:.0%})",
                    wall / bound,
                    f"<= 1.15x bound ({bound:.1f} s), < 1% 429" if shared else "(comparison)",
                    wall / bound <= 1.15 and refused < 0.01 * sent if shared else None,
                )
            )
    finally:
        os.killpg(redis.pid, 15)
        redis.wait(10)
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(10)


def print_table(rows: list[Row]) -> bool:
    header = ("figure", "measured", "ratio", "target", "")
    lines = [
        (
            r.figure,
            r.value,
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            "" if r.ok is None else ("PASS" if r.ok else "FAIL"),
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(5)]
    rule = "  ".join("-" * w for w in widths)
    print(rule)
    for line in [header, *lines]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip())
        if line is header:
            print(rule)
    print(rule)
    return all(r.ok is not False for r in rows)


def main(figures: str = "abcdefg") -> int:
    api_key = secrets.token_hex(20)
    home = tempfile.mkdtemp(prefix="clubcollect-bench-airflow-")
    os.environ.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    processes, base_url, client = start_sandboxes(api_key)
    try:
        os.environ["AIRFLOW_CONN_CLUBCOLLECT_DEFAULT"] = (
            f'{{"conn_type": "clubcollect", "password": "{api_key}", "host": "{base_url}/api"}}'
        )
        print(
            f"Sandbox {base_url}: {SERVERS} processes, each with 10,000 + 100,000 tickets and 1,000 invoices.",
            flush=True,
        )
        client.set_faults(latency_ms=LATENCY_MS)
        rows: list[Row] = []
        steps = {
            "a": lambda: bench_paging(client, base_url, rows),
            "b": lambda: bench_archive(client, base_url, rows),
            "d": lambda: bench_streaming(rows),
            "e": lambda: bench_cpu(client, base_url, rows),
            "c": lambda: bench_imports(rows),
            "f": lambda: bench_watchers(client, rows),
            "g": lambda: bench_budget(api_key, rows),
        }
        for figure, step in steps.items():
            if figure in figures:
                step()
        load = os.getloadavg()
        print(
            f"\nmake bench: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{LATENCY_MS} ms latency injected, C={C}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        )
        ok = print_table(rows)
        print("\nEvery target met." if ok else "\nSome targets were missed (see FAIL).")
        return 0 if ok else 1
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
        sys.exit(0)
    if sys.argv[1:2] == ["--page-with-budget"]:
        page_with_budget()
        sys.exit(0)
    try:
        # `python dev/bench.py ce` measures figures c and e only (e.g. before and after a change).
        sys.exit(main("".join(sys.argv[1:]) or "abcdefg"))
    except KeyboardInterrupt:
        sys.exit(130)
