"""Run one idempotent action (archive, assign to support) on many invoices, concurrently.

Every invoice is tried; failures are collected, not raised one by one, so that one bad invoice
never stops the rest.  The caller then fails loudly, naming each failed invoice and why.
"""

from __future__ import annotations

import logging
import time
from contextvars import copy_context
from typing import TYPE_CHECKING

from airflow_provider_clubcollect import observability
from airflow_provider_clubcollect.exceptions import (
    ClubCollectAuthError,
    ClubCollectError,
    shorten,
)
from airflow_provider_clubcollect.wire import check_int

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


#: A running bulk action logs its progress when both this share of the invoices and
#: :data:`PROGRESS_SECONDS` have passed since the last line: every 10% or every 10 s, whichever is rarer.
PROGRESS_SHARE = 0.1
PROGRESS_SECONDS = 10.0
#: Failures named with their reason in a bulk error; later ones are named by ID only, so that
#: the message stays readable and bounded however many invoices failed.
DETAILED_FAILURES = 20
#: Failures named at all in a bulk error; beyond them only their count is given.
NAMED_FAILURES = 100

log = logging.getLogger(__name__)


class BulkResult:
    """
    What a bulk action did.

    :param done: invoice IDs the action succeeded on, sorted.
    :param failed: invoice ID to the reason it failed.
    """

    def __init__(self, done: list[str] | None = None, failed: dict[str, str] | None = None) -> None:
        self.done = [] if done is None else done
        self.failed = {} if failed is None else failed

    def raise_for_failures(self, verb: str) -> None:
        """
        Raise one error naming the failed invoices and why, if any failed.

        The first :data:`DETAILED_FAILURES` come with their reason, the next ones up to
        :data:`NAMED_FAILURES` by ID, the rest by count: the message stays bounded.

        :param verb: what the action was, such as ``archive``.
        :raises ClubCollectError: when at least one invoice failed.
        """
        if not self.failed:
            return
        total = len(self.done) + len(self.failed)
        failed = sorted(self.failed.items())
        reasons = "; ".join(
            f"{invoice_id}: {shorten(reason, 300)}" for invoice_id, reason in failed[:DETAILED_FAILURES]
        )
        if len(failed) > DETAILED_FAILURES:
            reasons += f"; and {len(failed) - DETAILED_FAILURES} more: " + ", ".join(
                invoice_id for invoice_id, _ in failed[DETAILED_FAILURES:NAMED_FAILURES]
            )
        if len(failed) > NAMED_FAILURES:
            reasons += f" and {len(failed) - NAMED_FAILURES} others"
        raise ClubCollectError(
            f"Could not {verb} {len(self.failed)} of {total} invoices ({len(self.done)} succeeded). "
            f"Failed: {reasons}. Re-running is safe: the action is idempotent."
        )


def run_bulk(
    action: Callable[[str], None], invoice_ids: Sequence[str], *, max_concurrency: int, verb: str
) -> BulkResult:
    """
    Apply ``action`` to every invoice, at most ``max_concurrency`` at a time.

    Progress is logged while it runs (every 10% or every 10 s, whichever is rarer).  A refused key
    (401 or 403) would fail every invoice the same way, so the first one stops the action: what
    is running finishes, the rest is not tried, and :class:`ClubCollectAuthError` says so.

    :param action: the call for one invoice, such as ``hook.archive_tickets``; it must be safe to
        call from several threads (the hook is).
    :param invoice_ids: the invoices.
    :param max_concurrency: requests in flight at once.
    :param verb: what the action is, for the log (``archive``, ``assign to support``).
    :return: which invoices succeeded and which failed, and why.
    :raises ClubCollectAuthError: when the API key was refused; names how many invoices were
        done and how many not tried.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    result = BulkResult()
    if not invoice_ids:
        return result
    refused: list[ClubCollectAuthError] = []

    def attempt(invoice_id: str) -> str | None:
        if refused:
            return _NOT_TRIED
        try:
            action(invoice_id)
        except ClubCollectError as exc:
            if isinstance(exc, ClubCollectAuthError):
                refused.append(exc)
            code = f"{exc.status_code} {exc.error_code}" if exc.status_code else type(exc).__name__
            return f"{code.strip()}: {exc}"
        except Exception as exc:  # a bug or an unexpected library error: still report every invoice
            return f"{type(exc).__name__}: {shorten(str(exc), 300)}"
        return None

    total = len(invoice_ids)
    not_tried: list[str] = []
    workers = min(check_int(max_concurrency, "max_concurrency"), total)
    started = last_time = time.monotonic()
    last_count = 0
    action_name = verb.replace(" ", "_")
    with observability.span(f"bulk.{action_name}"), ThreadPoolExecutor(workers, "clubcollect") as pool:
        # Each in the caller's context (a copy each), so that the requests' spans are the action's children.
        futures = {pool.submit(copy_context().run, attempt, invoice_id): invoice_id for invoice_id in invoice_ids}
        for finished, future in enumerate(as_completed(futures), start=1):
            invoice_id, error = futures[future], future.result()
            if error is None:
                result.done.append(invoice_id)
            elif error is _NOT_TRIED:
                not_tried.append(invoice_id)
            else:
                result.failed[invoice_id] = error
            now = time.monotonic()
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
    observability.count(f"bulk.{action_name}.done", len(result.done))
    observability.count(f"bulk.{action_name}.failed", len(result.failed))
    if refused:
        raise _refused(refused[0], verb, result, sorted(not_tried), total)
    summary = f"ClubCollect: {verb}: {len(result.done)} of {len(invoice_ids)} invoices done"
    if result.failed:
        first = "; ".join(f"{i} ({r[:120]})" for i, r in list(sorted(result.failed.items()))[:10])
        more = f" and {len(result.failed) - 10} more" if len(result.failed) > 10 else ""
        log.error("%s; %d failed: %s%s.", summary, len(result.failed), first, more)
    else:
        log.info("%s.", summary)
    return result


#: What ``attempt`` returns for an invoice it did not try (compared by identity).
_NOT_TRIED = "not tried"


def _refused(exc: ClubCollectAuthError, verb: str, result: BulkResult, not_tried: list[str], total: int) -> Exception:
    first = ", ".join(not_tried[:5])
    more = f" and {len(not_tried) - 5} more" if len(not_tried) > 5 else ""
    message = (
        f"Stopped the {verb} of {total} invoices: ClubCollect refused the API key (HTTP {exc.status_code}), "
        "so every other invoice would fail the same way. Check the connection's password (the API key) "
        f"and its rights. {len(result.done)} done, {len(result.failed)} failed, {len(not_tried)} not tried"
        f"{f' ({first}{more})' if not_tried else ''}; none of those not tried was done. "
        "Re-running is safe: the action is idempotent."
    )
    log.error("ClubCollect: %s", message)
    return ClubCollectAuthError(message, status_code=exc.status_code, error_code=exc.error_code)
