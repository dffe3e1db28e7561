"""Run the sandbox on uvicorn in a background thread, on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_clubcollect.sandbox.state import BASE_PATH, SandboxState

if TYPE_CHECKING:
    from types import TracebackType

    import uvicorn


class SandboxServer:
    """
    A local ClubCollect on uvicorn, in a background thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with SandboxServer() as sandbox:
            print(sandbox.base_url, sandbox.api_key)

    :param host: the address to listen on; loopback unless you mean to expose it.
    :param port: the port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    :param seed: the seed data to load (see :func:`~.seed.seed_state`); ``None`` starts empty.
    :param api_key: the only API key accepted; a fresh random one when ``None``.
    :param startup_timeout: seconds to wait for the server to listen.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = 0,
        api_key: str | None = None,
        *,
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.seed = seed
        self.startup_timeout = startup_timeout
        self._state = SandboxState(api_key=api_key)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        # Never the API key.
        where = f"{self._url_host()}:{self._port}" if self._port is not None else "not started"
        return f"SandboxServer({where})"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """
        Load the seed data, bind the port and serve in a background thread; return once listening.

        :return: this server, for chaining.
        :raises RuntimeError: when it is already running or does not come up in time.
        :raises OSError: when the port cannot be bound (e.g. already in use).
        """
        import uvicorn

        from airflow_provider_clubcollect.sandbox.app import create_app

        if self._thread is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._state.reset(seed=self.seed)
        # Bind here rather than in uvicorn so that a busy port fails in the caller's thread and
        # port 0 resolves to a real port before anyone asks for base_url.
        self._socket = _bind(self.host, self._requested_port)
        self._port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            create_app(self._state),
            log_level="warning",
            lifespan="off",
            # h11 is the protocol whose RequestResponseCycle the app closes to drop a connection.
            http="h11",
            # Headers of a proxy have no meaning here, and the middleware would only add a layer.
            proxy_headers=False,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"clubcollect-sandbox-{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                error = self._error
                self.stop()
                raise RuntimeError(f"the ClubCollect sandbox did not start on port {self._port}") from error
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        assert self._server is not None
        assert self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as error:  # reported by start(); a thread has nowhere else to put it
            self._error = error

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop serving and wait for the thread to end; safe to call twice or before :meth:`start`.

        :param timeout: seconds to wait for a graceful shutdown before forcing it.
        """
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                # Requests still running (e.g. a scripted delay): cut them short.
                server.force_exit = True
                thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"the ClubCollect sandbox thread on port {self._port} did not stop")
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    # --- where it is ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (the real one when started with port 0)."""
        if self._port is None:
            raise RuntimeError("the ClubCollect sandbox is not started; call start() first")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``, without a path."""
        return f"http://{self._url_host()}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:8765/api``: what the connection's host gets."""
        return f"{self.root_url}{BASE_PATH}"

    @property
    def control_url(self) -> str:
        """The control API's URL, e.g. ``http://127.0.0.1:8765/_sandbox``."""
        from airflow_provider_clubcollect.sandbox.app import CONTROL_PREFIX

        return f"{self.root_url}{CONTROL_PREFIX}"

    @property
    def api_key(self) -> str:
        """The only API key the sandbox accepts."""
        return self._state.api_key

    @property
    def state(self) -> SandboxState:
        """The in-memory ClubCollect, to seed and inspect directly from the same process."""
        return self._state

    def connection_json(self, conn_type: str | None = None) -> str:
        """
        The Airflow connection pointing at this sandbox, in the JSON form of ``AIRFLOW_CONN_*``.

        :param conn_type: the connection type; the provider's (``clubcollect``) when ``None``.
        """
        import json

        from airflow_provider_clubcollect.get_provider_info import CONN_TYPE

        connection: dict[str, Any] = {
            "conn_type": conn_type or CONN_TYPE,
            "password": self.api_key,
            "host": self.base_url,
        }
        return json.dumps(connection)

    def _url_host(self) -> str:
        # An IPv6 literal needs brackets in a URL.
        return f"[{self.host}]" if ":" in self.host else self.host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted sandbox take its port back while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
