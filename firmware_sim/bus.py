"""A simulated RS-485 bus: meters behind a pseudo-terminal (or a TCP port), real bytes.

The agent opens the pty's slave path (or `socket://127.0.0.1:PORT`) exactly as it would open
`/dev/ttyUSB0`.  With wire timing on, each request and reply takes `bytes x bits-per-char /
baud` seconds, as on a real line, so throughput measured against the simulator is honest.
When several meters match a wildcard address they all answer at once and the line carries a
collision: garbage, as on a real bus.

A meter with a `reply_delay`, or with the `late` fault, answers from a timer while the bus goes
on serving: a late meter's reply arrives after the master gave up, in the middle of whatever the
master does next, exactly the stale frame a real line delivers.  Frames can also be lost:
`request_loss` / `reply_loss` (per bus, and per meter on `SimMeter`) drawn from one RNG seeded
by `seed`, so a lossy run repeats exactly.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
import tty
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from protocols.dlt645.frame import Frame, find_frame

from .clock import SimClock
from .dlt645_meter import SimMeter


class SimBus:
    """Serve a set of simulated meters on one pty or TCP port, in a background thread."""

    def __init__(
        self,
        meters: Iterable[SimMeter],
        baud: int = 2400,
        wire_timing: bool = False,
        bits_per_char: int = 11,
        tcp_port: int | None = None,
        framer: Callable[[bytearray], tuple[Frame | None, int]] = find_frame,
        request_loss: float = 0.0,
        reply_loss: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.meters = list(meters)
        self.baud = baud
        self.wire_timing = wire_timing
        self.bits_per_char = bits_per_char
        self.framer = framer
        self.request_loss = request_loss  # probability a request is lost for every meter
        self.reply_loss = reply_loss  # probability the line loses what the meters answer
        self.rng = random.Random(seed)
        self.requests_seen = 0
        self.requests_lost = 0
        self.replies_lost = 0
        self.late_replies = 0  # replies written after a delay (late fault or reply_delay)
        self._write_lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._stop = threading.Event()
        self._tcp_port = tcp_port
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1
        self.port = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> SimBus:
        if self._tcp_port is not None:
            self._listener = socket.create_server(("127.0.0.1", self._tcp_port))
            self.port = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
            target = self._serve_tcp
        else:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            tty.setraw(self._master)
            self.port = os.ttyname(self._slave)
            target = self._serve_pty
        self._thread = threading.Thread(target=target, name=f"simbus {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for timer in self._timers:
            timer.cancel()
        with self._write_lock:  # no delayed reply may write to a closed (reused) descriptor
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1
        if self._listener:
            self._listener.close()

    def __enter__(self) -> SimBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def meter(self, address: str) -> SimMeter:
        return next(m for m in self.meters if m.address == address)

    # -- time -----------------------------------------------------------------------------
    def clocks(self) -> list[SimClock]:
        """The distinct world clocks of this bus's meters."""
        seen: dict[int, SimClock] = {}
        for meter in self.meters:
            seen.setdefault(id(meter.clock), meter.clock)
        return list(seen.values())

    def advance(self, step: timedelta) -> None:
        """Let `step` of world time pass for every meter here, freezing where due."""
        for clock in self.clocks():
            clock.advance(step)
        self.sync()

    def advance_to(self, moment: datetime) -> None:
        """Move every meter's world clock on to `moment` (each must be behind it)."""
        for clock in self.clocks():
            clock.advance_to(moment)
        self.sync()

    def sync(self) -> None:
        """Bring every meter up to its world time (a total meter first pulls its customers)."""
        for meter in self.meters:
            meter.advance()

    # -- serving --------------------------------------------------------------------------
    def _wire(self, size: int) -> float:
        return size * self.bits_per_char / self.baud if self.wire_timing else 0.0

    def _serve_pty(self) -> None:
        self._serve(lambda: self._master, lambda fd, data: os.write(fd, data),
                    lambda fd, n: os.read(fd, n))

    def _serve_tcp(self) -> None:
        assert self._listener is not None
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._serve(conn.fileno, lambda _fd, data, c=conn: c.sendall(data),
                            lambda _fd, n, c=conn: c.recv(n))

    def _serve(self, fd_of: Callable[[], int], write: Callable[[int, bytes], object],
               read: Callable[[int, int], bytes]) -> None:
        buffer = bytearray()
        first_byte_at = 0.0
        while not self._stop.is_set():
            fd = fd_of()
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = read(fd, 4096)
            except OSError:
                time.sleep(0.05)  # pty with no reader yet: wait for the agent to open it
                continue
            if not chunk:
                return  # TCP peer closed
            if not buffer:
                first_byte_at = time.monotonic()
            buffer += chunk
            while True:
                frame, consumed = self.framer(buffer)
                request_bytes = consumed if frame is not None else 0
                del buffer[:consumed]
                if frame is None:
                    break
                self.requests_seen += 1
                # A meter cannot answer before the whole request has crossed the wire.
                pause = first_byte_at + self._wire(request_bytes) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._answer(frame, fd, write)
                first_byte_at = time.monotonic()

    def _lost(self, probability: float) -> bool:
        return probability > 0 and self.rng.random() < probability

    def _answer(self, request: Frame, fd: int,
                write: Callable[[int, bytes], object]) -> None:
        if request.control.reply:
            return  # our own reply echoed, or another slave: not for us
        if self._lost(self.request_loss):
            self.requests_lost += 1
            return  # noise on the line: no meter heard it
        replies: list[bytes] = []
        for meter in self.meters:
            if not meter.matches(request.address):
                continue
            if meter.fault == "silent":
                continue  # a dead meter neither answers nor acts
            if self._lost(meter.request_loss):
                self.requests_lost += 1
                continue
            reply_frame = meter.handle(request)
            if reply_frame is None:
                continue
            data = self._faulty(meter, reply_frame.encode())
            if self._lost(meter.reply_loss) or self._lost(self.reply_loss):
                self.replies_lost += 1  # the meter acted; its answer never arrives
                continue
            delay = meter.late_by if meter.fault == "late" else meter.reply_delay
            if delay > 0:
                self._later(delay, data, fd, write)
            else:
                replies.append(data)
        if not replies:
            return
        if len(replies) == 1:
            out = replies[0]
        else:  # a collision: the line carries the OR of everyone's bits, which is garbage
            size = max(len(r) for r in replies)
            out = bytes(size)
            for r in replies:
                padded = r.ljust(size, b"\xff")
                out = bytes(a | b for a, b in zip(out, padded, strict=True))
        self._send(out, fd, write)

    @staticmethod
    def _faulty(meter: SimMeter, data: bytes) -> bytes:
        if meter.fault == "corrupt_checksum":
            return data[:-2] + bytes([(data[-2] + 1) & 0xFF]) + data[-1:]
        if meter.fault == "garbage":
            return b"\x00\x68\x13\xff\x68" + data
        return data

    def _later(self, delay: float, data: bytes, fd: int,
               write: Callable[[int, bytes], object]) -> None:
        """Write a reply after `delay` seconds while the bus goes on serving."""
        self._timers = [t for t in self._timers if t.is_alive()]
        timer = threading.Timer(delay, self._send, (data, fd, write, True))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _send(self, out: bytes, fd: int, write: Callable[[int, bytes], object],
              delayed: bool = False) -> None:
        if self.wire_timing:
            time.sleep(self._wire(len(out)))
        with self._write_lock:
            if self._stop.is_set():
                return
            if delayed:
                self.late_replies += 1
            try:
                write(fd, out)
            except OSError:
                pass  # the agent went away mid-reply; a real meter would not notice either


def make_meters(count: int = 1, first: int = 1, addresses: Iterable[str] = (),
                clock: SimClock | None = None, **kwargs: object) -> list[SimMeter]:
    """Meters with the given addresses, or `count` consecutive ones from `first`.

    They share one world clock: `clock`, or a new real-time one.  Other keywords are
    `SimMeter` fields, given to every meter.
    """
    chosen = list(addresses) or [f"{n:012d}" for n in range(first, first + count)]
    shared = clock or SimClock()
    return [SimMeter(address=a, clock=shared, **kwargs)  # type: ignore[arg-type]
            for a in chosen]
