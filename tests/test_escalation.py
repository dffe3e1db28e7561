"""The escalation record's store: a Variable read that fails loudly, and a write that is read back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_clubcollect import escalation
from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS

KEY = "clubcollect.escalated.clubcollect_default.club-1"


class FakeSupervisor:
    """The task runner's channel to its supervisor, answering GetVariable as Airflow 3 does."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def send(self, msg: Any) -> Any:
        assert type(msg).__name__ == "GetVariable"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2.11 reads the metadata database directly")
def test_a_store_that_cannot_answer_is_an_error_not_a_missing_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import Variable
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import ErrorResponse

    down = AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 503}))
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", FakeSupervisor(down), raising=False)

    # What Variable.get makes of it from Airflow 3.1 on: no record, so every thread would be escalated again.
    if AIRFLOW_V_3_1_PLUS:
        assert Variable.get(KEY, default=None) is None
    with pytest.raises(ClubCollectError, match=r"Could not read the record .*API_SERVER_ERROR"):
        escalation.load(KEY)

    not_found = ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": KEY})
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", FakeSupervisor(not_found), raising=False)
    assert escalation.load(KEY) == {}

    found = SimpleNamespace(key=KEY, value='{"inv": {"unanswered_since": "2026-05-01T00:00:00+00:00"}}')
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", FakeSupervisor(found), raising=False)
    assert list(escalation.load(KEY) or {}) == ["inv"]


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2.11 has a metadata database in any process")
def test_outside_a_task_run_there_is_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time import task_runner

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", None, raising=False)
    with pytest.raises(ClubCollectError, match="no Airflow task runner here"):
        escalation.read_variable(KEY)
    # execute() called directly (a script, a unit test): escalate, remember nothing, write nothing.
    assert escalation.load(KEY) is None


def test_a_write_that_did_not_land_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import Variable

    stored: dict[str, str] = {}
    monkeypatch.setattr(escalation, "read_variable", stored.get)
    monkeypatch.setattr(Variable, "set", lambda key, value, **kwargs: None)  # answers, keeps nothing

    with pytest.raises(ClubCollectError, match="did not keep the new value"):
        escalation.write_variable(KEY, "{}")

    monkeypatch.setattr(Variable, "set", lambda key, value, **kwargs: stored.__setitem__(key, value))
    escalation.write_variable(KEY, "{}")
    assert stored == {KEY: "{}"}
