"""Escalate once per unanswered episode: what ``EscalateTicketsOperator`` remembers across runs.

Assigning a thread to ClubCollect support may reach a person each time, so a thread is escalated
once per *episode*: the stretch in which it waits for an answer, named by its *unanswered since*
(the date of the oldest CUSTOMER ticket after the newest COMPANY ticket).  When the company
answers and the member writes again, the thread waits anew, from a new date: a new episode.

The operator remembers what it escalated in an Airflow Variable (the store every supported Airflow
offers tasks across runs), one per escalation target, whose value is JSON::

    {"<invoice_id>": {"unanswered_since": "<ISO 8601>", "escalated_at": "<ISO 8601>"}, ...}

Reading goes through the same channel ``Variable.get`` uses, but lets an error out: ``Variable.get``
logs a store that could not answer and then reports the Variable as missing, which here would mean
"nothing escalated yet" and escalate every thread again.  Writing goes through ``Variable.set`` and
is read back, so a write that did not land fails loudly too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError, shorten, shown
from airflow_provider_clubcollect.selection import Thread, ticket_date, ticket_dicts
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_clubcollect.wire import parse_iso_datetime

if TYPE_CHECKING:
    from collections.abc import Iterable

#: The start of every key the operator derives: ``clubcollect.escalated.<conn_id>.<company_id>``.
KEY_PREFIX = "clubcollect.escalated"
#: The longest Variable key Airflow stores.
MAX_KEY_LENGTH = 250
_SAFE_KEY = re.compile(r"[\w.\-]+")
_DESCRIPTION = (
    "ClubCollect: threads EscalateTicketsOperator assigned to support, by invoice, with the start of the "
    "unanswered episode each was escalated for. Delete this Variable to let every thread be escalated again."
)


def derived_key(*parts: str) -> str:
    """
    The record's key for an escalation target: :data:`KEY_PREFIX` and ``parts``, joined by dots.

    A part with characters outside letters, digits, ``_``, ``-`` and ``.`` (which a Variable's key
    cannot carry into the Airflow 3 API's URL) is written with ``_`` for them and a digest of the
    original, so that two IDs never share a key; a key over 250 characters ends in a digest.

    :param parts: the connection, then the company, or the DAG, task and map index.
    """
    safe = []
    for part in parts:
        if not _SAFE_KEY.fullmatch(part):
            part = re.sub(r"[^\w.\-]", "_", part) + "-" + hashlib.sha256(part.encode()).hexdigest()[:8]
        safe.append(part)
    key = ".".join([KEY_PREFIX, *safe])
    if len(key) > MAX_KEY_LENGTH:
        key = key[: MAX_KEY_LENGTH - 17] + "-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return key


def check_key(key: object, name: str = "escalation_record") -> str:
    """
    Check a Variable key given by the DAG.

    :param key: letters, digits, ``_``, ``-`` and ``.``, at most 250 characters.
    :param name: the parameter's name, for the error.
    :raises ClubCollectValidationError: otherwise.
    """
    if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key) or len(key) > MAX_KEY_LENGTH:
        raise ClubCollectValidationError(
            f"{name} must be an Airflow Variable key of letters, digits, '_', '-' and '.', "
            f"at most {MAX_KEY_LENGTH} characters, got {shown(key)}."
        )
    return key


def check_flag(value: object, name: str = "escalate_again") -> bool:
    """
    A templated boolean: ``True``/``False``, or the strings a template renders them to.

    :param value: a bool, or ``"true"``/``"false"`` in any case.
    :param name: the parameter's name, for the error.
    :raises ClubCollectValidationError: otherwise.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ClubCollectValidationError(f"{name} must be True or False (or 'true'/'false'), got {shown(value)}.")


class NoVariableStore(ClubCollectError):
    """Airflow 3 gives Variables only to a task run: outside one there is nothing to remember in."""


def read_variable(key: str) -> str | None:
    """
    A Variable's value as stored, ``None`` when there is none; raises when the store cannot answer.

    :param key: the Variable's key.
    """
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time import task_runner

        comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
        if comms is None:
            raise NoVariableStore(
                "There is no Airflow task runner here (execute() called directly), so no Variable can be read."
            )
        from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
        from airflow.sdk.execution_time.comms import ErrorResponse, GetVariable

        answer = comms.send(GetVariable(key=key))
        if isinstance(answer, ErrorResponse):
            if answer.error == ErrorType.VARIABLE_NOT_FOUND:
                return None
            raise AirflowRuntimeError(answer)
        value = getattr(answer, "value", None)
        return None if value is None else str(value)
    from airflow.secrets.metastore import MetastoreBackend

    return MetastoreBackend().get_variable(key)


def write_variable(key: str, value: str) -> None:
    """
    Store a Variable, and read it back: a write that did not land raises.

    :param key: the Variable's key.
    :param value: its new value.
    """
    from airflow.providers.common.compat.sdk import Variable

    Variable.set(key, value, description=_DESCRIPTION)
    if read_variable(key) != value:
        raise ClubCollectError(f"Airflow did not keep the new value of Variable {key!r}.")


class Episode:
    """
    A remembered escalation: the episode a thread was escalated for, and when.

    :param unanswered_since: the start of the episode.
    :param escalated_at: when it was assigned to support.
    """

    def __init__(self, unanswered_since: datetime, escalated_at: datetime | None) -> None:
        self.unanswered_since = unanswered_since
        self.escalated_at = escalated_at

    def as_json(self) -> dict[str, str]:
        """The entry as stored in the Variable."""
        entry = {"unanswered_since": self.unanswered_since.isoformat()}
        if self.escalated_at is not None:
            entry["escalated_at"] = self.escalated_at.isoformat()
        return entry


class EscalationRecord:
    """
    The threads escalated for their current episode, kept in one Airflow Variable.

    :param key: the Variable's key.
    :param entries: invoice ID to its entry as stored.
    """

    def __init__(self, key: str, entries: dict[str, dict[str, str]], *, kept: bool = True) -> None:
        self.key = key
        self.entries = entries
        #: False outside an Airflow task run on Airflow 3: nothing is remembered, nothing is written.
        self.kept = kept

    @classmethod
    def load(cls, key: str) -> EscalationRecord:
        """
        Read the record; an absent Variable is an empty record.

        :param key: the Variable's key.
        :raises ClubCollectError: when the store cannot be read or holds something else than a record:
            without it, threads escalated before would be escalated again.
        """
        try:
            return cls(key, _read(key))
        except NoVariableStore:
            return cls(key, {}, kept=False)

    def __len__(self) -> int:
        return len(self.entries)

    def escalated(self, invoice_id: str, unanswered_since: datetime | None) -> Episode | None:
        """
        The remembered escalation of this thread for this episode, if it was escalated for it.

        :param invoice_id: the thread.
        :param unanswered_since: the start of its current episode; ``None`` (not waiting) never matches.
        """
        episode = _episode(self.entries.get(invoice_id))
        if episode is None or unanswered_since is None or episode.unanswered_since != unanswered_since:
            return None
        return episode

    def ended(self, current: Mapping[str, datetime | None], *, complete: bool) -> list[str]:
        """
        The remembered threads whose episode is over: answered since, or waiting anew.

        :param current: invoice ID to the start of its current episode (``None``: not waiting).
        :param complete: whether ``current`` holds every thread still waiting (a company's unanswered
            list); then a remembered thread missing from it is over too.
        """
        return sorted(
            invoice_id
            for invoice_id in self.entries
            if (invoice_id in current and self.escalated(invoice_id, current[invoice_id]) is None)
            or (complete and invoice_id not in current)
        )

    def save(self, assigned: Mapping[str, datetime | None], ended: Iterable[str]) -> None:
        """
        Remember ``assigned`` and forget ``ended``, onto the record as it is now.

        The Variable is read again first, and only these changes are applied to it, so that another
        task that saved in the meantime (a mapped sibling, another DAG on the same company) keeps
        its entries.  Nothing is written when nothing changes.

        :param assigned: the threads just assigned to support, with the start of their episode
            (``None``: not waiting, so nothing to remember, and any old entry goes).
        :param ended: threads whose remembered episode is over.
        :raises ClubCollectError: when the record cannot be read or written.
        """
        ended = list(ended)
        if not self.kept or (not assigned and not ended):
            return
        now = datetime.now(timezone.utc)
        stored = _read(self.key)
        updated = dict(stored)
        for invoice_id in ended:
            # Only an entry no one changed since this run read it: a newer one is someone else's.
            if updated.get(invoice_id) == self.entries.get(invoice_id):
                updated.pop(invoice_id, None)
        for invoice_id, since in assigned.items():
            if since is None:
                updated.pop(invoice_id, None)
            else:
                updated[invoice_id] = Episode(since, now).as_json()
        if updated == stored:
            return
        try:
            write_variable(self.key, json.dumps(updated, sort_keys=True, separators=(",", ":")))
        except Exception as exc:
            remembered = sorted(i for i, since in assigned.items() if since is not None)
            raise ClubCollectError(
                f"Could not write the record of escalated threads, Airflow Variable {self.key!r}: "
                f"{type(exc).__name__}: {shorten(str(exc), 300)}. Not remembered as escalated: "
                f"{', '.join(remembered) or 'none'}; a later run will escalate "
                f"{'them' if remembered else 'threads'} again unless the record is fixed."
            ) from exc
        self.entries = updated


def _read(key: str) -> dict[str, dict[str, str]]:
    try:
        raw = read_variable(key)
    except ClubCollectError:
        raise
    except Exception as exc:
        raise ClubCollectError(
            f"Could not read the record of escalated threads, Airflow Variable {key!r}: "
            f"{type(exc).__name__}: {shorten(str(exc), 300)}. Nothing was assigned to support: without the "
            "record, threads escalated before would be escalated again. Re-run once Airflow's metadata "
            "database (Airflow 2) or API server (Airflow 3) answers."
        ) from exc
    if raw is None:
        return {}
    try:
        entries = json.loads(raw)
    except ValueError:
        entries = None
    if not isinstance(entries, dict) or not all(
        isinstance(entry, dict) and _episode(entry) is not None for entry in entries.values()
    ):
        raise ClubCollectError(
            f"Airflow Variable {key!r} is not a record of escalated threads ({shown(raw)}): nothing was "
            "assigned to support. Delete the Variable to start a new record (every thread waiting "
            "long enough is then escalated once more), or give the operator another escalation_record."
        )
    return entries


def _episode(entry: Any) -> Episode | None:
    if not isinstance(entry, Mapping):
        return None
    since = parse_iso_datetime(entry.get("unanswered_since"))
    if since is None:
        return None
    return Episode(since, parse_iso_datetime(entry.get("escalated_at")))


def given_episodes(value: Any, invoice_ids: Iterable[str]) -> tuple[dict[str, datetime | None], list[str]]:
    """
    The episodes of threads given as ticket dicts, and the invoices given without tickets.

    A thread given with tickets (dicts with ``invoice_id``, ``sender`` and ``date``, such as
    ``FetchCompanyTicketsOperator``'s or the sensor's output) is judged from them; an invoice given
    as a bare ID (or a dict without ``sender``/``date``) has to be read.

    :param value: the rendered ``invoice_ids``: strings and dicts, lists of them flattened one level.
    :param invoice_ids: the IDs parsed from it.
    :return: invoice ID to the start of its current episode (``None``: not waiting), and the IDs to read.
    """
    by_invoice: dict[str, list[dict[str, Any]]] = {}
    for ticket in ticket_dicts(value):
        by_invoice.setdefault(str(ticket["invoice_id"]), []).append(dict(ticket))
    episodes = {
        invoice_id: thread_episode(invoice_id, by_invoice[invoice_id])
        for invoice_id in invoice_ids
        if invoice_id in by_invoice
    }
    return episodes, [invoice_id for invoice_id in invoice_ids if invoice_id not in by_invoice]


def thread_episode(invoice_id: str, tickets: Iterable[Mapping[str, Any]]) -> datetime | None:
    """
    The start of a thread's current unanswered episode, ``None`` when it is not waiting.

    :param invoice_id: the invoice.
    :param tickets: its tickets, in any order.
    """
    return Thread(invoice_id, tuple(dict(t) for t in sorted(tickets, key=ticket_date))).unanswered_since
