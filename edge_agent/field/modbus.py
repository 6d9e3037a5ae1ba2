"""Modbus RTU meters through pymodbus: read mapped quantities, relay with readback, scan.

pymodbus owns the RTU framing (CRC, silent intervals) and the request/reply pairing; this
module turns a register map and its answers into decoded values or a specific error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from edge_agent.errors import (
    EXPECTED_ERRORS,
    BusError,
    MeterAbnormalReply,
    MeterError,
    MeterTimeout,
    RelayUnsupported,
)
from edge_agent.field.dlt645 import Reading
from edge_agent.field.transport import LineSettings, is_pty
from edge_agent.prepaid.records import Poll, RegisterReading
from edge_agent.prepaid.vocabulary import ADVISORY, MeterAction, parse_action
from protocols.modbus import RegisterMap, decode, load_map

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we report errors ourselves

EXCEPTION_CODES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "device failure", 5: "acknowledge", 6: "device busy"}


class ModbusMeterClient:
    """One RS-485 port of Modbus RTU meters."""

    protocol = "modbus"

    def __init__(self, settings: LineSettings) -> None:
        self.settings = settings
        parity = "N" if is_pty(settings.port) else settings.parity
        self.client = ModbusSerialClient(
            settings.port, baudrate=settings.baud, parity=parity, stopbits=settings.stopbits,
            bytesize=settings.bytesize, timeout=settings.response_timeout,
            retries=settings.retries)
        self.requests = 0
        self.replies = 0

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, unit: int, fn: Callable[[], Any]) -> Any:
        if not self.client.connected and not self.client.connect():
            raise BusError(f"cannot open port {self.settings.port}")
        self.requests += 1
        try:
            reply = fn()
        except ModbusException as exc:
            text = str(exc)
            if "No response" in text or "timeout" in text.lower() or "Failed to connect" in text:
                raise MeterTimeout(f"no reply from Modbus unit {unit} on {self.settings.port}"
                                   ) from None
            raise MeterError(f"Modbus unit {unit}: {what}: {text}") from None
        if reply.isError():
            code = getattr(reply, "exception_code", 0)
            raise MeterAbnormalReply(f"unit {unit}", what,
                                     [EXCEPTION_CODES.get(code, f"exception {code}")])
        self.replies += 1
        return reply

    def read_register(self, unit: int, table: str, address: int, count: int) -> list[int]:
        read = (self.client.read_input_registers if table == "input"
                else self.client.read_holding_registers)
        reply = self._call(f"read {table} {address}", unit,
                           lambda: read(address, count=count, device_id=unit))
        return list(reply.registers)

    def read(self, unit: int, mapping: RegisterMap, name: str, meter: str = "") -> Reading:
        register = mapping.register(name)
        words = self.read_register(unit, register.table, register.address, register.count)
        return Reading(meter or f"unit:{unit}", name, f"{register.table}:{register.address}",
                       decode(register, words), register.unit)

    def energy(self, unit: int, mapping: RegisterMap) -> Decimal:
        return self.read(unit, mapping, mapping.energy).value  # type: ignore[return-value]

    def relay_state(self, unit: int, mapping: RegisterMap) -> str:
        point = mapping.relay
        if point is None:
            raise MeterError(f"{mapping.model} has no relay")
        if point.kind == "coil":
            reply = self._call("read relay coil", unit, lambda: self.client.read_coils(
                point.address, count=1, device_id=unit))
            value: Any = bool(reply.bits[0])
        else:
            value = self.read_register(unit, "holding", point.address, 1)[0]
        return "open" if value == point.open_value else "closed"

    def relay(self, unit: int, mapping: RegisterMap, action: str, confirm_attempts: int = 3,
              backoff: float = 0.2) -> str:
        """Trip or close, then read the relay back until it confirms."""
        point = mapping.relay
        if point is None:
            raise MeterError(f"{mapping.model} has no relay: it cannot be tripped remotely")
        want_open = action == "trip"
        value = point.open_value if want_open else point.closed_value
        if point.kind == "coil":
            self._call("write relay coil", unit, lambda: self.client.write_coil(
                point.address, bool(value), device_id=unit))
        else:
            self._call("write relay register", unit, lambda: self.client.write_register(
                point.address, int(value), device_id=unit))
        state = ""
        for attempt in range(confirm_attempts):
            state = self.relay_state(unit, mapping)
            if (state == "open") == want_open:
                return state
            if attempt + 1 < confirm_attempts:
                time.sleep(backoff * 2 ** attempt)
        raise MeterError(f"Modbus unit {unit} did not confirm {action}: relay is {state}")

    def scan(self, mapping: RegisterMap, units: range,
             progress: Callable[[int, int], None] | None = None) -> list[int]:
        """Unit ids that answer a read of the map's energy register."""
        found = []
        register = mapping.register(mapping.energy)
        for unit in units:
            try:
                self.read_register(unit, register.table, register.address, register.count)
                found.append(unit)
            except (MeterTimeout, MeterError):
                pass
            if progress:
                progress(unit, len(found))
        return found


#: Register-map names -> the catalogue names every protocol publishes under (docs/schemas,
#: common.json `reading_name`).  Map registers without one are read on demand only.
CATALOGUE = {
    "voltage": "voltage_a", "voltage_a": "voltage_a", "voltage_l1": "voltage_a",
    "voltage_l2": "voltage_b", "voltage_l3": "voltage_c",
    "current": "current_a", "current_a": "current_a", "current_l1": "current_a",
    "current_l2": "current_b", "current_l3": "current_c",
    "active_power": "active_power_total", "total_power": "active_power_total",
    "power_factor": "power_factor_total", "frequency": "frequency",
    "import_active_energy": "forward_active_total", "export_active_energy": "reverse_active_total",
    "total_active_energy": "combined_active_total",
}


def _map_names(mapping: RegisterMap, quantities: tuple[str, ...]) -> list[str]:
    """The map's registers for a bus's quantities, given as catalogue or map names."""
    out: list[str] = []
    for name in mapping.registers:
        if name == mapping.energy or name not in CATALOGUE:
            continue
        if (name in quantities or CATALOGUE[name] in quantities) and not any(
                CATALOGUE[n] == CATALOGUE[name] for n in out):
            out.append(name)
    return out


class ModbusDriver:
    """Modbus RTU meters: total import energy, relay (if the map has one), mapped quantities."""

    protocol = "modbus"

    def __init__(self, client: ModbusMeterClient,
                 lookup: Callable[[str], tuple[int, str]], confirm_attempts: int = 3,
                 backoff: float = 0.2) -> None:
        self.client = client
        self.lookup = lookup
        self.confirm_attempts = confirm_attempts
        self.backoff = backoff
        self._maps: dict[str, RegisterMap] = {}

    def _meter(self, meter: str) -> tuple[int, RegisterMap]:
        unit, model = self.lookup(meter)
        if model not in self._maps:
            self._maps[model] = load_map(model)
        return unit, self._maps[model]

    def poll(self, meter: str, quantities: tuple[str, ...], now: datetime,
             between: Callable[[], None] = lambda: None) -> Poll:
        try:
            unit, mapping = self._meter(meter)
            kwh = self.client.energy(unit, mapping)
            values = [("forward_active_total", str(kwh))]
            between()
            relay = None
            if mapping.relay is not None:
                relay = self.client.relay_state(unit, mapping)
                # The DL/T 645 way: status word 3, bit 4 set while the relay is open.
                values.append(("status_word_3", "0010" if relay == "open" else "0000"))
            for name in _map_names(mapping, quantities):
                values.append((CATALOGUE[name],
                               str(self.client.read(unit, mapping, name).value)))
        except EXPECTED_ERRORS as exc:
            return Poll(meter, now, False, error=str(exc))
        return Poll(meter, now, True, RegisterReading(meter, now, Decimal(kwh)), values, relay)

    def relay(self, meter: str, action: str) -> str:
        unit, mapping = self._meter(meter)
        if mapping.relay is None:
            raise RelayUnsupported(f"meter {meter} ({mapping.model}) has no relay")
        action = parse_action(action)
        if action in ADVISORY:
            # Modbus maps have no pre-trip alarm: the step is skipped, the relay stays as is.
            return self.client.relay_state(unit, mapping)
        if action in (MeterAction.KEEP_POWER, MeterAction.KEEP_POWER_RELEASE):
            raise RelayUnsupported(f"{mapping.model} has no keep-power state; use the "
                                   "meter's keep_power flag in the configuration")
        target = "trip" if action is MeterAction.TRIP else "close"
        return self.client.relay(unit, mapping, target, self.confirm_attempts, self.backoff)

    def energy(self, meter: str) -> Decimal:
        unit, mapping = self._meter(meter)
        return Decimal(self.client.energy(unit, mapping))

    def read(self, meter: str, quantities: list[str]) -> list[dict[str, object]]:
        unit, mapping = self._meter(meter)
        names = [mapping.energy if q in ("energy", "forward_active_total") else q
                 for q in quantities]
        out = []
        for name in names:
            try:
                reading = self.client.read(unit, mapping, name, meter)
            except KeyError as exc:
                raise MeterError(str(exc.args[0])) from None
            out.append({"meter": meter, "name": reading.name, "di": reading.di,
                        "value": str(reading.value), "unit": reading.unit})
        return out

    def scan(self, timeout: float | None = None, model: str = "eastron-sdm120",
             units: range = range(1, 248)) -> list[str]:
        return [f"unit:{u}" for u in self.client.scan(load_map(model), units)]

    def close(self) -> None:
        self.client.close()
