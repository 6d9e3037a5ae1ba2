"""Simulated Modbus RTU meters: pymodbus's own server on a pseudo-terminal.

Each meter is a pymodbus `SimDevice` whose registers are filled from a live meter model (the
same physics as the DL/T 645 simulator: energy grows with the load while the relay is closed)
on every request, following the meter's register map; writes to the relay point trip or close
it.  The server and the agent are joined by a virtual null-modem cable (two ptys bridged by a
thread) that can emulate wire timing and carries the same fault switches as the DL/T 645
simulator: silent, late, corrupt_checksum, garbage, abnormal.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
import tty
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus import RegisterMap, encode, load_map

from .dlt645_meter import SimMeter


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


class SimModbusMeter:
    """One Modbus meter: a unit id, a register map and the physics of `SimMeter`."""

    def __init__(self, unit: int, model: str, load_kw: Decimal = Decimal("1.2"),
                 time_scale: float = 1.0) -> None:
        self.unit = unit
        self.map: RegisterMap = load_map(model)
        self.core = SimMeter(address=f"{unit:012d}", load_kw=load_kw, time_scale=time_scale)
        self.fault = "none"
        self.late_by = 1.0

    @property
    def relay_open(self) -> bool:
        return self.core.relay_open

    def value(self, name: str) -> Decimal:
        core = self.core
        core.advance()
        live = Decimal(0) if core.relay_open else core.load_kw
        watts = "kW" not in self.map.registers[name].unit
        power = live * 1000 if watts else live
        values = {
            "import_active_energy": core.register(0), "total_active_energy": core.register(0),
            "export_active_energy": Decimal(0),
            "active_power": power, "total_power": power,
            "power_factor": Decimal("0.985"), "frequency": Decimal("50.00"),
            "meter_address": Decimal(self.unit), "relay_state": Decimal(int(core.relay_open)),
        }
        if name.startswith("voltage"):
            return Decimal("229.8")
        if name.startswith("current"):
            return (live * 1000 / Decimal("229.8")).quantize(Decimal("0.001"))
        return values[name]

    def device(self) -> SimDevice:
        tables: dict[str, list[SimData]] = {"input": [], "holding": []}
        for register in self.map.registers.values():
            tables[register.table].append(SimData(register.address, count=register.count,
                                                  values=0, datatype=DataType.REGISTERS))
        coils = []
        relay = self.map.relay
        if relay is not None and relay.kind == "coil":
            coils.append(SimData(relay.address, count=1, values=False, datatype=DataType.BITS))
        empty = [SimData(65000, count=1, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(self.unit, simdata=(coils or [SimData(65000, 1, False,
                                                               DataType.BITS)],
                                             [SimData(65000, 1, False, DataType.BITS)],
                                             tables["holding"] or empty,
                                             tables["input"] or empty),
                         action=self._action)

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> None:
        relay = self.map.relay
        if function_code in (1, 5, 15):  # the relay coil
            if set_values is not None and relay is not None:
                self.core.relay_open = bool(set_values[0]) == bool(relay.open_value)
                self.core.relay_cmd_open = self.core.relay_open
            elif relay is not None:
                index = relay.address // 16 - start_address
                registers[index] = int(self.core.relay_open) << (relay.address % 16)
            return
        if set_values is not None and relay is not None and relay.kind == "register" \
                and address == relay.address:
            self.core.relay_open = int(set_values[0]) == int(relay.open_value)
            return
        table = "input" if function_code == 4 else "holding"
        for register in self.map.registers.values():
            if register.table != table:
                continue
            if register.address + register.count <= address or register.address >= \
                    address + count:
                continue
            words = encode(register, self.value(register.name))
            offset = register.address - start_address
            registers[offset:offset + register.count] = words


class ModbusSimBus:
    """Simulated Modbus meters behind a virtual null-modem cable; `port` is the agent's end."""

    def __init__(self, meters: Iterable[SimModbusMeter], baud: int = 9600,
                 wire_timing: bool = False, bits_per_char: int = 10) -> None:
        self.meters = {m.unit: m for m in meters}
        self.baud = baud
        self.wire_timing = wire_timing
        self.bits_per_char = bits_per_char
        self.requests_seen = 0
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._fds: list[int] = []
        self.port = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusSerialServer | None = None
        self._threads: list[threading.Thread] = []

    def meter(self, unit: int) -> SimModbusMeter:
        return self.meters[unit]

    def start(self) -> ModbusSimBus:
        server_master, server_slave = os.openpty()
        agent_master, agent_slave = os.openpty()
        for fd in (server_master, server_slave, agent_master, agent_slave):
            tty.setraw(fd)
        self._fds = [server_master, server_slave, agent_master, agent_slave]
        self._server_master, self._agent_master = server_master, agent_master
        self.port = os.ttyname(agent_slave)
        server_port = os.ttyname(server_slave)
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = ModbusSerialServer([m.device() for m in self.meters.values()],
                                              framer=FramerType.RTU, port=server_port,
                                              baudrate=self.baud,
                                              ignore_missing_devices=True)  # silence
            ready.set()
            await self._server.serve_forever()

        def serve() -> None:
            try:
                asyncio.run(main())
            except (asyncio.CancelledError, RuntimeError):
                pass

        self._threads = [threading.Thread(target=serve, name="modbus-sim", daemon=True),
                         threading.Thread(target=self._bridge, name="null-modem", daemon=True)]
        for thread in self._threads:
            thread.start()
        ready.wait(10)
        time.sleep(0.3)  # the server opens its end of the cable
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._loop and self._server:
            future = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                future.result(5)
            except Exception:  # the loop may already be gone; nothing is left to shut
                pass
        for thread in self._threads:
            thread.join(5)
        with self._write_lock:  # no late reply may write to a closed (reused) descriptor
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> ModbusSimBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wire(self, size: int) -> None:
        if self.wire_timing:
            time.sleep(size * self.bits_per_char / self.baud)

    def _bridge(self) -> None:
        server, agent = self._server_master, self._agent_master
        while not self._stop.is_set():
            ready, _, _ = select.select([server, agent], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    time.sleep(0.02)
                    continue
                if fd == agent:  # request: agent -> meters
                    self.requests_seen += 1
                    self._wire(len(data))
                    os.write(server, data)
                else:  # reply: meter -> agent, through the fault switches
                    out = self._fault(data)
                    meter = self.meters.get(data[0]) if data else None
                    if out and meter is not None and meter.fault == "late":
                        # answer from a timer, so the stale reply lands in the next transaction
                        timer = threading.Timer(meter.late_by, self._deliver, (agent, out))
                        timer.daemon = True
                        timer.start()
                    elif out:
                        self._deliver(agent, out)

    def _deliver(self, agent: int, out: bytes) -> None:
        self._wire(len(out))
        with self._write_lock:
            if self._stop.is_set():
                return
            try:
                os.write(agent, out)
            except OSError:
                pass

    def _fault(self, reply: bytes) -> bytes:
        meter = self.meters.get(reply[0]) if reply else None
        if meter is None:
            return b""  # no meter has that unit id: a real line stays silent
        if meter.fault == "none":
            return reply
        if meter.fault == "silent":
            return b""
        if meter.fault == "late":
            return reply  # delayed by the bridge
        if meter.fault == "corrupt_checksum":
            return reply[:-1] + bytes([reply[-1] ^ 0xFF])
        if meter.fault == "garbage":
            return b"\x00\xff\x13" + reply
        if meter.fault == "abnormal":
            body = bytes([reply[0], reply[1] | 0x80, 0x04])
            return body + crc16(body)
        return reply


def make_modbus_meters(count: int = 1, model: str = "chint-ddsu666", first_unit: int = 1,
                       **kwargs: Any) -> list[SimModbusMeter]:
    return [SimModbusMeter(unit, model, **kwargs)
            for unit in range(first_unit, first_unit + count)]
