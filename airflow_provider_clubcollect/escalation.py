"""The Airflow Variable in which ``EscalateTicketsOperator`` remembers the threads it escalated, per episode."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_clubcollect.exceptions import ClubCollectError, ClubCollectValidationError, shorten, shown
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_clubcollect.wire import parse_iso_datetime

MAX_KEY_LENGTH = 250  # the longest Variable key Airflow stores
_SAFE_KEY = re.compile(r"[\w.\-]+")


def derived_key(*parts: str) -> str:
    """``clubcollect.escalated.<parts>``, unsafe characters replaced and a digest added, at most 250 characters."""
    safe = [
        p if _SAFE_KEY.fullmatch(p) else re.sub(r"[^\w.\-]", "_", p) + "-" + hashlib.sha256(p.encode()).hexdigest()[:8]
        for p in parts
    ]
    key = ".".join(["clubcollect.escalated", *safe])
    if len(key) > MAX_KEY_LENGTH:
        key = key[: MAX_KEY_LENGTH - 17] + "-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return key


def check_key(key: object) -> str:
    """Check a Variable key given by the DAG: letters, digits, ``_``, ``-`` and ``.``, at most 250 characters."""
    if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key) or len(key) > MAX_KEY_LENGTH:
        raise ClubCollectValidationError(
            f"escalation_record must be an Airflow Variable key of letters, digits, '_', '-' and '.', "
            f"at most {MAX_KEY_LENGTH} characters, got {shown(key)}."
        )
    return key


def check_flag(value: object) -> bool:
    """A templated boolean: ``True``/``False``, or ``"true"``/``"false"`` in any case."""
    text = str(value).strip().lower() if isinstance(value, (bool, str)) else None
    if text not in ("true", "false"):
        raise ClubCollectValidationError(f"escalate_again must be True or False, got {shown(value)}.")
    return text == "true"


class NoVariableStore(ClubCollectError):
    """Airflow 3 gives Variables only to a task run: outside one there is nothing to remember in."""


def read_variable(key: str) -> str | None:
    """A Variable's value, ``None`` when there is none; unlike ``Variable.get``, raises when the store cannot answer."""
    if not AIRFLOW_V_3_0_PLUS:
        from airflow.secrets.metastore import MetastoreBackend

        return MetastoreBackend().get_variable(key)
    from airflow.sdk.execution_time import task_runner

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None:
        raise NoVariableStore("There is no Airflow task runner here (execute() called directly), so no Variable.")
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse, GetVariable

    answer = comms.send(GetVariable(key=key))
    if isinstance(answer, ErrorResponse):
        if answer.error == ErrorType.VARIABLE_NOT_FOUND:
            return None
        raise AirflowRuntimeError(answer)
    value = getattr(answer, "value", None)
    return None if value is None else str(value)


def write_variable(key: str, value: str) -> None:
    """Store a Variable and read it back: a write that did not land raises."""
    from airflow.providers.common.compat.sdk import Variable

    description = "ClubCollect: threads EscalateTicketsOperator assigned to support, with their unanswered episode."
    Variable.set(key, value, description=description + " Delete it to let every thread be escalated again.")
    if read_variable(key) != value:
        raise ClubCollectError(f"Airflow did not keep the new value of Variable {key!r}.")


def load(key: str) -> dict[str, dict[str, str]] | None:
    """The record's entries (``{}`` when absent), ``None`` outside a task run; an unreadable record raises."""
    try:
        raw = read_variable(key)
    except NoVariableStore:
        return None
    except Exception as exc:
        raise ClubCollectError(
            f"Could not read the record of escalated threads, Airflow Variable {key!r}: "
            f"{type(exc).__name__}: {shorten(str(exc), 300)}. Nothing was assigned to support: without the "
            "record, threads escalated before would be escalated again. Re-run once Airflow's metadata "
            "database (Airflow 2) or API server (Airflow 3) answers."
        ) from exc
    entries = None
    with contextlib.suppress(ValueError):
        entries = {} if raw is None else json.loads(raw)
    if not isinstance(entries, dict) or any(episode(entry) is None for entry in entries.values()):
        raise ClubCollectError(
            f"Airflow Variable {key!r} is not a record of escalated threads ({shown(raw)}): nothing was "
            "assigned to support. Delete the Variable to start a new record (every thread waiting "
            "long enough is then escalated once more), or give the operator another escalation_record."
        )
    return entries


def save(key: str, loaded: Mapping[str, Any], assigned: Mapping[str, datetime | None], ended: list[str]) -> None:
    """Remember ``assigned``, forget ``ended``, onto the Variable as it is now (others may have saved since)."""
    if not assigned and not ended:
        return
    now = datetime.now(timezone.utc).isoformat()
    stored = load(key) or {}
    # An ended entry goes only if no one changed it since this run read it: a newer one is someone else's.
    updated = {i: e for i, e in stored.items() if i not in assigned and (i not in ended or e != loaded.get(i))}
    updated |= {i: {"unanswered_since": s.isoformat(), "escalated_at": now} for i, s in assigned.items() if s}
    if updated == stored:
        return
    try:
        write_variable(key, json.dumps(updated, sort_keys=True, separators=(",", ":")))
    except Exception as exc:
        remembered = sorted(i for i, since in assigned.items() if since is not None)
        raise ClubCollectError(
            f"Could not write the record of escalated threads, Airflow Variable {key!r}: "
            f"{type(exc).__name__}: {shorten(str(exc), 300)}. Not remembered as escalated: "
            f"{', '.join(remembered) or 'none'}; a later run will escalate "
            f"{'them' if remembered else 'threads'} again unless the record is fixed."
        ) from exc


def episode(entry: Any) -> datetime | None:
    """When the episode an entry escalated began waiting; never ``None`` in a record :func:`load` returned."""
    return parse_iso_datetime(entry.get("unanswered_since")) if isinstance(entry, Mapping) else None
