"""One idempotent action on many invoices: every invoice tried, failures summed up in one bounded message."""

from __future__ import annotations

import logging
import time
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.exceptions import ClubCollectAuthError, ClubCollectError, shorten

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Future

    from airflow_provider_clubcollect.limiter import AdaptiveLimiter

__all__ = ["BulkResult"]

#: Progress is logged when both this share of the invoices and this many seconds have passed.
PROGRESS_SHARE = 0.1
PROGRESS_SECONDS = 10.0
#: A failure summary names at most this many kinds of failure, and this many invoices of each.
MAX_GROUPS = 5
MAX_IDS = 20

log = logging.getLogger(__name__)


@dataclass
class BulkResult:
    """
    What a bulk action did (:meth:`~airflow_provider_clubcollect.hooks.clubcollect.ClubCollectHook.for_each_invoice`).

    :param verb: the action, such as ``archive``.
    :param done: invoice IDs the action succeeded on, sorted.
    :param failed: invoice ID to the reason it failed.
    :param not_tried: invoice IDs left untried after the API key was refused, sorted.
    """

    verb: str
    done: list[str]
    failed: dict[str, str]
    not_tried: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One bounded line: the counts, then the failures by kind (status, error code), with IDs and a reason."""
        total = len(self.done) + len(self.failed) + len(self.not_tried)
        untried = f", {len(self.not_tried)} not tried" if self.not_tried else ""
        text = f"{self.verb}: {len(self.done)} of {total} invoices done, {len(self.failed)} failed{untried}."
        groups: dict[str, list[str]] = {}
        for invoice_id, why in sorted(self.failed.items()):
            groups.setdefault(why.split(": ", 1)[0], []).append(invoice_id)
        parts = []
        for code, ids in list(groups.items())[:MAX_GROUPS]:
            more = f" and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else ""
            example = shorten(self.failed[ids[0]].split(": ", 1)[-1], 200)
            parts.append(f"{code}: {', '.join(ids[:MAX_IDS])}{more} ({ids[0]}: {example})")
        if len(groups) > MAX_GROUPS:
            parts.append(f"and {sum(len(ids) for ids in list(groups.values())[MAX_GROUPS:])} failed otherwise")
        return text + (" Failed: " + "; ".join(parts) + "." if parts else "")

    def raise_for_failures(self) -> None:
        """Raise one ``ClubCollectError`` naming the failed invoices and why, if any failed."""
        if self.failed:
            raise ClubCollectError(f"Bulk {self.summary()} Re-running is safe: the action is idempotent.")


def run_bulk(
    action: Callable[[str], object], invoice_ids: Sequence[str], limiter: AdaptiveLimiter, *, verb: str
) -> BulkResult:
    """Apply ``action`` to every invoice, fewer than ``limiter.limit`` at a time; a refused key stops the rest."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    result = BulkResult(verb, [], {})
    if not invoice_ids:
        return result
    refused: list[ClubCollectAuthError] = []

    def attempt(invoice_id: str) -> None:
        try:
            action(invoice_id)
        except Exception as exc:  # a bug or an unexpected library error too: still report every invoice
            if isinstance(exc, ClubCollectAuthError):
                refused.append(exc)
            # Only ours: Airflow's own exceptions carry a class-level status_code (500) of no HTTP answer.
            status = exc.status_code if isinstance(exc, ClubCollectError) else None
            code = f"{status} {getattr(exc, 'error_code', '')}".strip() if status else type(exc).__name__
            result.failed[invoice_id] = f"{code}: {shorten(str(exc), 300)}"
        else:
            result.done.append(invoice_id)

    total, todo = len(invoice_ids), iter(invoice_ids)
    pending: set[Future[None]] = set()
    started = last_time = time.monotonic()
    finished = last_count = 0
    name = verb.replace(" ", "_")
    with observability.span(f"bulk.{name}"), ThreadPoolExecutor(limiter.max_concurrency, "clubcollect") as pool:
        while True:
            while not refused and len(pending) < limiter.limit and (invoice_id := next(todo, None)) is not None:
                # In a copy of the caller's context, so that the requests' spans are the action's children.
                pending.add(pool.submit(copy_context().run, attempt, invoice_id))
            if not pending:
                break
            answered, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in answered:
                future.result()
                finished, now = finished + 1, time.monotonic()
                if (
                    finished < total
                    and finished - last_count >= total * PROGRESS_SHARE
                    and now - last_time >= PROGRESS_SECONDS
                ):
                    log.info(
                        "ClubCollect: %s: %d of %d invoices handled (%d%%, %d failed) in %.0f s.",
                        verb,
                        finished,
                        total,
                        100 * finished // total,
                        len(result.failed),
                        now - started,
                    )
                    last_time, last_count = now, finished
    result.done.sort()
    result.not_tried = sorted(todo)
    observability.count(f"bulk.{name}.done", len(result.done))
    observability.count(f"bulk.{name}.failed", len(result.failed))
    (log.error if result.failed else log.info)("ClubCollect: %s", result.summary())
    if refused:
        raise ClubCollectAuthError(
            f"ClubCollect refused the API key (HTTP {refused[0].status_code}), so every other invoice would fail "
            "the same way: check the connection's password (the API key) and its rights. Stopped the bulk "
            f"{result.summary()} None of those not tried was done; re-running is safe: the action is idempotent.",
            status_code=refused[0].status_code,
            error_code=refused[0].error_code,
        )
    return result
