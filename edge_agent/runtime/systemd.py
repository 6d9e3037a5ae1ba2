"""The systemd notify protocol, spoken directly over `$NOTIFY_SOCKET` (no library needed).

READY=1 once polling runs, STATUS=... for `systemctl status`, WATCHDOG=1 only while the daemon
makes progress, STOPPING=1 on the way out.  Without `$NOTIFY_SOCKET` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            if address.startswith("@"):
                self.address = "\0" + address[1:]

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def send(self, message: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto(message.encode(), self.address)
            return True
        except OSError as exc:
            log.debug("notify %r failed: %s", message, exc)
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
