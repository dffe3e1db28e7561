"""What the ``clubcollect_sandbox`` pytest fixture gives a test."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_clubcollect.get_provider_info import DEFAULT_CONN_ID
from airflow_provider_clubcollect.sandbox.client import SandboxClient

if TYPE_CHECKING:
    from airflow_provider_clubcollect.sandbox.server import SandboxServer
    from airflow_provider_clubcollect.sandbox.state import SandboxState


class SandboxHandle(SandboxClient):
    """
    A running sandbox as a test sees it: where it is, the connection pointing at it, and the
    control API's calls (:class:`~.client.SandboxClient`: ``reset``, ``add_invoice``,
    ``add_tickets``, ``state``, ``invoice``, ``requests``, ``set_faults``, ...).

    :param SandboxServer server: the running sandbox.
    :param str conn_id: the Airflow connection ID pointed at it.

    .. seealso:: :ref:`sandbox`
    """

    def __init__(self, server: SandboxServer, conn_id: str = DEFAULT_CONN_ID) -> None:
        super().__init__(server.control_url)
        self.server = server
        self.conn_id = conn_id

    def __repr__(self) -> str:
        # Never the API key.
        return f"SandboxHandle(base_url={self.base_url!r}, conn_id={self.conn_id!r})"

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:PORT/api``: the connection's host."""
        return self.server.base_url

    @property
    def api_key(self) -> str:
        """The API key the sandbox accepts: the connection's password."""
        return self.server.api_key

    @property
    def conn_env_var(self) -> str:
        """The environment variable holding the connection, e.g. ``AIRFLOW_CONN_CLUBCOLLECT_DEFAULT``."""
        return f"AIRFLOW_CONN_{self.conn_id.upper()}"

    @property
    def conn_uri_json(self) -> str:
        """The connection in the JSON form Airflow reads from ``AIRFLOW_CONN_*`` variables."""
        return self.server.connection_json()

    @property
    def sandbox_state(self) -> SandboxState:
        """The in-memory state itself, for direct access from the test's process."""
        return self.server.state
