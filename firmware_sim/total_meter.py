"""A simulated total meter (总表) for line loss: its customers' energy, the line's loss, theft.

It measures on the primary side what its customer meters use, times (1 + `loss_rate`), plus a
`theft_kw` load that no customer meter sees; its registers show primary energy divided by the
CT x PT multiplier, as a real transformer-fed meter does.  Customers tell it what they used in
each world interval, so its freezes hold their energy at the very instant of its own midnight,
whichever meter the master happened to ask first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from .dlt645_meter import KWUS_PER_KWH, MICROSECOND, SimMeter


def _micros(span: timedelta) -> Decimal:
    return Decimal(span // MICROSECOND)


@dataclass
class SimTotalMeter(SimMeter):
    """A DL/T 645-2007 total meter fed by the energy of `customers` (which share its clock)."""

    customers: list[SimMeter] = field(default_factory=list)
    loss_rate: Decimal = Decimal(0)
    theft_kw: Decimal = Decimal(0)
    ct_ratio: int = 1
    pt_ratio: int = 1
    load_kw: Decimal = Decimal(0)  # unused: the total meter's load is its customers' and theft

    def __post_init__(self) -> None:
        if any(c.clock is not self.clock for c in self.customers):
            raise ValueError("a total meter and its customers must share one SimClock")
        super().__post_init__()
        self.primary = [Decimal(0)] * 5  # kW-us on the primary side, exact
        self._pending: list[tuple[datetime, datetime, Decimal, int]] = []
        self._pending_lock = threading.Lock()
        for customer in self.customers:
            customer.sync_to(self._world_last)
            customer.listeners.append(self._heard)

    @property
    def multiplier(self) -> int:
        return self.ct_ratio * self.pt_ratio

    def _heard(self, start: datetime, end: datetime, kwh: Decimal, rate: int) -> None:
        with self._pending_lock:
            self._pending.append((start, end, kwh, rate))

    def _integrate(self, start: datetime, end: datetime, rate: int) -> None:
        """Customers' energy up to `end` (times the loss), plus theft, all on the primary side."""
        for customer in self.customers:
            customer.sync_to(end)
        with self._pending_lock:
            taken, kept = [], []
            for a, b, kwh, r in self._pending:
                if b <= end:
                    taken.append((kwh, r))
                elif a < end:  # constant load within an interval: split it in proportion
                    part = kwh * _micros(end - a) / _micros(b - a)
                    taken.append((part, r))
                    kept.append((end, b, kwh - part, r))
                else:
                    kept.append((a, b, kwh, r))
            self._pending = kept
        factor = 1 + self.loss_rate
        for kwh, r in taken:
            self._add_primary(kwh * factor, r)
        self._add_primary(self._kwh(start, end, self.theft_kw), rate)

    def _add_primary(self, kwus: Decimal, rate: int) -> None:
        """Primary-side kW-us; the registers show them in kWh over the multiplier."""
        if kwus:
            self.primary[0] += kwus
            self.primary[rate] += kwus
            self.energy = [p / (KWUS_PER_KWH * self.multiplier) for p in self.primary]

    def live_kw(self) -> Decimal:
        used = sum((c.live_kw() for c in self.customers), Decimal(0))
        return (used * (1 + self.loss_rate) + self.theft_kw) / self.multiplier


def make_total_meter(address: str, customers: list[SimMeter], **kwargs: object) -> SimTotalMeter:
    """A total meter on its customers' clock; keywords are `SimTotalMeter` fields."""
    return SimTotalMeter(address=address, customers=customers,  # type: ignore[arg-type]
                         clock=customers[0].clock, **kwargs)
