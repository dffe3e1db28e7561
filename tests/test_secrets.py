"""The API key stays in the Authorization header, also when the server echoes it back.

The sandbox plays a gateway that quotes the request's headers in its error answers
(``echo_authorization``).  Every text the provider builds from those answers (exceptions, a
bulk failure, the trigger's error event, log lines) and every URL it sends must be free of the
key.  The runs of every example DAG (tests/dags) check the same in task logs, rendered fields,
XCom, serialized triggers and trigger events, by reading everything Airflow wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_clubcollect.exceptions import ClubCollectError
from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
from airflow_provider_clubcollect.operators.tickets import ArchiveTicketsOperator, CreateTicketOperator
from airflow_provider_clubcollect.retry import Backoff
from airflow_provider_clubcollect.sensors.tickets import UnansweredTicketsSensor
from airflow_provider_clubcollect.triggers.tickets import UnansweredTicketsTrigger
from tests.conftest import thread

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.handle import SandboxHandle

CO = "club-1"
TINY = Backoff(initial=0.001, maximum=0.002)
#: Every kind of error answer the gateway sends, each quoting the Authorization header.
ECHOING = [
    {"fault": "error", "status": 500},
    {"fault": "error", "status": 404},
    {"fault": "error", "status": 401},
    {"fault": "html", "status": 502},
    {"fault": "not_json", "status": 200},
    {"fault": "not_json", "status": 503},
    {"fault": "rate_limit", "retry_after": 0},
]


def key_fragments(key: str, size: int = 12) -> list[str]:
    """Every ``size`` characters of the key: a message cut short may still quote part of it."""
    return [key[start : start + size] for start in range(len(key) - size + 1)]


def key_nowhere(sandbox: SandboxHandle, *texts: str) -> None:
    """No part of the key is in ``texts`` nor in any URL the sandbox received."""
    fragments = key_fragments(sandbox.api_key)
    urls = [request["path"] + json.dumps(request["query"]) for request in sandbox.requests()]
    for text in [*texts, *urls]:
        leaked = next((fragment for fragment in fragments if fragment in text), None)
        where = text.find(leaked) if leaked else -1
        assert leaked is None, f"the API key leaked into {text[max(0, where - 300) : where + 100]!r}"
    assert not any(request["api_key_in_query"] for request in sandbox.requests())


def echo_always(sandbox: SandboxHandle, fault: dict[str, Any]) -> None:
    sandbox.set_faults(echo_authorization=True, script=[fault] * 50)


def test_the_gateway_really_echoes_the_key(sandbox: SandboxHandle) -> None:
    """Guards the tests below: the sandbox's error answers quote the key."""
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    echo_always(sandbox, ECHOING[0])

    answer = requests.get(
        f"{sandbox.base_url}/v2/invoices/inv-1/tickets",
        headers={"Authorization": f"ApiKey {sandbox.api_key}"},
        timeout=5,
    )
    assert sandbox.api_key in answer.text


@pytest.mark.parametrize("fault", ECHOING, ids=lambda f: f"{f['fault']}-{f.get('status', 429)}")
def test_errors_from_echoing_answers_never_hold_the_key(
    sandbox: SandboxHandle, fault: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    echo_always(sandbox, fault)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ClubCollectError) as read:
        ClubCollectHook(max_retries=1, backoff=TINY).get_invoice_tickets("inv-1")
    with pytest.raises(ClubCollectError) as sensed:
        UnansweredTicketsSensor(task_id="t", company_id=CO, backoff=TINY).poke({})
    texts = [text for error in (read.value, sensed.value) for text in (str(error), repr(error), str(error.error_code))]
    try:  # a 200 to an action is a success, whatever its body: then there is no failure to read
        ArchiveTicketsOperator(task_id="t", invoice_ids=["inv-1", "inv-2"], backoff=TINY).execute({})
    except ClubCollectError as bulk:
        texts += [str(bulk), repr(bulk)]

    key_nowhere(sandbox, *texts, caplog.text)


def test_trigger_events_and_serialized_triggers_never_hold_the_key(sandbox: SandboxHandle) -> None:
    echo_always(sandbox, {"fault": "error", "status": 500})
    trigger = UnansweredTicketsTrigger(CO, backoff=TINY, timeout_at="2999-01-01T00:00:00+00:00")

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(first())

    assert event["status"] == "error"
    key_nowhere(sandbox, json.dumps(event), json.dumps(trigger.serialize()), repr(trigger))


def test_a_create_whose_answer_echoes_the_key_logs_no_key(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.add_invoice("inv-1", CO, thread(("CUSTOMER", 1)))
    sandbox.set_faults(
        echo_authorization=True,
        script=[{"fault": "apply_then_error", "status": 500, "method": "POST"}, {"fault": "not_json", "status": 502}],
    )
    caplog.set_level(logging.DEBUG)

    ticket = CreateTicketOperator(task_id="t", invoice_id="inv-1", message="Hello", backoff=TINY).execute({})

    assert sandbox.invoice("inv-1")["tickets_created"] == 1
    key_nowhere(sandbox, json.dumps(ticket), caplog.text)


def test_client_settings_give_the_key_out_only_by_name() -> None:
    """Not a tuple: iteration, indexing, JSON and %-formatting cannot reach the key."""
    from tests.conftest import conn_settings

    key = "k3y-" + "s" * 36
    settings = conn_settings("cc", host="http://127.0.0.1:1/api", password=key)

    assert key not in repr(settings)
    assert key not in str(settings)
    assert key not in "%s %r" % (settings, settings)  # noqa: UP031 - how logging formats
    assert key not in f"{settings!s} {settings!r}"
    with pytest.raises(TypeError):
        iter(settings)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        json.dumps(settings)
    assert settings.api_key == key
