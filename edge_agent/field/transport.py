"""One RS-485 port, owned exclusively: timing, half-duplex transactions, retries, recovery.

The bus moves bytes and finds frame boundaries with the framer it is given; it knows nothing
about what a frame means.  A transaction writes a request and waits for the first frame the
caller's `accept` predicate takes (this drops the echo some RS-485 adapters return and stray
frames from other masters).  Timeouts are derived from the line speed: the wire time of the
request and of the longest expected reply, plus the meter's response time.

A port that disappears (a USB adapter unplugged) closes the bus; the next transaction tries to
open it again, so the worker recovers by itself when the adapter comes back.
"""

from __future__ import annotations

import os
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from edge_agent.errors import BusError, FrameError, MeterTimeout

Framer = Callable[[bytearray], tuple[Any, int]]

BITS_PER_CHAR = {"N": 10, "E": 11, "O": 11}
PORT_ERRORS = (serial.SerialException, OSError, termios.error)
READ_SLICE = 0.005  # a read returns on the first byte, or after this long without one


@dataclass(frozen=True)
class LineSettings:
    """Line settings of one port; defaults are DL/T 645's 2400 8E1."""

    port: str
    baud: int = 2400
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8
    response_timeout: float = 0.5  # seconds the meter may take before its first byte
    gap: float = 0.02  # quiet time between the end of one transaction and the next request
    retries: int = 2  # further attempts after the first, on silence or a garbled reply

    def char_time(self) -> float:
        bits = BITS_PER_CHAR.get(self.parity.upper(), 11) + (self.stopbits - 1)
        return bits / self.baud

    def wire_time(self, size: int) -> float:
        return size * self.char_time()


def is_pty(path: str) -> bool:
    """A Unix98 pseudo-terminal slave (majors 136-143), such as the simulator's."""
    try:
        return os.major(os.stat(path).st_rdev) in range(136, 144)
    except (OSError, ValueError):
        return False


def open_port(settings: LineSettings) -> serial.SerialBase:
    """Open a device path or a pyserial URL (`socket://host:port` for TCP serial servers).

    Linux ptys carry no parity: they clear PARENB, and asking for it again on a later open
    fails with EINVAL, so a pty is opened without parity (timing still uses the configured
    line settings, so simulated wire time stays honest).
    """
    parity = "N" if is_pty(settings.port) else settings.parity.upper()
    return serial.serial_for_url(
        settings.port,
        baudrate=settings.baud,
        parity=parity,
        stopbits=settings.stopbits,
        bytesize=settings.bytesize,
        timeout=READ_SLICE,
        write_timeout=2,
        exclusive=True if not settings.port.startswith("socket://") else None,
    )


class Bus:
    """Half-duplex access to one port: one transaction at a time."""

    def __init__(
        self,
        settings: LineSettings,
        opener: Callable[[LineSettings], serial.SerialBase] = open_port,
    ) -> None:
        self.settings = settings
        self._opener = opener
        self._port: serial.SerialBase | None = None
        self._lock = threading.Lock()
        self._quiet_since = 0.0
        self.requests = 0
        self.replies = 0
        self.stray = 0  # frames dropped because they did not answer the request in flight
        self.flushed = 0  # stale bytes thrown away before a request

    # -- port lifecycle -------------------------------------------------------------------
    def _ensure_open(self) -> serial.SerialBase:
        if self._port is None:
            try:
                self._port = self._opener(self.settings)
            except (*PORT_ERRORS, ValueError) as exc:
                raise BusError(f"cannot open port {self.settings.port}: {exc}") from exc
        return self._port

    def close(self) -> None:
        with self._lock:
            self._drop_port()

    def _drop_port(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except PORT_ERRORS:
                pass  # the port already failed (unplugged); closing it has nothing to report
            self._port = None

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------
    def transact(
        self,
        request: bytes,
        framer: Framer,
        accept: Callable[[Any], bool] = lambda frame: True,
        reply_size: int = 64,
        expect_reply: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Any:
        """Send `request`, return the first accepted reply frame.

        Raises `MeterTimeout` when nothing arrives, `FrameError` (fault `garbled`) when bytes
        arrived but no valid frame, each after the retries, and `BusError` when the port fails.
        """
        attempts = 1 + (self.settings.retries if retries is None else retries)
        wait = (
            timeout
            if timeout is not None
            else self.settings.response_timeout + self.settings.wire_time(reply_size)
        )
        last_error: Exception | None = None
        with self._lock:
            for _ in range(attempts):
                try:
                    return self._attempt(request, framer, accept, expect_reply, wait)
                except (MeterTimeout, FrameError) as exc:
                    last_error = exc
        assert last_error is not None
        raise last_error

    def _attempt(
        self,
        request: bytes,
        framer: Framer,
        accept: Callable[[Any], bool],
        expect_reply: bool,
        wait: float,
    ) -> Any:
        port = self._ensure_open()
        quiet = self._quiet_since + self.settings.gap - time.monotonic()
        if quiet > 0:
            time.sleep(quiet)
        try:
            stale = port.in_waiting
            if stale:
                self.flushed += stale
            port.reset_input_buffer()  # a late reply to an earlier request is not the answer
            port.write(request)
            port.flush()
        except PORT_ERRORS as exc:
            self._drop_port()
            raise BusError(f"port {self.settings.port} failed while sending: {exc}") from exc
        self.requests += 1
        # The request itself takes wire time before the meter can begin to answer.
        deadline = time.monotonic() + self.settings.wire_time(len(request)) + wait
        if not expect_reply:  # a broadcast: keep the line quiet until it has been sent
            time.sleep(max(0.0, self.settings.wire_time(len(request))))
            self._quiet_since = time.monotonic()
            return None
        buffer = bytearray()
        junk = 0  # bytes that were neither a frame nor a wake-up preamble
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                chunk = port.read(max(1, port.in_waiting))
                if not chunk:
                    continue
                buffer += chunk
                while True:
                    frame, consumed = framer(buffer)
                    if frame is None:
                        junk += _junk(buffer[:consumed])
                        del buffer[:consumed]
                        break
                    del buffer[:consumed]
                    if accept(frame):
                        self.replies += 1
                        self._quiet_since = time.monotonic()
                        return frame
                    # A whole frame that is not the answer (an echo, a stray reply) is not
                    # garbage: silence after it is a timeout, not a garbled reply.
        except PORT_ERRORS as exc:
            self._drop_port()
            raise BusError(f"port {self.settings.port} failed while receiving: {exc}") from exc
        self._quiet_since = time.monotonic()
        junk += _junk(buffer)
        if junk:
            raise FrameError(
                "garbled", f"{junk} bytes arrived on {self.settings.port} but no valid reply"
            )
        raise MeterTimeout(f"no reply on {self.settings.port} within {wait:.2f} s")


def _junk(data: bytes | bytearray) -> int:
    """Bytes that are line noise: everything but the FE wake-up preamble."""
    return len(data) - data.count(0xFE)
