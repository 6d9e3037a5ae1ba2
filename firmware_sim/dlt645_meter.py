"""A simulated DL/T 645-2007 meter: registers, relay, tamper counters and switchable faults.

The meter answers frames exactly as a real one would on the wire; it keeps energy as an exact
`Decimal` that grows with its load while the relay is closed (and not while it is tripped),
spread over per-rate registers by the simulated time of day.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import BROADCAST, Control, Frame
from protocols.dlt645.messages import Function, RelayAction

FAULTS = ("none", "silent", "late", "corrupt_checksum", "garbage", "abnormal")

# Default TOU schedule of the simulated meter: hour -> rate (1 sharp, 2 peak, 3 flat, 4 valley)
DEFAULT_RATE_BY_HOUR = [4] * 7 + [3] * 3 + [2] * 2 + [3] * 6 + [2] * 4 + [3, 4]


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
    power_failure_count: int = 0
    fault: str = "none"
    late_by: float = 1.0
    time_scale: float = 1.0  # simulated seconds per real second
    password: str = messages.DEFAULT_PASSWORD
    clock_offset: timedelta = timedelta()
    version: str = "2007"  # or "1997": reads only, 2-byte identifiers
    frozen_day: list[Decimal] = field(default_factory=lambda: [Decimal(0)] * 5)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _last: float = field(default_factory=time.monotonic, repr=False)

    # -- physics --------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now() + self.clock_offset

    def advance(self) -> None:
        """Accumulate the energy used since the last call (nothing while tripped)."""
        with self.lock:
            moment = time.monotonic()
            elapsed = Decimal(str(round((moment - self._last) * self.time_scale, 6)))
            self._last = moment
            if not self.relay_open and self.load_kw > 0:
                self.add_energy(self.load_kw * elapsed / 3600)

    def add_energy(self, kwh: Decimal, rate: int | None = None) -> None:
        with self.lock:
            rate = rate or DEFAULT_RATE_BY_HOUR[self.now().hour]
            self.energy[0] += kwh
            self.energy[rate] += kwh

    def register(self, index: int) -> Decimal:
        """A register as the meter shows it: truncated to 0.01 kWh."""
        return self.energy[index].quantize(Decimal("0.01"), rounding="ROUND_DOWN")

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
        name = item.name
        if name.startswith(("forward_active", "combined_active")):
            if name.endswith("_block"):
                return [self.register(i) for i in range(5)]
            return self.register(0 if name.endswith("total") else int(name[-1]))
        if name.startswith("reverse_active"):
            return [Decimal(0)] * 5 if name.endswith("_block") else Decimal(0)
        live = Decimal(0) if self.relay_open else self.load_kw
        values: dict[str, object] = {
            "voltage_a": Decimal("229.8"), "voltage_b": Decimal("230.1"),
            "voltage_c": Decimal("230.4"),
            "current_a": (live * 1000 / Decimal("229.8")).quantize(Decimal("0.001")),
            "current_b": Decimal(0), "current_c": Decimal(0),
            "active_power_total": live, "active_power_a": live,
            "active_power_b": Decimal(0), "active_power_c": Decimal(0),
            "power_factor_total": Decimal("0.985"), "frequency": Decimal("50.00"),
            "date": self.now().date(), "time": self.now().time().replace(microsecond=0),
            "address": self.address, "meter_number": self.address, "user_number": self.address,
            "status_word_3": self.status3(),
            "frozen_day_time": self.now().replace(hour=0, minute=0, second=0, microsecond=0),
            "frozen_day_forward_active": self.frozen_day,
            "frozen_day_reverse_active": [Decimal(0)] * 5,
            "cover_open_count": self.cover_open_count,
            "terminal_cover_open_count": self.terminal_cover_open_count,
            "power_failure_count": self.power_failure_count,
            "programming_count": 0, "meter_clear_count": 0, "magnetic_interference_count": 0,
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
                return self._abnormal(function, 0x01)
            if function == Function.READ:
                di = int.from_bytes(request.data[:4], "little")
                try:
                    item = catalogue.lookup(di)
                except KeyError:
                    return self._abnormal(function, 0x02)
                value = catalogue.encode_value(item, self.value_of(item))
                return self._reply(function, request.data[:4] + value)
            if function == Function.READ_ADDRESS:
                return self._reply(function, bytes.fromhex(self.address)[::-1])
            if function == Function.BROADCAST_TIME:
                return None
            if function == Function.RELAY:
                return self._relay(request)
            if function in (Function.WRITE, Function.METER_CLEAR, Function.EVENT_CLEAR,
                            Function.DEMAND_CLEAR):
                offset = 4 if function == Function.WRITE else 0
                if request.data[offset : offset + 4] != bytes.fromhex(self.password):
                    return self._abnormal(function, 0x04)
                if function == Function.EVENT_CLEAR:
                    self.cover_open_count = self.terminal_cover_open_count = 0
                if function == Function.METER_CLEAR:
                    self.energy = [Decimal(0)] * 5
                return self._reply(function)
            if function == Function.FREEZE:
                self.frozen_day = [self.register(i) for i in range(5)]
                return self._reply(function)
            if function == Function.CHANGE_BAUD:
                return self._reply(function, request.data[:1])
            return self._abnormal(function, 0x01)

    def _handle_1997(self, request: Frame) -> Frame | None:
        from protocols.dlt645 import v1997

        function = request.control.function
        with self.lock:
            if self.fault == "abnormal" and function != 0x08:
                return self._abnormal(function, 0x01)
            if function == v1997.Function1997.BROADCAST_TIME:
                return None
            if function != v1997.Function1997.READ or len(request.data) < 2:
                return self._abnormal(function, 0x01)
            try:
                item = v1997.lookup_1997(int.from_bytes(request.data[:2], "little"))
            except KeyError:
                return self._abnormal(function, 0x02)
            value = catalogue.encode_value(item, self.value_of(item))
            return self._reply(function, request.data[:2] + value)

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
