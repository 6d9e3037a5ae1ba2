"""Frozen-data backfill: which daily freezes to read, and billing a gap from them.

A DL/T 645-2007 meter freezes its registers at its own midnight (daily frozen data 0506xxNN,
the NNth last freeze) and on its settlement day (0001FFNN).  When the gateway missed days, it
reads the last N freezes (default 3, at most 7) and bills the gap as a chain of readings taken
at the freeze times, through the same `prepaid.billing.bill` as every poll: so a day, a month, a
tier block, a season and a TOU rate split fall where the meter froze them, not where a
proportional split of the whole gap would put them.  A freeze is billed only when it lies after
the last billed reading (billing follows the register and never bills a span twice); a gap
that was already billed in proportion to time is left as billed and reported, never edited (a
correction would be a new ledger entry with its own id).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from edge_agent.prepaid.billing import bill
from edge_agent.prepaid.records import Event, LedgerEntry, MeterBilling, RegisterReading
from edge_agent.prepaid.tariff import Tariff

DEFAULT_DAYS = 3
MAX_DAYS = 7


@dataclass(frozen=True)
class FrozenDay:
    """One daily freeze as the meter reported it: its own time of the freeze (local, naive)
    and the forward active registers then (total, rate 1..4)."""

    meter: str
    at: datetime
    forward: tuple[Decimal, ...]

    @property
    def day(self) -> date:
        """The day whose end this freeze closes (a freeze at 00:00 on the 3rd closes the 2nd)."""
        return (self.at - timedelta(minutes=1)).date()

    def reading(self, tz: ZoneInfo) -> RegisterReading:
        at = self.at if self.at.tzinfo else self.at.replace(tzinfo=tz)
        rates = tuple(self.forward[1:5]) if len(self.forward) >= 5 else None
        return RegisterReading(self.meter, at, self.forward[0], rates)


def freezes_to_read(today: date, have: Iterable[date], days: int = DEFAULT_DAYS) -> list[int]:
    """The NN (1 = last freeze, this midnight) of the daily freezes still missing, for the
    days that ended before `today`; `have` holds the days already on record."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"backfill days must be 1..{MAX_DAYS}, not {days}")
    known = set(have)
    return [n for n in range(1, days + 1) if today - timedelta(days=n) not in known]


@dataclass(frozen=True)
class Backfill:
    state: MeterBilling
    entries: list[LedgerEntry]
    events: list[Event]
    billed: list[FrozenDay]  # freezes billed as readings, oldest first
    skipped: list[FrozenDay]  # freezes at or before the last billed reading


def bill_frozen(state: MeterBilling, freezes: Iterable[FrozenDay], tariff: Tariff,
                tz: ZoneInfo, gateway: str) -> Backfill:
    """Bill the freezes that lie after the last billed reading, oldest first, as readings."""
    entries: list[LedgerEntry] = []
    events: list[Event] = []
    billed, skipped = [], []
    for freeze in sorted(freezes, key=lambda f: f.at):
        reading = freeze.reading(tz)
        if state.last_ts is not None and reading.ts <= state.last_ts:
            skipped.append(freeze)
            continue
        result = bill(state, reading, tariff, tz, gateway)
        state = result.state
        entries += result.entries
        events += result.events
        billed.append(freeze)
    if billed:
        events.append(Event("frozen_backfill", "info", billed[-1].reading(tz).ts, state.meter,
                            state.account, {"days": [f.day.isoformat() for f in billed],
                                            "entries": [e.id for e in entries]}))
    return Backfill(state, entries, events, billed, skipped)


def needs_backfill(state: MeterBilling, last_freeze: datetime, tz: ZoneInfo) -> bool:
    """True when the last billed reading is older than the meter's last freeze: the span up
    to that freeze has not been billed yet, so it can still be billed from frozen data."""
    at = last_freeze if last_freeze.tzinfo else last_freeze.replace(tzinfo=tz)
    return state.last_ts is not None and state.last_ts < at
