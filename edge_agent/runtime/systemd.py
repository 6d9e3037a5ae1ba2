"""The systemd notify protocol, spoken directly over `$NOTIFY_SOCKET` (no library needed).

READY=1 once polling runs, STATUS=... for `systemctl status`, WATCHDOG=1 only while the daemon
makes progress, STOPPING=1 on the way out.  Without `$NOTIFY_SOCKET` every call is a no-op.

WATCHDOG=1 is sent at half the interval systemd asks for (`$WATCHDOG_USEC`, from the unit's
WatchdogSec=), as sd_watchdog_enabled(3) recommends, however often the daemon calls
`watchdog()`; `$WATCHDOG_PID`, when set, must be this process.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


DEFAULT_WATCHDOG = 30.0  # seconds between pings when systemd does not say (WatchdogSec=60)


def watchdog_interval(environ: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of `$WATCHDOG_USEC`; None when it is set for
    another process (`$WATCHDOG_PID`); the default when systemd does not say."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    usec = env.get("WATCHDOG_USEC", "")
    if usec.isdigit() and int(usec) > 0:
        return int(usec) / 2_000_000
    return DEFAULT_WATCHDOG


class Notifier:
    def __init__(self, address: str | None, interval: float | None = DEFAULT_WATCHDOG) -> None:
        self.address = address
        self.interval = interval  # seconds between WATCHDOG=1 (None: no watchdog for us)
        self._pinged = float("-inf")
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            if address.startswith("@"):
                self.address = "\0" + address[1:]

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"), watchdog_interval())

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

    def watchdog(self) -> bool:
        """WATCHDOG=1 if half the interval has passed since the last one; True if sent."""
        now = time.monotonic()
        if self.interval is None or now - self._pinged < self.interval:
            return False
        if self.send("WATCHDOG=1"):
            self._pinged = now
            return True
        return False

    def stopping(self) -> None:
        self.send("STOPPING=1")
