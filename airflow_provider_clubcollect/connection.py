"""From an Airflow connection to the checked settings every request uses, sync or async."""

from __future__ import annotations

import contextlib
import difflib
import html
import ipaddress
import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_provider_clubcollect import __version__
from airflow_provider_clubcollect.budget import check_budget_url, shown_budget_url
from airflow_provider_clubcollect.exceptions import ClubCollectValidationError, shorten, shown
from airflow_provider_clubcollect.get_provider_info import (
    CONN_TYPE,
    DEFAULT_BASE_URL,
    DISTRIBUTION_NAME,
    get_provider_info,
)
from airflow_provider_clubcollect.wire import BASE_PATH, check_int, check_number

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

#: The connection form: the one source of the extras, their defaults and bounds, and of the UI's fields.
CONN_FORM: dict[str, Any] = get_provider_info()["connection-types"][0]
_FIELDS = {name: field["schema"] for name, field in CONN_FORM["conn-fields"].items()}


@dataclass(repr=False, eq=False, slots=True)
class ClientSettings:
    """Everything a transport needs to talk to ClubCollect; its repr, unlike a tuple's, never shows the key."""

    conn_id: str
    base_url: str
    api_key: str
    timeout: float = _FIELDS["timeout"]["default"]
    max_retries: int = _FIELDS["max_retries"]["default"]
    max_requests_per_second: float | None = None
    budget_url: str | None = None

    def __repr__(self) -> str:
        shown = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "api_key"}
        shown["budget_url"] = shown_budget_url(self.budget_url)
        return f"ClientSettings({', '.join(f'{k}={v!r}' for k, v in shown.items() if v is not None)})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """What to mask in logs: the API key, and the budget URL's Redis password when it has one."""
        return tuple(filter(None, (self.api_key, urlsplit(self.budget_url or "").password)))

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a connection: at most 10, since a slow connect means an unreachable host."""
        return min(self.timeout, 10.0)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"ApiKey {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"{DISTRIBUTION_NAME}/{__version__}",
        }

    def scrub(self, text: str, secrets: tuple[str, ...] | None = None) -> str:
        """``text`` with the secrets replaced by ``***``, as sent or as a server may echo them (JSON, HTML, URL)."""
        forms = set()
        for secret in self.secrets if secrets is None else secrets:
            escaped = json.dumps(secret)[1:-1]
            forms |= {secret, escaped, escaped.replace("/", "\\/"), html.escape(secret), quote(secret)}
        # Longest first, so that no secret is cut up by another inside it.
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
        return text

    def scrub_body(self, body: bytes) -> bytes:
        # Only the key: ClubCollect never saw the Redis password, and a ticket may hold the same word.
        return self.scrub(body.decode("latin-1"), (self.api_key,)).encode("latin-1")  # latin-1: bytes as they were


def settings_from_airflow_connection(
    conn: Connection, *, timeout: float | None = None, max_retries: int | None = None
) -> ClientSettings:
    """Read and check an Airflow ``Connection`` of type ``clubcollect``; the arguments win over its extras."""
    conn_id, password, where = conn.conn_id, (conn.password or "").strip(), f"Connection {conn.conn_id!r}"
    if conn.conn_type and conn.conn_type != CONN_TYPE:
        raise ClubCollectValidationError(
            f"{where} has type {shown(conn.conn_type)}: set its type to {CONN_TYPE!r} "
            "(ClubCollect in the UI's list), so that Airflow shows its fields and the hook reads them as meant."
        )
    if not password or any(not 0x21 <= ord(char) <= 0x7E for char in password):  # never quote the key
        raise ClubCollectValidationError(
            f"{where} has no API key an HTTP header can carry: set its password to the ClubCollect partner "
            "API key, without whitespace, control or non-ASCII characters."
        )
    extra: Any = conn.extra_dejson
    if not isinstance(extra, dict):
        raise ClubCollectValidationError(
            f'{where}: extra must be a JSON object such as {{"timeout": 30, "max_retries": 5}}, '
            f"got {type(extra).__name__} {shown(extra)}."
        )
    # Airflow's form in older releases wrote extras as "extra__clubcollect__<name>".
    extra = {str(key).removeprefix(f"extra__{CONN_TYPE}__"): value for key, value in extra.items()}
    unknown = sorted(set(extra) - set(_FIELDS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _FIELDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise ClubCollectValidationError(
            f"{where}: unknown extra {shown(unknown[0])}{hint} "
            f"A clubcollect connection's extras are {', '.join(_FIELDS)}."
        )
    given = {**extra, **{k: v for k, v in (("timeout", timeout), ("max_retries", max_retries)) if v is not None}}
    numbers = {name: _extra(given.get(name), name, where) for name in _FIELDS if name != "budget_url"}
    return ClientSettings(
        conn_id=conn_id,
        base_url=resolve_base_url(conn.host, port=conn.port, conn_id=conn_id),
        api_key=password,
        budget_url=check_budget_url(extra.get("budget_url"), conn_id, numbers["max_requests_per_second"]),
        **numbers,
    )


def _extra(value: Any, name: str, where: str) -> Any:
    schema = _FIELDS[name]
    if isinstance(value, str):
        value = value.strip() or None
        for kind in (int, float):  # text typed into a form: a number when it reads as one
            with contextlib.suppress(ValueError, TypeError):
                value = kind(value)
                break
    if value is None:
        return schema["default"]
    if "maximum" in schema:
        return check_int(value, f"{where}: extra {name!r}", low=schema["minimum"], high=schema["maximum"])
    return check_number(value, f"{where}: extra {name!r}")


def resolve_base_url(host: str | None, *, port: int | None = None, conn_id: str = "") -> str:
    raw = (host or "").strip()
    if not raw:
        return DEFAULT_BASE_URL
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else f"https://{raw}")
    # Name the host without its query or credentials: a misplaced key may sit there.
    named = shorten(repr(f"{parts.scheme}://{parts.hostname or ''}{parts.path}"))
    where = f"Connection {conn_id!r} host {named}" if conn_id else f"Host {named}"
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "the scheme must be https (or http on loopback)."
    elif not parts.hostname or any(char.isspace() or ord(char) < 32 for char in parts.netloc):
        problem = "it needs a host name, without whitespace or control characters."
    elif parts.query or parts.fragment or parts.username or parts.password:
        problem = "a base URL must not carry a query, fragment or credentials; put the key in the password."
    elif parts.scheme == "http" and not is_loopback(parts.hostname):
        problem = (
            "plain http:// would send the API key in clear text; it is allowed only for a "
            "loopback host (127.0.0.0/8, ::1, localhost). Use https://."
        )
    if problem:
        raise ClubCollectValidationError(f"{where}: {problem}")
    try:
        url_port: object = parts.port
    except ValueError:  # not a number, or past 65535: refused below as written
        url_port = parts.netloc.rpartition(":")[2]
    for candidate in (url_port, None if has_scheme else port):
        if candidate is not None:
            check_int(candidate, f"{where}: the port", high=65535)
    netloc = parts.netloc if has_scheme or not port or url_port is not None else f"{parts.netloc}:{port}"
    path = parts.path.rstrip("/") if (has_scheme or parts.path.strip("/")) else BASE_PATH
    return f"{parts.scheme}://{netloc}{path}"


def is_loopback(hostname: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(hostname).is_loopback
    return hostname.lower() == "localhost"


def missing_connection(conn_id: str) -> ClubCollectValidationError:
    example = json.dumps({"conn_type": CONN_TYPE, "password": "<API key>"})
    return ClubCollectValidationError(
        f"Connection {conn_id!r} is not defined. Create it in the Airflow UI (Admin > Connections, connection "
        f"type ClubCollect, the API key as password) or set the environment variable "
        f"AIRFLOW_CONN_{conn_id.upper()}='{example}' where the tasks and the triggerer run."
    )
