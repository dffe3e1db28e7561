"""Ticket threads shown to a person: the Markdown body of a human-in-the-loop review.

Airflow's human-in-the-loop operators (``airflow.providers.standard.operators.hitl``) show a
Markdown ``body`` in the UI. :func:`review_body` renders the threads a DAG is about to act on as a
table a person can decide from: each invoice, the member's last message, how long it has waited.
Members write the messages, so their text is escaped: it can neither break the table nor add
links, images or HTML to Airflow's UI.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.selection import group_threads, human_duration, invoice_ids_from, to_utc
from airflow_provider_clubcollect.wire import SENDER_CUSTOMER

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

__all__ = [
    "review_body",
    "threads_table",
]

#: Characters of a member's message shown; the rest is cut with an ellipsis.
MESSAGE_CHARS = 160
#: Threads listed at most; the body then says how many more there are.
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
    Render threads awaiting an answer as a Markdown table for a human-in-the-loop ``body``.

    One row per thread, longest waiting first: the invoice, the member's last message (escaped,
    on one line, cut at :data:`MESSAGE_CHARS` characters) and how long the thread has waited for
    an answer.

    .. code-block:: python

        HITLBranchOperator(task_id="review", body="{{ ti.xcom_pull(task_ids='review_body') }}", ...)

    :param Iterable[Mapping] tickets: the company's unanswered tickets (CompanyTicket dicts), such as
        ``FetchCompanyTicketsOperator``'s output.
    :param Iterable | None invoice_ids: only these threads (ID strings or ticket dicts, such as a dry run's
        output of ``EscalateTicketsOperator``); all threads awaiting an answer when ``None``.
    :param datetime | str | None now: the reference time for "waited"; the current UTC time when ``None``.
    :param int max_threads: rows at most; a last line counts the threads left out.
    :return: the Markdown text; a sentence saying nothing waits when no thread does.

    .. seealso:: :doc:`/review`
    """
    wanted = None if invoice_ids is None else set(invoice_ids_from(invoice_ids))
    reference = to_utc(now)
    rows = []
    for thread in group_threads(tickets):
        waiting = thread.awaiting_answer()
        since = thread.unanswered_since
        if since is None or (wanted is not None and thread.invoice_id not in wanted):
            continue
        rows.append((since, thread.invoice_id, str(waiting[-1].get("message", ""))))
    if not rows:
        return "No thread awaits an answer."
    rows.sort()
    lines = [
        f"{len(rows)} thread{' awaits' if len(rows) == 1 else 's await'} an answer:",
        "",
        "| invoice | member's last message | waiting for |",
        "|---|---|---|",
    ]
    for since, invoice_id, message in rows[:max_threads]:
        lines.append(f"| {_escape(invoice_id)} | {_escape(message)} | {_age(reference, since)} |")
    if len(rows) > max_threads:
        lines += ["", f"... and {len(rows) - max_threads} more."]
    return "\n".join(lines)


def threads_table(
    tickets: Iterable[Mapping[str, Any]],
    invoice_ids: Iterable[str],
    *,
    company_id: str | None,
    now: datetime,
    max_threads: int = MAX_THREADS,
) -> str:
    """
    The threads a task chose, as a plain-text table for its log: one line each, columns aligned.

    Columns: the company, the invoice, how long the thread has waited for an answer (or, when it
    waits for none, how long it has been without activity), and the member's last words (on one
    line, cut at :data:`MESSAGE_CHARS` characters, control characters shown as escapes, so that a
    message cannot forge log lines).  An invoice whose tickets the task did not read says so.

    :param Iterable[Mapping] tickets: the tickets the task read (CompanyTicket dicts).
    :param Iterable[str] invoice_ids: the invoices chosen, in the order to list them.
    :param str | None company_id: the company, when the threads are one company's.
    :param datetime now: the reference time for the ages.
    :param int max_threads: rows at most; a last line counts the threads left out.
    :return: the table, header first.

    .. seealso:: :doc:`/review`
    """
    threads = {thread.invoice_id: thread for thread in group_threads(tickets)}
    rows = [("company", "invoice", "waiting", "member's last words")]
    ids = list(invoice_ids)
    for invoice_id in ids[:max_threads]:
        thread = threads.get(invoice_id)
        waited, words = "(not read)", "(not read)"
        if thread is not None:
            since = thread.unanswered_since
            waited = _age(now, since) if since is not None else f"none; idle {_age(now, thread.last_activity)}"
            said = [t for t in thread.tickets if t.get("sender") == SENDER_CUSTOMER]
            words = _log_cell(str(said[-1].get("message", ""))) if said else "(no member message)"
        rows.append((_log_cell(company_id or "-"), _log_cell(invoice_id), waited, words))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3]]) for row in rows
    ]
    if len(ids) > max_threads:
        lines.append(f"... and {len(ids) - max_threads} more.")
    return "\n".join(lines)


def _age(now: datetime, since: datetime) -> str:
    # Whole minutes: seconds only clutter a decision about days.
    return human_duration(timedelta(minutes=max(0, int((now - since).total_seconds() // 60))))


def _bounded(message: str) -> str:
    """A message on one line, cut at :data:`MESSAGE_CHARS` characters with an ellipsis."""
    text = " ".join(message.split())
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 1].rstrip() + "\u2026"
    return text


def _log_cell(text: str) -> str:
    """Text for a log table: bounded, and no character that could start a line or move the cursor."""
    cell = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in _bounded(text))
    return cell or "(empty)"


def _escape(message: str) -> str:
    """A member's message as one table cell of plain text."""
    text = _bounded(message).replace("&", "&amp;").replace("<", "&lt;")
    return _MARKDOWN.sub(r"\\\1", text) or "(empty)"
