"""A counting proxy between the benchmark and Postgres: round trips and executed statements, on the wire.

SQLAlchemy's `before_cursor_execute` hook sees the statements the code issues, but not what reaches the
server: BEGIN, COMMIT and the pool's pre-ping are extra round trips, and an `executemany` may send one
execution per row. The proxy forwards bytes unchanged and counts, from the client's side:

- **round trips**: how many times the client starts sending after having received from the server
  (each one is a wait for the server);
- **executions**: frontend `Query` ('Q') and `Execute` ('E') messages (protocol v3), i.e. statements
  the server runs, BEGIN and COMMIT included.

Only used for the counting pass; timings are taken on direct connections.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


@dataclass(frozen=True, slots=True)
class WireCounts:
    round_trips: int
    executions: int

    def __sub__(self, other: WireCounts) -> WireCounts:
        return WireCounts(self.round_trips - other.round_trips, self.executions - other.executions)


class CountingProxy:
    """Listens on 127.0.0.1:`port` and forwards every connection to `upstream` (a TCP address or a
    unix socket path)."""

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self._upstream = upstream
        self._lock = threading.Lock()
        self._round_trips = 0
        self._executions = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="bench-proxy", daemon=True).start()

    def counts(self) -> WireCounts:
        with self._lock:
            return WireCounts(self._round_trips, self._executions)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self._upstream)
            return sock
        sock = socket.create_connection(self._upstream)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = self._connect_upstream()
            state = _Connection()
            threading.Thread(target=self._pump_client, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._pump_server, args=(server, client, state), daemon=True).start()

    def _pump_client(self, src: socket.socket, dst: socket.socket, state: _Connection) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if state.server_spoke:
                        self._round_trips += 1
                        state.server_spoke = False
                    self._executions += state.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)

    def _pump_server(self, src: socket.socket, dst: socket.socket, state: _Connection) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    state.server_spoke = True
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)


class _Connection:
    """Frontend message framing of one connection: untyped startup packets, then typed messages.
    Only headers are kept; message bodies are skipped without buffering them."""

    def __init__(self) -> None:
        self.header = b""
        self.skip = 0  # bytes of the current message body still to come
        self.started = False
        self.server_spoke = True  # the first packet of a connection is a round trip too

    def feed(self, data: bytes) -> int:
        """Consume client bytes; return how many Query/Execute messages they started."""
        executions = 0
        pos = 0
        while pos < len(data):
            if self.skip:
                taken = min(self.skip, len(data) - pos)
                self.skip -= taken
                pos += taken
                continue
            need = 5 if self.started else 8
            taken = min(need - len(self.header), len(data) - pos)
            self.header += data[pos : pos + taken]
            pos += taken
            if len(self.header) < need:
                break
            if self.started:
                kind = self.header[:1]
                (length,) = struct.unpack("!i", self.header[1:5])
                self.skip = length - 4
                if kind in (b"Q", b"E"):
                    executions += 1
            else:
                length, code = struct.unpack("!ii", self.header)
                self.skip = length - 8
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST, _CANCEL_REQUEST):
                    self.started = True
            self.header = b""
        return executions


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
