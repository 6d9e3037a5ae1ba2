"""Modbus RTU meters through pymodbus: read mapped quantities, relay with readback, scan.

pymodbus owns the RTU framing (CRC, silent intervals) and the request/reply pairing; this
module turns a register map and its answers into decoded values or a specific error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from edge_agent.bus import LineSettings, is_pty
from edge_agent.dlt645_client import Reading
from edge_agent.errors import BusError, MeterAbnormalReply, MeterError, MeterTimeout
from protocols.modbus import RegisterMap, decode

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
