"""Meter drivers: one poll of one meter, and relay actions, per protocol.

A driver turns a protocol client's answers into a `Poll` for the processor, so the daemon can
treat DL/T 645 and Modbus meters alike.  A meter that does not answer gives `Poll(ok=False)`;
it is never an error that stops the cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from edge_agent.billing import RegisterReading
from edge_agent.dlt645_client import Dlt645Client, relay_state
from edge_agent.errors import EXPECTED_ERRORS, MeterAbnormalReply
from edge_agent.processing import Poll
from protocols.dlt645 import catalogue

log = logging.getLogger(__name__)


class Dlt645Driver:
    """DL/T 645 meters: energy block (total + 4 rates), status word 3 (2007 only), extra
    quantities."""

    def __init__(self, client: Dlt645Client, confirm_attempts: int = 3,
                 backoff: float = 1.0, now: Callable[[], datetime] = datetime.now) -> None:
        self.client = client
        self.protocol = client.protocol
        self.confirm_attempts = confirm_attempts
        self.backoff = backoff
        self._now = now
        self._no_block: set[str] = set()  # meters that refused the block read

    def poll(self, meter: str, quantities: tuple[str, ...], now: datetime) -> Poll:
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
            if rates is not None:
                values += [(f"forward_active_rate{n}", str(r)) for n, r in enumerate(rates, 1)]
            status: int | None = None
            if self.client.version != "1997":  # 1997 meters have no status word 3
                status = int(self.client.status3(meter))
                values.append(("status_word_3", f"{status:04X}"))
            for name in quantities:
                try:
                    self.client.lookup(name)
                except KeyError:
                    continue  # not a quantity of this protocol version
                try:
                    reading = self.client.read(meter, name)
                    values.append((reading.name, str(catalogue.format_value(reading.value))))
                except MeterAbnormalReply:
                    continue  # this meter does not have that quantity
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

    def read(self, meter: str, quantities: list[str]) -> list[dict[str, object]]:
        return [{"meter": r.meter, "name": r.name, "di": r.di,
                 "value": catalogue.format_value(r.value), "unit": r.unit}
                for r in self.client.read_many(meter, quantities)]

    def scan(self, timeout: float | None = None) -> list[str]:
        return self.client.scan(timeout=timeout)
