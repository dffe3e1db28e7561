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

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

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
        # Whole minutes: seconds only clutter a decision about days.
        waited = timedelta(minutes=max(0, int((reference - since).total_seconds() // 60)))
        lines.append(f"| {_escape(invoice_id)} | {_escape(message)} | {human_duration(waited)} |")
    if len(rows) > max_threads:
        lines += ["", f"... and {len(rows) - max_threads} more."]
    return "\n".join(lines)


def _escape(message: str) -> str:
    """A member's message as one table cell of plain text."""
    text = " ".join(message.split())
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 1].rstrip() + "\u2026"
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _MARKDOWN.sub(r"\\\1", text) or "(empty)"
