"""One driver interface for every meter family, and the one place that picks the driver.

A driver turns a protocol client's answers into `Poll`s and relay results, so the daemon,
the technician verbs and the processor treat DL/T 645-2007, DL/T 645-1997 and Modbus meters
alike.  A meter that does not answer gives `Poll(ok=False)`; it never stops a cycle.
Modbus (pymodbus) is imported only when a Modbus bus exists: gateways without one do not pay
for it in memory or start-up time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from edge_agent.clock import Clock
from edge_agent.config import BusConfig, Config
from edge_agent.errors import ConfigError, UnknownMeter
from edge_agent.field.dlt645 import Dlt645Client, Dlt645Driver, meter_time
from edge_agent.field.transport import Bus, LineSettings

if TYPE_CHECKING:
    from edge_agent.prepaid.records import Poll


class MeterDriver(Protocol):
    """What the daemon and the technician verbs need of a meter family."""

    protocol: str

    def poll(self, meter: str, quantities: tuple[str, ...], now: datetime,
             between: Callable[[], None] = ...) -> Poll:
        """Read energy, relay state and `quantities` of one meter; never raises.  `between`
        runs after each transaction: the bus worker's preemption point."""

    def relay(self, meter: str, action: str) -> str:
        """Carry out a meter relay action, confirm it; return "open" or "closed"."""

    def energy(self, meter: str) -> Decimal:
        """The total forward active energy register, kWh (the baseline of a relay action)."""

    def read(self, meter: str, quantities: list[str]) -> list[dict[str, object]]:
        """Read named quantities (or DIs) for a technician."""

    def scan(self, timeout: float | None = None) -> list[str]:
        """Find the meters on the bus."""

    def close(self) -> None:
        """Release the port."""


def line_settings(bus: BusConfig) -> LineSettings:
    return LineSettings(port=bus.port, baud=bus.baud, parity=bus.parity,
                        stopbits=bus.stopbits, response_timeout=bus.response_timeout,
                        gap=bus.gap, retries=bus.retries)


def open_driver(protocol: str, settings: LineSettings,
                modbus_lookup: Callable[[str], tuple[int, str]] | None = None,
                confirm_attempts: int = 3, backoff: float = 1.0,
                now: Callable[[], datetime] | None = None) -> MeterDriver:
    """A driver for one port: the daemon's buses and the technician's direct access alike.
    `modbus_lookup` gives a Modbus meter's unit id and register map by address."""
    if protocol in ("dlt645-2007", "dlt645-1997"):
        version = protocol.rsplit("-", 1)[1]
        return Dlt645Driver(Dlt645Client(Bus(settings), version=version), confirm_attempts,
                            backoff, now)
    if protocol != "modbus":
        raise ConfigError(f"unsupported protocol {protocol!r}")
    from edge_agent.field.modbus import ModbusDriver, ModbusMeterClient

    if modbus_lookup is None:
        raise ConfigError("a Modbus driver needs each meter's unit id and register map")
    return ModbusDriver(ModbusMeterClient(settings), modbus_lookup, confirm_attempts, backoff)


def make_driver(bus: BusConfig, config: Config,
                identity: Callable[[str], tuple[int | None, str | None]] = lambda _a: (None, None),
                clock: Clock | None = None) -> MeterDriver:
    """The driver for a configured bus; `identity` gives a Modbus meter's unit id and register
    map as the database knows them (meters added by the head end carry them there)."""
    configured = {m.address: (m.unit, m.model) for m in config.meters if m.bus == bus.name}

    def lookup(address: str) -> tuple[int, str]:
        unit, model = identity(address)
        if unit and model:
            return unit, model
        unit, model = configured.get(address, (None, None))
        if unit and model:
            return unit, model
        raise UnknownMeter(f"Modbus meter {address} has no unit id and register map")

    return open_driver(bus.protocol, line_settings(bus), lookup,
                       config.policy.relay_confirm_attempts, config.policy.relay_backoff,
                       meter_time(clock, config.tz))
