"""A simulated DL/T 645-2007 meter: registers, clock, frozen data, relay, tamper counters, faults.

The meter answers frames exactly as a real one would on the wire; it keeps energy as an exact
`Decimal` that grows with its load while the relay is closed (and not while it is tripped),
spread over per-rate registers by the hour of its own clock.

Time: the meter lives in the world time of a `SimClock` (shared by the meters of one
`make_meters` call) and keeps its own clock on top of it, with an offset and a drift in ppm.
Energy is integrated between world instants and split at each hour of the meter's own clock, so
a daily freeze at the meter's midnight (and a settlement freeze on its settlement day) holds the
registers exactly as they stood at that instant, however far the clock was advanced in one step.
A 1997 meter keeps the same physics and clock but answers no frozen data.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import BROADCAST, Control, Frame
from protocols.dlt645.messages import Function, RelayAction
from protocols.errors import FrameError

from .clock import SimClock

FAULTS = ("none", "silent", "late", "corrupt_checksum", "garbage", "abnormal")

# Default TOU schedule of the simulated meter: hour -> rate (1 sharp, 2 peak, 3 flat, 4 valley)
DEFAULT_RATE_BY_HOUR = [4] * 7 + [3] * 3 + [2] * 2 + [3] * 6 + [2] * 4 + [3, 4]

HOUR = timedelta(hours=1)
KWUS_PER_KWH = Decimal(3_600_000_000)  # energy is summed in kW-microseconds
MICROSECOND = timedelta(microseconds=1)
ZERO5 = (Decimal(0),) * 5

# Abnormal-reply error words (SERR) the simulator uses.
ERR_OTHER = 0x01
ERR_NO_DATA = 0x02
ERR_UNAUTHORISED = 0x04

# (start, end, kW-us, rate): energy a meter used in one world interval, told to its listeners.
Listener = Callable[[datetime, datetime, Decimal, int], None]


class NoData(Exception):
    """The meter has no such record (yet): it answers `no requested data`."""


@dataclass(frozen=True)
class FrozenRecord:
    """One freeze: the meter's own time of the freeze and its registers then (total, rate1..4)."""

    at: datetime
    forward: tuple[Decimal, ...]
    reverse: tuple[Decimal, ...] = ZERO5


def _block(di: int, name: str) -> catalogue.DataItem:
    return catalogue.DataItem(di, name, "block", 4, 2, False, "kWh", 5)


def historic_item(di: int, meter: SimMeter) -> tuple[catalogue.DataItem, object]:
    """Layout and value of a frozen-data identifier, from the meter's records.

    Covers daily frozen data 0506 00|01|02 NN (freeze time YYMMDDhhmm, forward block, reverse
    block of the NNth last daily freeze), instant freeze 0503 00|01|02 NN, and settlement-day
    energy 0001|0002 00..04|FF NN (forward/reverse of the NNth last settlement day).  The
    layouts are the standard's, independent of what the catalogue knows.  Raises `KeyError`
    for an identifier outside these groups and `NoData` for a record not (yet) made.
    """
    group, kind, n = di >> 16, (di >> 8) & 0xFF, di & 0xFF
    frozen = {0x0506: meter.daily, 0x0503: meter.instant}
    if group in frozen and kind in (0, 1, 2) and n >= 1:
        records = frozen[group]
        if n > (records.maxlen or 0):
            raise KeyError(di)
        record = _nth(records, n)
        if kind == 0:
            return catalogue.DataItem(di, "frozen_time", "datetime", 5), record.at
        values = record.forward if kind == 1 else record.reverse
        return _block(di, "frozen_energy"), list(values)
    if group in (0x0001, 0x0002) and (kind <= 4 or kind == 0xFF) and 1 <= n <= 12:
        record = _nth(meter.monthly, n)
        values = record.forward if group == 1 else record.reverse
        if kind == 0xFF:
            return _block(di, "settlement_energy"), list(values)
        return catalogue.DataItem(di, "settlement_energy", "bcd", 4, 2, False, "kWh"), values[kind]
    raise KeyError(di)


def _nth(records: deque[FrozenRecord], n: int) -> FrozenRecord:
    if n > len(records):
        raise NoData(n)
    return records[n - 1]


@dataclass
class SimMeter:
    """State of one simulated meter; all mutation happens under `lock`."""

    address: str
    load_kw: Decimal = Decimal("1.2")
    energy: list[Decimal] = field(default_factory=lambda: [Decimal(0)] * 5)  # total, rate1..4
    relay_open: bool = False
    relay_cmd_open: bool = False
    alarm: bool = False
    keep_power: bool = False
    auto_close: bool = True  # close_allowed closes at once, as if the customer pressed the button
    cover_open_count: int = 0
    terminal_cover_open_count: int = 0
    magnetic_interference_count: int = 0
    power_failure_count: int = 0
    fault: str = "none"
    late_by: float = 1.0  # seconds a `late` meter takes to answer (the master has given up)
    reply_delay: float = 0.0  # seconds a healthy meter takes to answer (no fault)
    request_loss: float = 0.0  # probability this meter does not hear a request
    reply_loss: float = 0.0  # probability this meter's reply is lost on the line
    time_scale: float = 1.0  # energy grows time_scale times faster than world time passes
    password: str = messages.DEFAULT_PASSWORD
    version: str = "2007"  # or "1997": reads only, 2-byte identifiers, no frozen data
    # -- time ------------------------------------------------------------------------------
    clock: SimClock = field(default_factory=SimClock, repr=False)
    clock_offset: timedelta = timedelta()  # meter time minus world time, when last set
    drift_ppm: float = 0.0  # the meter's clock gains this many millionths (negative: loses)
    accept_time_set: bool = True  # False: refuses per-meter time writes (unauthorised)
    broadcast_max_shift: timedelta | None = None  # a broadcast moving the clock more is ignored
    # -- frozen data -----------------------------------------------------------------------
    settlement_day: int = 1  # day of month of the settlement (monthly) freeze
    settlement_hour: int = 0
    daily_depth: int = 62  # daily records kept (the standard's 05060001..3E)
    monthly_depth: int = 12  # settlement records kept (0001FF01..0C)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.daily: deque[FrozenRecord] = deque(maxlen=self.daily_depth)
        self.monthly: deque[FrozenRecord] = deque(maxlen=self.monthly_depth)
        self.instant: deque[FrozenRecord] = deque(maxlen=3)
        self.listeners: list[Listener] = []
        self._exact = [e * KWUS_PER_KWH for e in self.energy]
        self._shown = list(self.energy)
        world = self.clock.now()
        self._world_last = world
        self._drift_origin = world
        self._meter_last = self.meter_time(world)

    # -- clock ---------------------------------------------------------------------------
    def meter_time(self, world: datetime) -> datetime:
        """What the meter's own clock shows at a world instant (offset plus drift)."""
        drift = (world - self._drift_origin) * (self.drift_ppm / 1e6)
        return world + self.clock_offset + drift

    def _world_of(self, moment: datetime) -> datetime:
        """The first world instant at which the meter's clock shows `moment` or later."""
        world = self._drift_origin + (moment - self.clock_offset - self._drift_origin) / (
            1 + self.drift_ppm / 1e6)
        while self.meter_time(world) < moment:
            world += MICROSECOND
        return world

    def now(self) -> datetime:
        """The meter's own clock, now."""
        return self.meter_time(self.clock.now())

    def set_time(self, moment: datetime) -> None:
        """Set the meter's clock (no freeze is made up for the span it jumps over)."""
        with self.lock:
            world = self.clock.now()
            self.sync_to(world)
            self.clock_offset = moment - world
            self._drift_origin = world
            self._meter_last = self.meter_time(world)

    # -- physics --------------------------------------------------------------------------
    def advance(self, step: timedelta | None = None) -> None:
        """Bring the meter up to world time, after moving its world clock on by `step`.

        Without `step` this just accumulates the energy used since the last call (nothing
        while tripped).  With one, the shared clock jumps (every meter on it follows when it
        is next asked) and this meter freezes at each of its midnights crossed.
        """
        if step is not None:
            self.clock.advance(step)
        self.sync_to(self.clock.now())

    def advance_to(self, moment: datetime) -> None:
        """Move the world clock on to `moment` and bring the meter up to it."""
        self.clock.advance_to(moment)
        self.sync_to(self.clock.now())

    def sync_to(self, world: datetime) -> None:
        """Integrate energy up to a world instant, freezing at each boundary on the way."""
        with self.lock:
            if world <= self._world_last:
                return
            target = self.meter_time(world)
            boundary = self._meter_last.replace(minute=0, second=0, microsecond=0) + HOUR
            while boundary <= target:
                at = min(max(self._world_of(boundary), self._world_last), world)
                self._integrate(self._world_last, at, self._rate(self._meter_last))
                self._world_last, self._meter_last = at, boundary
                self._on_hour(boundary)
                boundary += HOUR
            self._integrate(self._world_last, world, self._rate(self._meter_last))
            self._world_last, self._meter_last = world, max(target, self._meter_last)

    def _rate(self, moment: datetime) -> int:
        return DEFAULT_RATE_BY_HOUR[moment.hour]

    def _kwh(self, start: datetime, end: datetime, load_kw: Decimal) -> Decimal:
        """Energy of a load over a world interval, in kW-microseconds (exact: no division)."""
        if end <= start or load_kw <= 0:
            return Decimal(0)
        micros = Decimal((end - start) // MICROSECOND)
        return load_kw * micros * Decimal(str(self.time_scale))

    def _integrate(self, start: datetime, end: datetime, rate: int) -> None:
        """Add the energy of one world interval, all at one rate."""
        if self.relay_open:
            return
        kwh = self._kwh(start, end, self.load_kw)
        if kwh:
            self._add(kwh, rate)
            for listener in self.listeners:
                listener(start, end, kwh, rate)

    def _add(self, kwus: Decimal, rate: int) -> None:
        """Add kW-microseconds; registers are kept exactly and shown in kWh.

        The sums are kept in kW-us so thousands of small intervals add up without rounding;
        a register someone set by hand (`meter.energy[0] = ...`) is taken as the new base.
        """
        for index in (0, rate):
            if self.energy[index] != self._shown[index]:
                self._exact[index] = self.energy[index] * KWUS_PER_KWH
            self._exact[index] += kwus
            self.energy[index] = self._shown[index] = self._exact[index] / KWUS_PER_KWH

    def add_energy(self, kwh: Decimal, rate: int | None = None) -> None:
        """Add energy at once (a step, not a load), to `rate` or the current one."""
        with self.lock:
            self.sync_to(self.clock.now())
            rate = rate or self._rate(self.now())
            self._add(kwh * KWUS_PER_KWH, rate)
            for listener in self.listeners:
                listener(self._world_last, self._world_last, kwh * KWUS_PER_KWH, rate)

    def _on_hour(self, moment: datetime) -> None:
        """At each hour of the meter's own clock: the daily and settlement freezes."""
        if self.version != "2007":
            return
        if moment.hour == 0:
            self.daily.appendleft(self.snapshot(moment))
        if moment.day == self.settlement_day and moment.hour == self.settlement_hour:
            self.monthly.appendleft(self.snapshot(moment))

    def snapshot(self, moment: datetime) -> FrozenRecord:
        return FrozenRecord(moment, tuple(self.register(i) for i in range(5)))

    def register(self, index: int) -> Decimal:
        """A register as the meter shows it: truncated to 0.01 kWh."""
        return self.energy[index].quantize(Decimal("0.01"), rounding="ROUND_DOWN")

    def live_kw(self) -> Decimal:
        """The active power the meter measures now."""
        return Decimal(0) if self.relay_open else self.load_kw

    def status3(self) -> int:
        word = 0
        if self.relay_open:
            word |= catalogue.STATUS3_RELAY_OPEN
        if self.relay_cmd_open:
            word |= catalogue.STATUS3_RELAY_CMD_OPEN
        if self.alarm:
            word |= catalogue.STATUS3_PRETRIP_ALARM
        if self.keep_power:
            word |= catalogue.STATUS3_KEEP_POWER
        return word | (0b01 << 8)  # electricity-prepaid meter type

    def value_of(self, item: catalogue.DataItem) -> object:
        """The value of a catalogue item (KeyError: the meter does not keep it)."""
        name = item.name
        if name.startswith(("forward_active", "combined_active")):
            if name.endswith("_block"):
                return [self.register(i) for i in range(5)]
            return self.register(0 if name.endswith("total") else int(name[-1]))
        if name.startswith("reverse_active"):
            return [Decimal(0)] * 5 if name.endswith("_block") else Decimal(0)
        live = self.live_kw()
        now = self.now()
        values: dict[str, object] = {
            "voltage_a": Decimal("229.8"), "voltage_b": Decimal("230.1"),
            "voltage_c": Decimal("230.4"),
            "current_a": (live * 1000 / Decimal("229.8")).quantize(Decimal("0.001")),
            "current_b": Decimal(0), "current_c": Decimal(0),
            "active_power_total": live, "active_power_a": live,
            "active_power_b": Decimal(0), "active_power_c": Decimal(0),
            "power_factor_total": Decimal("0.985"), "frequency": Decimal("50.00"),
            "date": now.date(), "time": now.time().replace(microsecond=0),
            "address": self.address, "meter_number": self.address, "user_number": self.address,
            "status_word_3": self.status3(),
            "cover_open_count": self.cover_open_count,
            "terminal_cover_open_count": self.terminal_cover_open_count,
            "power_failure_count": self.power_failure_count,
            "programming_count": 0, "meter_clear_count": 0,
            "magnetic_interference_count": self.magnetic_interference_count,
            "total_voltage_loss": [0, 0],
        }
        if name.startswith("status_word_") and name != "status_word_3":
            return 0
        return values[name]

    # -- protocol -------------------------------------------------------------------------
    def matches(self, address: str) -> bool:
        if address == BROADCAST:
            return True
        return all(a == "A" or a == b for a, b in zip(address, self.address, strict=True))

    def _reply(self, function: int, data: bytes = b"") -> Frame:
        return Frame(self.address, Control(function=function, reply=True), data)

    def _abnormal(self, function: int, error_bits: int) -> Frame:
        return Frame(self.address, Control(function, reply=True, abnormal=True),
                     bytes([error_bits]))

    def handle(self, request: Frame) -> Frame | None:
        """The reply to one request addressed to this meter (None: no reply is due)."""
        self.advance()
        function = request.control.function
        if self.version == "1997":
            return self._handle_1997(request)
        with self.lock:
            if self.fault == "abnormal" and function != Function.BROADCAST_TIME:
                return self._abnormal(function, ERR_OTHER)
            if function == Function.READ:
                return self._read(request)
            if function == Function.READ_ADDRESS:
                return self._reply(function, bytes.fromhex(self.address)[::-1])
            if function == Function.BROADCAST_TIME:
                self._broadcast_time(request.data)
                return None
            if function == Function.RELAY:
                return self._relay(request)
            if function in (Function.WRITE, Function.METER_CLEAR, Function.EVENT_CLEAR,
                            Function.DEMAND_CLEAR):
                offset = 4 if function == Function.WRITE else 0
                if request.data[offset : offset + 4] != bytes.fromhex(self.password):
                    return self._abnormal(function, ERR_UNAUTHORISED)
                if function == Function.WRITE:
                    return self._write(request)
                if function == Function.EVENT_CLEAR:
                    self.cover_open_count = self.terminal_cover_open_count = 0
                    self.magnetic_interference_count = 0
                if function == Function.METER_CLEAR:
                    self.energy = [Decimal(0)] * 5
                return self._reply(function)
            if function == Function.FREEZE:
                if request.data[:4] == b"\x99" * 4:  # freeze now: an instant-freeze record
                    self.instant.appendleft(self.snapshot(self.now().replace(second=0,
                                                                             microsecond=0)))
                return self._reply(function)
            if function == Function.CHANGE_BAUD:
                return self._reply(function, request.data[:1])
            return self._abnormal(function, ERR_OTHER)

    def _read(self, request: Frame) -> Frame:
        di = int.from_bytes(request.data[:4], "little")
        try:
            try:
                item, value = historic_item(di, self)
            except KeyError:
                item = catalogue.lookup(di)
                value = self.value_of(item)
        except (KeyError, NoData):
            return self._abnormal(Function.READ, ERR_NO_DATA)
        return self._reply(Function.READ, request.data[:4] + catalogue.encode_value(item, value))

    def _write(self, request: Frame) -> Frame:
        """A write of data (password already checked): the clock; other items are accepted."""
        di = int.from_bytes(request.data[:4], "little")
        if di not in (0x04000101, 0x04000102):
            return self._reply(Function.WRITE)
        if not self.accept_time_set:
            return self._abnormal(Function.WRITE, ERR_UNAUTHORISED)
        item = catalogue.DataItem(di, "clock", "date" if di == 0x04000101 else "time",
                                  4 if di == 0x04000101 else 3)
        try:
            value = catalogue.decode_value(item, request.data[12:])
        except FrameError:
            return self._abnormal(Function.WRITE, ERR_OTHER)
        now = self.now()
        moment = (datetime.combine(value, now.time()) if di == 0x04000101  # type: ignore[arg-type]
                  else datetime.combine(now.date(), value))  # type: ignore[arg-type]
        self.set_time(moment)
        return self._reply(Function.WRITE)

    def _broadcast_time(self, data: bytes) -> None:
        """Broadcast time ssmmhhDDMMYY: set the clock, unless the shift is beyond the limit."""
        try:
            digits = data[:6][::-1].hex()
            moment = datetime(2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]),
                              int(digits[6:8]), int(digits[8:10]), int(digits[10:12]))
        except ValueError:
            return  # not a valid time: a meter ignores it (a broadcast gets no reply)
        limit = self.broadcast_max_shift
        if limit is not None and abs(moment - self.now()) > limit:
            return
        self.set_time(moment)

    def _handle_1997(self, request: Frame) -> Frame | None:
        from protocols.dlt645 import v1997

        function = request.control.function
        with self.lock:
            if self.fault == "abnormal" and function != 0x08:
                return self._abnormal(function, 0x01)
            if function == v1997.Function1997.BROADCAST_TIME:
                self._broadcast_time(request.data)
                return None
            if function != v1997.Function1997.READ or len(request.data) < 2:
                return self._abnormal(function, 0x01)
            try:
                item = v1997.lookup_1997(int.from_bytes(request.data[:2], "little"))
                value = self.value_of(item)
            except KeyError:
                return self._abnormal(function, 0x02)
            return self._reply(function, request.data[:2] + catalogue.encode_value(item, value))

    def _relay(self, request: Frame) -> Frame:
        if len(request.data) < 16:
            return self._abnormal(Function.RELAY, 0x01)
        if request.data[:4] != bytes.fromhex(self.password):
            return self._abnormal(Function.RELAY, 0x04)
        try:
            action = RelayAction(request.data[8])
        except ValueError:
            return self._abnormal(Function.RELAY, 0x01)
        if action == RelayAction.TRIP:
            if self.keep_power:
                return self._abnormal(Function.RELAY, 0x01)
            self.relay_open = self.relay_cmd_open = True
        elif action == RelayAction.CLOSE_ALLOWED:
            self.relay_cmd_open = False
            self.relay_open = not self.auto_close
        elif action == RelayAction.DIRECT_CLOSE:
            self.relay_open = self.relay_cmd_open = False
        elif action == RelayAction.ALARM:
            self.alarm = True
        elif action == RelayAction.ALARM_RELEASE:
            self.alarm = False
        elif action == RelayAction.KEEP_POWER:
            self.keep_power = True
        elif action == RelayAction.KEEP_POWER_RELEASE:
            self.keep_power = False
        if action in (RelayAction.CLOSE_ALLOWED, RelayAction.DIRECT_CLOSE):
            self.alarm = False
        return self._reply(Function.RELAY)

    def open_cover(self) -> None:
        """Tamper: the meter cover was opened."""
        with self.lock:
            self.cover_open_count += 1

    def open_terminal_cover(self) -> None:
        """Tamper: the terminal cover was opened."""
        with self.lock:
            self.terminal_cover_open_count += 1

    def apply_magnet(self) -> None:
        """Tamper: a strong magnetic field was detected."""
        with self.lock:
            self.magnetic_interference_count += 1
