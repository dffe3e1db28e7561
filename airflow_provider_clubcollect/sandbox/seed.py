"""Deterministic seed data: a few clubs, a few hundred invoices and their ticket threads.

The same ``seed`` and ``now`` always give the same companies, invoices, tickets and dates; the
IDs depend on the seed alone (so a test can hard-code them while dates follow the clock).
Threads exist in every status, some invoices have no tickets, and dates spread over the half
year before ``now`` so that age rules ("stale after 30 days") select some threads and not others.
"""

from __future__ import annotations

import functools
import hashlib
import random
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # For the annotation only: the state imports this module to seed itself, never the reverse.
    from airflow_provider_clubcollect.sandbox.state import SandboxState

#: Human names for the companies, kept for printing only: the API never returns them.
COMPANY_NAMES: Final = (
    "Hockeyclub De Kieviten",
    "Voetbalvereniging Oranje Boys",
    "Muziekschool De Notenbalk",
    "Zwemvereniging De Dolfijn",
    "Tennisclub Het Smashpunt",
    "Korfbalvereniging Sparta",
)
#: How far back the oldest thread may start.
SPREAD: Final = timedelta(days=182)

_CUSTOMER_MESSAGES: Final = (
    "Ik wil niet betalen",
    "I don't want to pay",
    "Kan ik in termijnen betalen?",
    "Can I pay in instalments?",
    "Ik heb al betaald, zie bijlage",
    "I already paid last week",
    "Mijn zoon is gestopt met de club, waarom krijg ik nog een factuur?",
    "The amount on this invoice is wrong",
    "Waarom is de contributie dit jaar hoger?",
    "I never received the first reminder",
    "Graag uitstel tot het einde van de maand",
    "Is the discount for siblings included?",
)
_COMPANY_MESSAGES: Final = (
    "Graag betalen vóór de 30e",
    "Please pay before the 30th",
    "We hebben uw betaling ontvangen, dank u wel",
    "Termijnen zijn mogelijk: drie maanden, zonder extra kosten",
    "Instalments are possible, we will send a new link",
    "De contributie is verhoogd door de nieuwe velden",
    "We have corrected the amount, see the new invoice",
    "Uw opzegging is verwerkt per 1 juli",
    "The sibling discount has been applied",
    "Wij kijken ernaar en komen er deze week op terug",
)


def seed_id(seed: int, kind: str, *parts: int) -> str:
    """
    A deterministic ID shaped like ClubCollect's: the SHA-1 hex of ``"{seed}:{kind}:{parts...}"``.

    :param seed: the seed.
    :param kind: what the ID is for (``company``, ``invoice`` or ``ticket``).
    :param parts: counters that make it unique within the kind.
    """
    text = ":".join([str(seed), kind, *(str(part) for part in parts)])
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def seed_state(state: SandboxState, seed: int, now: datetime | None = None) -> None:
    """
    Add the seed data for ``seed`` to ``state`` (normally right after a reset).

    :param state: the sandbox to fill.
    :param seed: chooses the data; the same seed and ``now`` give the same data.
    :param now: the time the dates are relative to (all dates are before it); the current UTC
        time when ``None``.
    """
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    for company_id, name, invoices in _plan(seed):
        state.add_company(company_id, name)
        for invoice_id, tickets, archived in invoices:
            thread = [
                {"message": message, "sender": sender, "date": now - timedelta(seconds=ago), "ticket_id": ticket_id}
                for message, sender, ago, ticket_id in tickets
            ]
            state.add_invoice(invoice_id, company_id, thread, archived=archived)


_Ticket = tuple[str, str, int, str]  # message, sender, seconds before now, ticket_id


@functools.lru_cache(maxsize=4)
def _plan(seed: int) -> list[tuple[str, str, list[tuple[str, list[_Ticket], bool]]]]:
    """
    The seed's companies and threads, with dates as seconds before "now".

    Cached (the pytest fixture reseeds before every test); the dates depend on "now" only by
    subtraction, so one plan serves every "now".
    """
    rng = random.Random(seed)
    companies = []
    invoice_number = 0
    for company_index in range(rng.randint(3, 5)):
        invoices = []
        for _ in range(rng.randint(60, 110)):
            tickets, archived = _thread(rng, seed, invoice_number)
            invoices.append((seed_id(seed, "invoice", invoice_number), tickets, archived))
            invoice_number += 1
        name = COMPANY_NAMES[(seed + company_index) % len(COMPANY_NAMES)]
        companies.append((seed_id(seed, "company", company_index), name, invoices))
    return companies


def _thread(rng: random.Random, seed: int, invoice_number: int) -> tuple[list[_Ticket], bool]:
    """One invoice's tickets and whether the thread is archived."""
    outcome = rng.random()
    if outcome < 0.08:
        return [], False
    archived = outcome >= 0.80
    count = rng.randint(1, 6)
    # Most threads end the way their outcome needs, but the senders in between vary: members
    # sometimes write twice before the club answers, clubs sometimes follow themselves up.
    last = "CUSTOMER" if outcome < 0.44 else "COMPANY"
    if archived:
        last = rng.choice(("CUSTOMER", "COMPANY"))
    if last == "COMPANY" and count == 1:
        count = 2  # a club rarely writes first in a ticket thread
    senders = ["CUSTOMER"]
    for _ in range(count - 2):
        previous = senders[-1]
        other = "COMPANY" if previous == "CUSTOMER" else "CUSTOMER"
        senders.append(previous if rng.random() < 0.25 else other)
    if count > 1:
        senders.append(last)
    # The first ticket anywhere in the last half year; the rest follow hours to days apart,
    # never later than a minute before now.
    ago = rng.randint(3600, int(SPREAD.total_seconds()))
    tickets = []
    for index, sender in enumerate(senders):
        if index:
            ago = max(ago - rng.randint(600, 6 * 24 * 3600), 60)
        messages = _CUSTOMER_MESSAGES if sender == "CUSTOMER" else _COMPANY_MESSAGES
        tickets.append((rng.choice(messages), sender, ago, seed_id(seed, "ticket", invoice_number, index)))
    return tickets, archived
