"""Frozen-data backfill: which daily freezes to read, and billing a gap from them.

A DL/T 645-2007 meter freezes its registers at its own midnight (daily frozen data 0506xxNN,
the NNth last freeze) and on its settlement day (0001FFNN).  When the gateway missed days, it
reads the last N freezes (default 3, at most 7) and bills the gap as a chain of readings taken
at the freeze times, through the same `prepaid.billing.bill` as every poll: so a day, a month, a
tier block, a season and a TOU rate split fall where the meter froze them, not where a
proportional split of the whole gap would put them.  A freeze is billed only when it lies after
the last billed reading (billing follows the register and never bills a span twice); a gap
that was already billed in proportion to time (the freezes could not be read first) is never
edited: `correct_gap` reprices it from the freezes and the difference is a new `adjustment`
entry with its own id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.prepaid.billing import DEFAULT_REGISTER_MAX, bill, rollover_delta
from edge_agent.prepaid.money import ZERO
from edge_agent.prepaid.records import Event, LedgerEntry, MeterBilling, RegisterReading
from edge_agent.prepaid.tariff import AllowanceState, Tariff, TierState

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


def settlements(now: datetime, day: int = 1, hour: int = 0, count: int = 12) -> list[datetime]:
    """The meter's settlement-day freeze moments at or before `now` (local, naive), newest
    first: the NNth is what `0001FF<NN>` holds.  `day`/`hour` must match the meter's
    settlement-day parameter (04000B01)."""
    moments = []
    year, month = now.year, now.month
    while len(moments) < count:
        moment = datetime(year, month, day, hour)
        if moment <= now:
            moments.append(moment)
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return moments


def settlements_to_read(now: datetime, last_billed: datetime, earliest_daily: datetime,
                        day: int = 1, hour: int = 0) -> list[tuple[int, datetime]]:
    """(NN, moment) of the settlement freezes a backfill needs: those after the last billed
    reading and before the oldest daily freeze it could read (a gap longer than the daily
    freezes kept or configured still gets its month boundaries where the meter froze them)."""
    return [(n, moment) for n, moment in enumerate(settlements(now, day, hour), 1)
            if last_billed < moment < earliest_daily]


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
                tz: ZoneInfo, gateway: str, tier_bonus: Decimal = ZERO,
                register_max: Decimal = DEFAULT_REGISTER_MAX) -> Backfill:
    """Bill the freezes that lie after the last billed reading (none before the first
    reading), oldest first, as readings
    (`tier_bonus`, `register_max`: the account's and the meter's, as a poll bills them)."""
    entries: list[LedgerEntry] = []
    events: list[Event] = []
    billed, skipped = [], []
    for freeze in sorted(freezes, key=lambda f: f.at):
        reading = freeze.reading(tz)
        # No reading yet: the meter's first live reading is its baseline; a freeze of the
        # days before it is not the account's consumption.
        if (state.last_ts is None or reading.ts <= state.last_ts
                or behind(state, reading, register_max)):
            skipped.append(freeze)
            continue
        result = bill(state, reading, tariff, tz, gateway, tier_bonus, register_max)
        state = result.state
        entries += result.entries
        events += result.events
        billed.append(freeze)
    if billed:
        events.append(Event("frozen_backfill", "info", billed[-1].reading(tz).ts, state.meter,
                            state.account, {"days": [f.day.isoformat() for f in billed],
                                            "entries": [e.id for e in entries]}))
    return Backfill(state, entries, events, billed, skipped)


def behind(state: MeterBilling, reading: RegisterReading,
           register_max: Decimal = DEFAULT_REGISTER_MAX) -> bool:
    """True when a freeze's register is below the last billed one and is no wrap past the
    register's maximum: a meter whose clock runs ahead froze before a poll that was already
    billed (its freeze is stamped later than the poll, its register is lower).  Billing it
    would raise a false `register_decrease`; a real decrease shows in the next poll."""
    return (state.last_kwh is not None and reading.kwh < state.last_kwh
            and rollover_delta(state.last_kwh, reading.kwh, register_max) is None)


def needs_backfill(state: MeterBilling, last_freeze: datetime, tz: ZoneInfo) -> bool:
    """True when the last billed reading is older than the meter's last freeze: the span up
    to that freeze has not been billed yet, so it can still be billed from frozen data."""
    at = last_freeze if last_freeze.tzinfo else last_freeze.replace(tzinfo=tz)
    return state.last_ts is not None and state.last_ts < at


GAP = timedelta(hours=24)  # a span billed from one reading this long is worth correcting


def is_gap(before: MeterBilling, after: MeterBilling) -> bool:
    """True when `after` billed one reading over a day or more since `before` (an outage)."""
    return (before.last_ts is not None and after.last_ts is not None
            and after.charge_seq == before.charge_seq + 1
            and after.last_ts - before.last_ts >= GAP)


@dataclass(frozen=True)
class Correction:
    entry: LedgerEntry | None  # None: the freezes change nothing
    repriced: MeterBilling  # the state at the span's end, billed from the freezes
    freezes: list[FrozenDay]


def correct_gap(before: MeterBilling, after: MeterBilling, billed: Decimal,
                freezes: Iterable[FrozenDay], tariff: Tariff, tz: ZoneInfo, gateway: str,
                now: datetime, tier_bonus: Decimal = ZERO,
                register_max: Decimal = DEFAULT_REGISTER_MAX) -> Correction | None:
    """Reprice a span that was billed in proportion to time (`before` -> `after`, `billed`:
    the signed sum of its charge and allowance entries) as a chain of readings at the freezes
    inside it.  The difference is a new `adjustment` entry with its own id
    (`<gw>:frozen-correction:<meter>:<seq of the gap's charge>`); nothing billed is edited.
    None when no freeze lies inside the span."""
    assert before.last_ts is not None and after.last_ts is not None
    assert after.last_kwh is not None
    inside = [f for f in freezes if before.last_ts < f.reading(tz).ts < after.last_ts]
    if not inside:
        return None
    chain = bill_frozen(before, inside, tariff, tz, gateway, tier_bonus, register_max)
    end = bill(chain.state, RegisterReading(after.meter, after.last_ts, after.last_kwh,
                                            after.last_rates), tariff, tz, gateway,
               tier_bonus, register_max)
    repriced = sum((e.amount for e in chain.entries + end.entries
                    if e.kind in ("charge", "allowance") and ":daily:" not in e.id), Decimal(0))
    amount = repriced - billed
    entry = None
    if amount:
        entry = LedgerEntry(
            f"{gateway}:frozen-correction:{after.meter}:{after.charge_seq}", after.account,
            "adjustment", amount, now, after.meter,
            {"reason": "frozen_correction", "from": before.last_ts.isoformat(),
             "to": after.last_ts.isoformat(), "billed": str(billed), "repriced": str(repriced),
             "freezes": [f.at.isoformat() for f in chain.billed]})
    return Correction(entry, end.state, chain.billed)


def reconcile(current: MeterBilling, after: MeterBilling, repriced: MeterBilling) -> MeterBilling:
    """Carry the repriced tier and allowance positions into the meter's current state: what
    the correction moved between periods moves in the running counters too."""
    tier, allowance = current.tier, current.allowance_state
    if repriced.tier.period == after.tier.period == tier.period:
        tier = replace(tier, used=tier.used + repriced.tier.used - after.tier.used)
    elif repriced.tier.period == tier.period != after.tier.period:
        tier = replace(tier, used=tier.used + repriced.tier.used)
    if repriced.allowance_state.month == after.allowance_state.month == allowance.month:
        allowance = replace(allowance, used=allowance.used + repriced.allowance_state.used
                            - after.allowance_state.used)
    return replace(current, tier=tier, allowance_state=allowance)


def state_to_dict(state: MeterBilling) -> dict[str, object]:
    """A billing state as JSON-able data (the concentrator keeps a gap's start with it)."""
    return {"meter": state.meter, "account": state.account, "tariff": state.tariff,
            "multiplier": state.multiplier, "allowance": state.allowance,
            "commissioned_at": state.commissioned_at and state.commissioned_at.isoformat(),
            "last_kwh": None if state.last_kwh is None else str(state.last_kwh),
            "last_rates": None if state.last_rates is None else [str(r) for r in
                                                                  state.last_rates],
            "last_ts": state.last_ts and state.last_ts.isoformat(),
            "charge_seq": state.charge_seq,
            "tier": [state.tier.period, str(state.tier.used)],
            "allowance_state": [state.allowance_state.month, str(state.allowance_state.used)],
            "last_daily": state.last_daily and state.last_daily.isoformat()}


def state_from_dict(data: dict[str, Any]) -> MeterBilling:
    def when(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text)

    return MeterBilling(
        data["meter"], data["account"], data["tariff"], data["multiplier"], data["allowance"],
        when(data["commissioned_at"]),
        None if data["last_kwh"] is None else Decimal(data["last_kwh"]),
        None if data["last_rates"] is None else tuple(Decimal(r) for r in data["last_rates"]),
        when(data["last_ts"]), data["charge_seq"],
        TierState(data["tier"][0], Decimal(data["tier"][1])),
        AllowanceState(data["allowance_state"][0], Decimal(data["allowance_state"][1])),
        None if data["last_daily"] is None else date.fromisoformat(data["last_daily"]))
