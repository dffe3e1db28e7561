"""``python -m airflow_provider_clubcollect.sandbox``: run a local ClubCollect in the foreground.

It prints the base URL, the API key, the companies it holds and the ``AIRFLOW_CONN_*`` line that
points Airflow's default ClubCollect connection at it, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from airflow_provider_clubcollect.sandbox.server import SandboxServer

#: The environment variable that gives ``--api-key`` its default.
API_KEY_ENV = "CLUBCOLLECT_SANDBOX_API_KEY"


def default_api_key(seed: int | None) -> str:
    """
    The key a sandbox started without ``--api-key`` accepts: the same at every start with the same seed.

    An exported connection then survives a restart.  It is no secret (anyone can derive it): the sandbox
    holds made-up data and listens on loopback unless told otherwise.

    :param seed: the seed of the data; ``None`` for ``--empty``.
    """
    return hashlib.sha256(f"clubcollect-sandbox:{'empty' if seed is None else seed}".encode()).hexdigest()[:40]


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_clubcollect.sandbox",
        description="Run a local, in-memory ClubCollect Tickets API (with seed data) for Airflow to talk to.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default: 8765)")
    seed = parser.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0, help="seed of the generated data (default: 0)")
    seed.add_argument("--empty", action="store_true", help="start with no data at all")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"the API key to accept (default: ${API_KEY_ENV} if set, else a key derived from the seed, "
        "the same at every start, so an exported connection keeps working after a restart)",
    )
    parser.add_argument(
        "--rate-limit-per-second",
        type=float,
        default=None,
        metavar="RATE",
        help="enforce a budget per API key, as a real API does: a token bucket refilled at RATE requests per "
        "second; a request beyond it gets 429 with Retry-After (default: no budget)",
    )
    parser.add_argument(
        "--rate-limit-burst",
        type=int,
        default=None,
        metavar="N",
        help="the bucket's size: requests served at once from a full bucket (default: RATE rounded, at least 1)",
    )
    return parser


def budget_settings(args: argparse.Namespace) -> dict[str, Any]:
    """
    The fault settings the budget flags ask for (empty without them), checked as the control API checks them.

    :param args: the parsed command line.
    :raises SandboxInputError: for a rate or burst the sandbox refuses.
    """
    from airflow_provider_clubcollect.sandbox.faults import parse_fault_settings

    settings = {
        name: value
        for name, value in (
            ("rate_limit_per_second", args.rate_limit_per_second),
            ("rate_limit_burst", args.rate_limit_burst),
        )
        if value is not None
    }
    if settings:
        parse_fault_settings(settings)
    return settings


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """
    Run the sandbox until interrupted.

    :param argv: the arguments (``sys.argv[1:]`` when ``None``).
    :param out: where to print (standard output when ``None``).
    :return: the exit status.
    """
    from airflow_provider_clubcollect.sandbox.errors import SandboxInputError
    from airflow_provider_clubcollect.sandbox.server import SandboxServer

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        budget = budget_settings(args)
    except SandboxInputError as error:
        parser.error(str(error))  # exits 2 with the usage line, as for any bad flag
    out = out or sys.stdout
    seed = None if args.empty else args.seed
    server = SandboxServer(host=args.host, port=args.port, seed=seed, api_key=args.api_key or default_api_key(seed))
    try:
        server.start()
    except OSError as error:
        print(f"Cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    if budget:
        server.state.set_faults(budget)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        print_banner(server, out)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            if not server.running:
                print("The sandbox stopped unexpectedly.", file=sys.stderr)
                return 1
    finally:
        server.stop()
    print("ClubCollect sandbox stopped.", file=out, flush=True)
    return 0


def print_banner(server: SandboxServer, out: TextIO) -> None:
    """
    Print where the sandbox is, its key, its companies and the connection line for Airflow.

    :param server: the running sandbox.
    :param out: where to print.
    """
    from airflow_provider_clubcollect.connection import is_loopback
    from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
    from airflow_provider_clubcollect.sandbox.state import STATUSES

    lines = [
        f"ClubCollect sandbox listening on {server.root_url}",
        f"Base URL:    {server.base_url}",
        f"API key:     {server.api_key}",
        f"Control API: {server.control_url}",
    ]
    faults = server.state.faults()
    if faults["rate_limit_per_second"] is not None:
        lines.append(
            f"Rate limit:  {faults['rate_limit_per_second']:g} requests per second per API key "
            f"(burst {faults['rate_limit_burst']}); beyond it 429 with Retry-After"
        )
    if not is_loopback(server.host):
        lines.append(
            "WARNING: listening beyond loopback; the provider refuses plain http:// to other hosts, "
            "and anyone who can reach this address can use the sandbox."
        )
    companies = server.state.companies()
    lines.append(f"Companies ({len(companies)}):" if companies else "Companies: none (started empty)")
    for company in companies:
        counts = ", ".join(f"{status} {company['tickets'][status]}" for status in STATUSES)
        lines.append(
            f"  {company['company_id']}  {company['name']}  ({company['invoices']} invoices; tickets: {counts})"
        )
    env_var = f"AIRFLOW_CONN_{DEFAULT_CONN_ID.upper()}"
    lines += [
        "Point Airflow's default ClubCollect connection at it (in the shell that runs Airflow, export this):",
        f"{env_var}='{server.connection_json()}'",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
