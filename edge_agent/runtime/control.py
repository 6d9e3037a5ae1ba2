"""Local control: technicians' `read`, `relay` and `scan` go through the running daemon.

A Unix stream socket (mode 0660, group from `[agent] control_group`) takes one JSON request
per line and answers one JSON line.  The daemon owns its serial ports, so a technician's
request is queued on the bus worker like any other job (relay orders ahead of polling) instead
of fighting the daemon for the port.  The caller is identified by the socket's peer
credentials, and every relay action is recorded as an event naming who did it.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from edge_agent.errors import EXPECTED_ERRORS, NotOwned, UsageError, kind_of

log = logging.getLogger(__name__)
WAIT = 300.0


def peer_user(conn: socket.socket) -> str:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


class ControlServer:
    def __init__(self, agent: Any, path: str, group: str | None = None) -> None:
        self.agent = agent
        self.path = Path(path)
        self.group = group
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()  # a stale socket from a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
                if self.path.stat().st_gid != gid:  # under the unit it is already the
                    os.chown(self.path, -1, gid)    # service's group: no chown at all
            except (KeyError, PermissionError) as exc:
                log.warning("control socket: cannot give it to group %s: %s", self.group, exc)
        sock.listen(8)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._sock:
            self._sock.close()
        if self.path.exists():
            self.path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            user = peer_user(conn)
            reader = conn.makefile("rb")
            line = reader.readline(1 << 20)
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                answer = {"ok": True, "result": self.handle(request, user)}
            except (ValueError, KeyError) as exc:
                answer = {"ok": False, "kind": UsageError.kind, "error": f"bad request: {exc}"}
            except (*EXPECTED_ERRORS, TimeoutError) as exc:
                answer = {"ok": False, "kind": kind_of(exc), "error": str(exc) or "timed out"}
            conn.sendall(json.dumps(answer, default=str).encode() + b"\n")

    def _worker_for_port(self, port: str) -> Any:
        for bus in self.agent.config.buses:
            if bus.port == port:
                return self.agent.workers[bus.name]
        raise NotOwned(f"the daemon does not own {port}")

    def handle(self, request: dict[str, Any], user: str) -> Any:
        op = request["op"]
        if op == "ping":
            return {"gateway": self.agent.config.gateway_id, "user": user}
        if op == "commission":
            from edge_agent.runtime.operations import commission_through_agent

            return commission_through_agent(self.agent, request, f"technician:{user}")
        worker = self._worker_for_port(request["port"])
        if op == "read":
            from edge_agent.runtime.operations import technician_read

            return technician_read(worker, request["address"], request["quantities"], WAIT)
        if op == "scan":
            from edge_agent.runtime.operations import scan

            return scan(worker, request.get("timeout"), WAIT)
        if op == "relay":
            from edge_agent.runtime.operations import technician_relay

            return technician_relay(self.agent, worker, request["address"], request["action"],
                                    f"technician:{user}")
        raise UsageError(f"unknown operation {op!r}")


def call(path: str, request: dict[str, Any], timeout: float = WAIT) -> dict[str, Any] | None:
    """Ask the running daemon; None when no daemon listens there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = sock.makefile("rb").readline()
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except PermissionError as exc:
        raise UsageError(f"control socket {path}: {exc.strerror} (join the service group)") \
            from None
    if not data:
        return None
    return json.loads(data)
