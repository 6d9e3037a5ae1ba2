"""Drivers for the other meter families: DL/T 645-1997 and Modbus RTU.

They give the daemon the same `Poll`s and relay results as DL/T 645-2007 meters, so billing and
enforcement treat every meter alike.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from edge_agent.billing import RegisterReading
from edge_agent.bus import Bus, LineSettings
from edge_agent.config import BusConfig, Config
from edge_agent.dlt645_client import Dlt645Client
from edge_agent.drivers import Dlt645Driver
from edge_agent.errors import (
    EXPECTED_ERRORS,
    MeterError,
    RelayUnsupported,
    StorageError,
)
from edge_agent.modbus_client import ModbusMeterClient
from edge_agent.processing import Poll
from protocols.modbus import RegisterMap, load_map


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

    def poll(self, meter: str, quantities: tuple[str, ...], now: datetime) -> Poll:
        try:
            unit, mapping = self._meter(meter)
            kwh = self.client.energy(unit, mapping)
            values = [("forward_active_total", str(kwh))]
            relay = None
            if mapping.relay is not None:
                relay = self.client.relay_state(unit, mapping)
                values.append(("relay", relay))
            for name in quantities:
                if name in mapping.registers and name != mapping.energy:
                    values.append((name, str(self.client.read(unit, mapping, name).value)))
        except EXPECTED_ERRORS as exc:
            return Poll(meter, now, False, error=str(exc))
        return Poll(meter, now, True, RegisterReading(meter, now, Decimal(kwh)), values, relay)

    def relay(self, meter: str, action: str) -> str:
        unit, mapping = self._meter(meter)
        if mapping.relay is None:
            raise RelayUnsupported(f"meter {meter} ({mapping.model}) has no relay")
        if action in ("alarm", "alarm_release"):
            # Modbus maps have no pre-trip alarm: the step is skipped, the relay stays as is.
            return self.client.relay_state(unit, mapping)
        if action in ("keep_power", "keep_power_release"):
            raise RelayUnsupported(f"{mapping.model} has no keep-power state; use the "
                                   "meter's keep_power flag in the configuration")
        target = "trip" if action == "trip" else "close"
        return self.client.relay(unit, mapping, target, self.confirm_attempts, self.backoff)

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


def make_extra_driver(bus: BusConfig, settings: LineSettings, config: Config,
                      store: Any = None) -> Any:
    policy = config.policy
    if bus.protocol == "dlt645-1997":
        return Dlt645Driver(Dlt645Client(Bus(settings), version="1997"),
                            policy.relay_confirm_attempts, policy.relay_backoff)
    configured = {m.address: (m.unit, m.model) for m in config.meters if m.bus == bus.name}

    def lookup(meter: str) -> tuple[int, str]:
        record = store.meter(meter) if store is not None else None
        if record is not None and record.unit and record.model:
            return record.unit, record.model
        if meter in configured and configured[meter][0] and configured[meter][1]:
            return configured[meter]  # type: ignore[return-value]
        raise StorageError(f"Modbus meter {meter} has no unit id and register map")

    return ModbusDriver(ModbusMeterClient(settings), lookup, policy.relay_confirm_attempts,
                        policy.relay_backoff)
