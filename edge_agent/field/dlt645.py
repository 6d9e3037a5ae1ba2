"""DL/T 645-2007 operations on a bus: read quantities, control relays, discover meters.

This is the one place where a DL/T 645 request meets its reply: it builds the request with
`protocols.dlt645.messages`, hands the bytes to the `Bus`, and checks the reply with
`check_reply`.  Callers get decoded values or a specific error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

from edge_agent.clock import Clock
from edge_agent.errors import (
    EXPECTED_ERRORS,
    FrameError,
    MeterAbnormalReply,
    MeterError,
    MeterTimeout,
    RelayUnsupported,
)
from edge_agent.field.transport import Bus
from edge_agent.prepaid.records import Poll, RegisterReading
from edge_agent.prepaid.vocabulary import MeterAction, parse_action
from protocols.dlt645 import catalogue, messages, v1997
from protocols.dlt645.frame import Frame, find_frame

log = logging.getLogger(__name__)

# 2007 read / read-follow-up, 1997 read / read-follow-up: their replies repeat the DI
READ_FUNCTIONS = frozenset({messages.Function.READ, messages.Function.READ_FOLLOW_UP,
                            v1997.Function1997.READ, v1997.Function1997.READ_FOLLOW_UP})


@dataclass(frozen=True)
class Reading:
    """One decoded value read from a meter."""

    meter: str
    name: str
    di: str
    value: object
    unit: str


RELAY_CONFIRM = {
    # action -> (status-word-3 mask, expected bits) that prove the meter carried it out
    MeterAction.TRIP: (catalogue.STATUS3_RELAY_OPEN, catalogue.STATUS3_RELAY_OPEN),
    MeterAction.DIRECT_CLOSE: (catalogue.STATUS3_RELAY_OPEN, 0),
    MeterAction.CLOSE_ALLOWED: (catalogue.STATUS3_RELAY_CMD_OPEN, 0),
    MeterAction.ALARM: (catalogue.STATUS3_PRETRIP_ALARM, catalogue.STATUS3_PRETRIP_ALARM),
    MeterAction.ALARM_RELEASE: (catalogue.STATUS3_PRETRIP_ALARM, 0),
    MeterAction.KEEP_POWER: (catalogue.STATUS3_KEEP_POWER, catalogue.STATUS3_KEEP_POWER),
    MeterAction.KEEP_POWER_RELEASE: (catalogue.STATUS3_KEEP_POWER, 0),
}


def address_matches(wanted: str, address: str) -> bool:
    """A reply's address answers a request to `wanted` (whose `AA` bytes are wildcards).

    A reply never carries a wildcard or broadcast address itself: a meter that echoes one
    has not said who it is.
    """
    if "A" in address or address == messages.BROADCAST:
        return False
    if wanted == messages.BROADCAST:
        return True
    return all(w == "AA" or w == a for w, a in
               zip(_pairs(wanted), _pairs(address), strict=True))


def _pairs(address: str) -> list[str]:
    return [address[i:i + 2] for i in range(0, len(address), 2)]


def answers(request: Frame, reply: Frame, di_size: int = 4) -> bool:
    """`reply` is the answer to `request`: a reply, same function, from the addressed meter,
    and for a read (not refused) the same data identifier."""
    if not reply.control.reply or reply.control.function != request.control.function:
        return False
    if len(reply.address) != len(request.address) or not address_matches(
            request.address, reply.address):
        return False
    if request.control.function in READ_FUNCTIONS and not reply.control.abnormal:
        return reply.data[:di_size] == request.data[:di_size]
    return True


def meter_time(clock: Clock | None = None, tz: tzinfo | None = None
               ) -> Callable[[], datetime]:
    """Meter (local, naive) time from the injected `Clock`: a relay command's validity is
    written in the meter's own local time.  `tz` None: the system's zone."""
    source = clock or Clock()
    return lambda: source.now().astimezone(tz).replace(tzinfo=None)


def raw_di(key: str | int) -> int | None:
    """A DL/T 645-2007 data identifier given as 8 hex digits (or an int), else None."""
    if isinstance(key, int):
        return key if 0 <= key <= 0xFFFFFFFF else None
    text = key.strip().removeprefix("0x").removeprefix("0X")
    if len(text) != 8:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def relay_state(status3: int) -> str:
    """`open` (tripped) or `closed`, from running status word 3."""
    return "open" if status3 & catalogue.STATUS3_RELAY_OPEN else "closed"


class Dlt645Client:
    """Request/response for DL/T 645 meters on one bus (2007, or reads from 1997 meters)."""

    def __init__(self, bus: Bus, password: str = messages.DEFAULT_PASSWORD,
                 operator: str = messages.DEFAULT_OPERATOR, version: str = "2007") -> None:
        self.bus = bus
        self.password = password
        self.operator = operator
        self.version = version
        self.protocol = f"dlt645-{version}"

    def transact(self, request: Frame, reply_size: int = 64, **kwargs: object) -> Frame:
        reply = self._exchange(request, 4, reply_size, **kwargs)
        return messages.check_reply(request, reply)

    def _exchange(self, request: Frame, di_size: int, reply_size: int,
                  **kwargs: object) -> Frame:
        """Send `request` and wait for the frame that answers it, and only that one.

        A late reply of another meter, a reply to an earlier read, or a stray frame arrive on
        a real line in the middle of the next exchange; taking one as the answer would fail
        (or worse, mis-attribute) the next meter's read.  Such frames are dropped and counted
        on the bus (`Bus.stray`), and the wait goes on for the real answer.
        """
        return self.bus.transact(
            request.encode(), find_frame,
            accept=lambda f: self._answers(request, f, di_size),
            reply_size=reply_size,
            **kwargs,  # type: ignore[arg-type]
        )

    def _answers(self, request: Frame, reply: Frame, di_size: int) -> bool:
        if not reply.control.reply:
            return False  # the adapter's echo of our own request: not counted
        if answers(request, reply, di_size):
            return True
        self.bus.stray += 1
        log.info("bus %s: dropped a stray frame from %s (function %02X) while waiting for %s",
                 self.bus.settings.port, reply.address, reply.control.function,
                 request.address)
        return False

    def read(self, address: str, key: str | int) -> Reading:
        if self.version == "1997":
            item97 = v1997.lookup_1997(key)
            request = v1997.read(address, item97)
            reply = self._exchange(request, 2, reply_size=14 + item97.size)
            found97, value = v1997.reply_value(v1997.check_reply(request, reply))
            return Reading(address, found97.name, found97.di_hex, value, found97.unit)
        try:
            item = catalogue.lookup(key)
        except KeyError:
            di = raw_di(key)
            if di is None:
                raise
            # A DI outside the catalogue: read it all the same, show the value bytes raw.
            request = messages.read(address, di)
            data = messages.read_reply(self.transact(request, reply_size=16 + 4 + 64))
            return Reading(address, f"{di:08X}", f"{di:08X}", data.raw[::-1].hex().upper(),
                           "")
        request = messages.read(address, item)
        reply = self.transact(request, reply_size=16 + 4 + item.size)
        found, _di, _raw, value = messages.reply_value(reply)
        assert found is not None
        return Reading(address, found.name, found.di_hex, value, found.unit)

    def read_many(self, address: str, keys: list[str]) -> list[Reading]:
        return [self.read(address, key) for key in keys]

    def read_address(self, timeout: float | None = None) -> str:
        """The address of the only meter on the bus (read-address uses the AA wildcard)."""
        reply = self.transact(messages.read_address(), reply_size=22, timeout=timeout)
        return messages.reply_address(reply)

    def lookup(self, key: str | int) -> catalogue.DataItem:
        """The catalogue entry for a name or identifier, in this client's version."""
        return v1997.lookup_1997(key) if self.version == "1997" else catalogue.lookup(key)

    def status3(self, address: str) -> int:
        if self.version == "1997":
            raise RelayUnsupported("DL/T 645-1997 meters report no relay status word")
        return int(self.read(address, "status_word_3").value)  # type: ignore[call-overload]

    def relay(
        self,
        address: str,
        action: str,
        valid_for: timedelta = timedelta(minutes=10),
        confirm_attempts: int = 3,
        backoff: float = 0.2,
        now: Callable[[], datetime] | None = None,
    ) -> int:
        """Send a relay-control command and confirm it from status word 3; returns the word.

        Raises `MeterError` when the meter never confirms after `confirm_attempts` reads with
        exponential backoff.
        """
        if self.version == "1997":
            raise RelayUnsupported(f"meter {address} speaks DL/T 645-1997, which has no remote "
                                   "relay control: disconnect it on site")
        try:
            action = parse_action(action)
        except ValueError as exc:
            raise MeterError(str(exc)) from None
        code = messages.RELAY_ACTIONS[action]
        request = messages.relay_control(
            address, code, valid_for, self.password, self.operator,
            now=(now or meter_time())()
        )
        self.transact(request, reply_size=20)
        mask, expected = RELAY_CONFIRM[action]
        word = 0
        delay = backoff
        for attempt in range(confirm_attempts):
            word = self.status3(address)
            if word & mask == expected:
                return word
            if attempt + 1 < confirm_attempts:
                time.sleep(delay)
                delay *= 2
        raise MeterError(
            f"meter {address} did not confirm {action}: status word 3 is {word:04X}"
        )

    def scan(
        self,
        timeout: float | None = None,
        progress: Callable[[str, int], None] | None = None,
    ) -> list[str]:
        """Find every meter on the bus by a wildcard search over address bytes.

        A read of the communication address with the high bytes set to the `AA` wildcard is
        answered by every meter whose low bytes match: silence means none, a clean reply means
        exactly one, a garbled reply means several answered at once, so the search narrows to
        the next byte.  `progress(prefix, found)` is called after each probe.
        """
        found: list[str] = []

        def probe(low: str) -> None:  # low: the fixed low bytes, nameplate order, e.g. "07"
            address = "AA" * (6 - len(low) // 2) + low
            try:
                if self.version == "1997":
                    request = v1997.read(address, v1997.ADDRESS_DI)
                    reply = v1997.check_reply(request, self._exchange(
                        request, 2, reply_size=20, timeout=timeout, retries=0))
                else:
                    reply = self.transact(
                        messages.read(address, catalogue.BY_NAME["address"]),
                        reply_size=22, timeout=timeout, retries=0,
                    )
                found.append(reply.address)
            except MeterTimeout:
                pass
            except (FrameError, MeterError):
                if len(low) < 12:
                    for byte in range(100):
                        probe(f"{byte:02d}{low}")
            if progress:
                progress(low, len(found))

        probe("")
        return sorted(set(found))


# One string per name, shared by every poll (a cycle of 2,048 meters holds 8,192 of them).
RATE_NAMES = tuple(f"forward_active_rate{n}" for n in range(1, 5))


class Dlt645Driver:
    """DL/T 645 meters: energy block (total + 4 rates), status word 3 (2007 only), extra
    quantities."""

    def __init__(self, client: Dlt645Client, confirm_attempts: int = 3,
                 backoff: float = 1.0, now: Callable[[], datetime] | None = None) -> None:
        self.client = client
        self.protocol = client.protocol
        self.confirm_attempts = confirm_attempts
        self.backoff = backoff
        self._now = now or meter_time()
        self._no_block: set[str] = set()  # meters that refused the block read

    def poll(self, meter: str, quantities: tuple[str, ...], now: datetime,
             between: Callable[[], None] = lambda: None) -> Poll:
        """Energy, status word 3 and `quantities` of one meter; `between` runs after each
        transaction (the worker's preemption point for relay orders)."""
        values: list[tuple[str, str]] = []
        try:
            rates: tuple[Decimal, ...] | None = None
            if meter not in self._no_block:
                try:
                    block = self.client.read(meter, "forward_active_block").value
                    total, rates = block[0], tuple(block[1:5])  # type: ignore[index]
                except MeterAbnormalReply:
                    self._no_block.add(meter)
            if meter in self._no_block:
                total = self.client.read(meter, "forward_active_total").value
            values.append(("forward_active_total", str(total)))
            between()
            if rates is not None:
                values += [(name, str(r)) for name, r in zip(RATE_NAMES, rates, strict=False)]
            status: int | None = None
            if self.client.version != "1997":  # 1997 meters have no status word 3
                status = int(self.client.status3(meter))
                values.append(("status_word_3", f"{status:04X}"))
                between()
            for name in quantities:
                try:
                    self.client.lookup(name)
                except KeyError:
                    continue  # not a quantity of this protocol version
                try:
                    reading = self.client.read(meter, name)
                    value = reading.value
                    values.append((reading.name, f"{value:04X}" if isinstance(value, int)
                                   and reading.name.startswith("status_word")
                                   else str(catalogue.format_value(value))))
                except MeterAbnormalReply:
                    continue  # this meter does not have that quantity
                finally:
                    between()
        except EXPECTED_ERRORS as exc:
            return Poll(meter, now, False, error=str(exc))
        energy = RegisterReading(meter, now, Decimal(str(total)), rates)
        return Poll(meter, now, True, energy, values,
                    None if status is None else relay_state(status))

    def relay(self, meter: str, action: str) -> str:
        word = self.client.relay(meter, action, valid_for=timedelta(minutes=10),
                                 confirm_attempts=self.confirm_attempts, backoff=self.backoff,
                                 now=self._now)
        return relay_state(word)

    def energy(self, meter: str) -> Decimal:
        return Decimal(str(self.client.read(meter, "forward_active_total").value))

    @property
    def stray(self) -> int:
        """Frames dropped on this bus because they answered no request in flight."""
        return self.client.bus.stray

    def read(self, meter: str, quantities: list[str]) -> list[dict[str, object]]:
        return [{"meter": r.meter, "name": r.name, "di": r.di,
                 "value": catalogue.format_value(r.value), "unit": r.unit}
                for r in self.client.read_many(meter, quantities)]

    def scan(self, timeout: float | None = None) -> list[str]:
        return self.client.scan(timeout=timeout)

    def close(self) -> None:
        self.client.bus.close()
