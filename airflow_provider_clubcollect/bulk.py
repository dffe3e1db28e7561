"""Run one idempotent action (archive, assign to support) on many invoices, concurrently.

Every invoice is tried; failures are collected, not raised one by one, so that one bad invoice
never stops the rest.  The caller then fails loudly, naming each failed invoice and why.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError
from airflow_provider_clubcollect.wire import shorten, shown

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: Requests in flight at once for bulk actions.  Eight keeps a 1,000-invoice archive at 20 ms
#: latency near 2.5 s while staying far from rate limits a partner API is likely to have; raise it
#: when ClubCollect allows, lower it when you see 429s.
DEFAULT_MAX_CONCURRENCY = 8
#: Failures named with their reason in a bulk error; later ones are named by ID only, so that
#: the message stays readable and bounded however many invoices failed.
DETAILED_FAILURES = 20

log = logging.getLogger(__name__)


@dataclass
class BulkResult:
    """
    What a bulk action did.

    :param done: invoice IDs the action succeeded on, sorted.
    :param failed: invoice ID to the reason it failed.
    """

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def raise_for_failures(self, verb: str) -> None:
        """
        Raise one error naming every failed invoice and why, if any failed.

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
                invoice_id for invoice_id, _ in failed[DETAILED_FAILURES:]
            )
        raise ClubCollectError(
            f"Could not {verb} {len(self.failed)} of {total} invoices ({len(self.done)} succeeded). "
            f"Failed: {reasons}. Re-running is safe: the action is idempotent."
        )


def check_concurrency(value: object) -> int:
    """
    Check ``max_concurrency``.

    :param value: an integer of at least 1.
    :raises ClubCollectValidationError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClubCollectValidationError(f"max_concurrency must be an integer of at least 1, got {shown(value)}.")
    return value


def run_bulk(
    action: Callable[[str], None], invoice_ids: Sequence[str], *, max_concurrency: int, verb: str
) -> BulkResult:
    """
    Apply ``action`` to every invoice, at most ``max_concurrency`` at a time.

    :param action: the call for one invoice, such as ``hook.archive_tickets``; it must be safe to
        call from several threads (the hook is).
    :param invoice_ids: the invoices.
    :param max_concurrency: requests in flight at once.
    :param verb: what the action is, for the log (``archive``, ``assign to support``).
    :return: which invoices succeeded and which failed, and why.
    """
    result = BulkResult()
    if not invoice_ids:
        return result

    def attempt(invoice_id: str) -> tuple[str, str | None]:
        try:
            action(invoice_id)
        except ClubCollectError as exc:
            code = f"{exc.status_code} {exc.error_code}" if exc.status_code else type(exc).__name__
            return invoice_id, f"{code.strip()}: {exc}"
        except Exception as exc:  # a bug or an unexpected library error: still report every invoice
            return invoice_id, f"{type(exc).__name__}: {shorten(str(exc), 300)}"
        return invoice_id, None

    workers = min(check_concurrency(max_concurrency), len(invoice_ids))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clubcollect") as pool:
        for invoice_id, error in pool.map(attempt, invoice_ids):
            if error is None:
                result.done.append(invoice_id)
            else:
                result.failed[invoice_id] = error
    result.done.sort()
    summary = f"ClubCollect: {verb}: {len(result.done)} of {len(invoice_ids)} invoices done"
    if result.failed:
        first = "; ".join(f"{i} ({r[:120]})" for i, r in list(sorted(result.failed.items()))[:10])
        more = f" and {len(result.failed) - 10} more" if len(result.failed) > 10 else ""
        log.error("%s; %d failed: %s%s.", summary, len(result.failed), first, more)
    else:
        log.info("%s.", summary)
    return result
