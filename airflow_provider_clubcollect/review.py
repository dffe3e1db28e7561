"""Ticket threads shown to a person, member text escaped: Markdown for a human-in-the-loop ``body``, plain for a log."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.selection import group_threads, human_duration, invoice_ids_from, to_utc
from airflow_provider_clubcollect.wire import SENDER_CUSTOMER

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime

__all__ = ["review_body"]

MESSAGE_CHARS = 160
MAX_THREADS = 50
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def review_body(
    tickets: Iterable[Mapping[str, Any]],
    invoice_ids: Iterable[Any] | None = None,
    *,
    now: datetime | str | None = None,
    max_threads: int = MAX_THREADS,
) -> str:
    """
    Render threads awaiting an answer as a Markdown table, longest waiting first, for a human-in-the-loop ``body``.

    :param Iterable[Mapping] tickets: the company's unanswered tickets (CompanyTicket dicts).
    :param Iterable | None invoice_ids: only these threads (ID strings or ticket dicts); ``None`` for all.
    :param datetime | str | None now: the reference time for "waiting for"; default the current UTC time.
    :param int max_threads: rows at most; a last line counts the threads left out.
    :return: the Markdown text; a sentence saying nothing waits when no thread does.

    .. seealso:: :doc:`/review`
    """
    wanted = None if invoice_ids is None else set(invoice_ids_from(invoice_ids))
    reference = to_utc(now)
    rows = sorted(
        (thread.unanswered_since, thread.invoice_id, str(thread.awaiting_answer()[-1].get("message", "")))
        for thread in group_threads(tickets)
        if thread.unanswered_since is not None and (wanted is None or thread.invoice_id in wanted)
    )
    if not rows:
        return "No thread awaits an answer."
    lines = [
        f"{len(rows)} thread{' awaits' if len(rows) == 1 else 's await'} an answer:",
        "",
        "| invoice | member's last message | waiting for |",
        "|---|---|---|",
    ]
    lines += [f"| {_cell(i)} | {_cell(text)} | {_age(reference, since)} |" for since, i, text in rows[:max_threads]]
    if len(rows) > max_threads:
        lines += ["", f"... and {len(rows) - max_threads} more."]
    return "\n".join(lines)


def threads_table(
    tickets: Iterable[Mapping[str, Any]], invoice_ids: Sequence[str], company_id: str | None, now: datetime | None
) -> str:
    """The chosen threads as a plain-text table for a task's log: company, invoice, waiting time, last words."""
    threads = {thread.invoice_id: thread for thread in group_threads(tickets)}
    now = to_utc(now)
    rows = [("company", "invoice", "waiting", "member's last words")]
    for invoice_id in invoice_ids[:MAX_THREADS]:
        thread = threads.get(invoice_id)
        waited, words = "(not read)", "(not read)"
        if thread is not None:
            since = thread.unanswered_since
            waited = _age(now, since) if since is not None else f"none; idle {_age(now, thread.last_activity)}"
            said = [t for t in thread.tickets if t.get("sender") == SENDER_CUSTOMER]
            words = _cell(str(said[-1].get("message", "")), log=True) if said else "(no member message)"
        rows.append((_cell(company_id or "-", log=True), _cell(invoice_id, log=True), waited, words))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]]) for row in rows]
    if len(invoice_ids) > MAX_THREADS:
        lines.append(f"... and {len(invoice_ids) - MAX_THREADS} more.")
    return "\n".join(lines)


def _age(now: datetime, since: datetime) -> str:  # whole minutes: seconds only clutter a decision about days
    return human_duration(timedelta(minutes=max(0, int((now - since).total_seconds() // 60))))


def _cell(message: str, *, log: bool = False) -> str:
    """One line of at most ``MESSAGE_CHARS``: Markdown escaped, or for a ``log`` no character that moves the cursor."""
    text = " ".join(message.split())
    text = text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1].rstrip() + "\u2026"
    if log:
        return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text) or "(empty)"
    return _MARKDOWN.sub(r"\\\1", text.replace("&", "&amp;").replace("<", "&lt;")) or "(empty)"
