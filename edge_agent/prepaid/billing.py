"""Billing: a pure function of (meter billing state, register reading, tariff) -> ledger entries.

Charges follow the register, never the clock: the energy billed is the increase of the meter's
register since the last billed reading (times the CT/PT multiplier), so a clock that jumps
backwards cannot bill anything twice, and a register that goes backwards (a bad read, a
cleared meter) bills nothing until it climbs past the last billed value, unless it wrapped
past its maximum (999999.99 -> 0.50): that is billed as the wrapped delta (`rollover_delta`).
Entry ids derive from a per-meter sequence kept in the same state, so storing the state and
the entries in one transaction makes re-billing after a crash a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from edge_agent.prepaid.money import ZERO, format_money
from edge_agent.prepaid.records import Event, LedgerEntry, MeterBilling, RegisterReading
from edge_agent.prepaid.tariff import (
    NO_ACCOUNT,
    Account,
    Tariff,
    daily_charge_days,
    price_interval,
)


@dataclass(frozen=True)
class BillResult:
    state: MeterBilling
    entries: list[LedgerEntry]
    events: list[Event]
    kwh: Decimal = ZERO  # energy billed (after multiplier)


DEFAULT_REGISTER_MAX = Decimal("999999.99")
ROLLOVER_SHARE = Decimal("0.1")  # a wrap bills at most this share of the register's range


def rollover_delta(last: Decimal, kwh: Decimal, register_max: Decimal) -> Decimal | None:
    """The energy used when the register fell from `last` to `kwh` by wrapping past its
    maximum (999999.99 -> 0.00), or None when the fall is not a wrap (a bad read, a cleared
    meter: a `register_decrease`).  A wrap is a fall from near the maximum to near zero: the
    wrapped delta is small beside the register's range."""
    step = Decimal(1).scaleb(min(register_max.as_tuple().exponent, 0))  # type: ignore[arg-type]
    modulus = register_max + step  # 999999.99 is followed by 0.00
    delta = modulus - last + kwh
    if kwh < 0 or last > register_max or not ZERO < delta <= modulus * ROLLOVER_SHARE:
        return None
    return delta


def bill(state: MeterBilling, reading: RegisterReading, tariff: Tariff, tz: ZoneInfo,
         gateway: str, tier_bonus: Decimal = ZERO,
         register_max: Decimal = DEFAULT_REGISTER_MAX) -> BillResult:
    """Bill one reading of one meter (`tier_bonus`: the account's household tier bonus;
    `register_max`: where the meter's energy register wraps)."""
    entries: list[LedgerEntry] = []
    events: list[Event] = []
    if state.last_kwh is None or state.last_ts is None:
        # First reading after commissioning: it is the baseline, it bills nothing.
        return BillResult(replace(state, last_kwh=reading.kwh, last_rates=reading.rates,
                                  last_ts=reading.ts), [], [])
    when = max(reading.ts, state.last_ts)  # billing time never runs backwards
    entries += _daily(state, when, tariff, tz, gateway)
    last_daily = entries[-1].ts.astimezone(tz).date() if entries else state.last_daily
    delta = reading.kwh - state.last_kwh
    if delta < 0:
        wrapped = rollover_delta(state.last_kwh, reading.kwh, register_max)
        if wrapped is None:
            events.append(Event("register_decrease", "warning", when, state.meter,
                                state.account,
                                {"last_kwh": str(state.last_kwh), "kwh": str(reading.kwh)}))
            return BillResult(replace(state, last_daily=last_daily), entries, events)
        events.append(Event("register_rollover", "info", when, state.meter, state.account,
                            {"last_kwh": str(state.last_kwh), "kwh": str(reading.kwh),
                             "register_max": str(register_max), "delta": str(wrapped)}))
        delta = wrapped
    if delta == 0:
        return BillResult(replace(state, last_rates=reading.rates, last_ts=when,
                                  last_daily=last_daily), entries, events)
    kwh = delta * state.multiplier
    rate_kwh = None
    if reading.rates is not None and state.last_rates is not None:
        rate_kwh = [(new - old) * state.multiplier
                    for new, old in zip(reading.rates, state.last_rates, strict=True)]
        if any(part < 0 for part in rate_kwh):
            rate_kwh = None
    account = NO_ACCOUNT
    if tier_bonus or tariff.prorate or tariff.later:
        since = state.commissioned_at.astimezone(tz).date() if state.commissioned_at else None
        account = Account(since, tier_bonus)
    priced = price_interval(tariff, state.last_ts, when, kwh, tz, state.tier,
                            state.allowance_state, rate_kwh, state.allowance, account)
    seq = state.charge_seq + 1
    if priced.cost:
        detail = {
            "kwh": str(kwh), "from": state.last_ts.isoformat(),  # "to" is the entry's ts
            "register": str(reading.kwh), "tariff": tariff.id,
            "pieces": [{"kwh": str(p.kwh), "price": str(p.price), "label": p.label}
                       for p in priced.pieces],
        }
        entries.append(LedgerEntry(f"{gateway}:charge:{state.meter}:{seq}", state.account,
                                   "charge", -priced.cost, when, state.meter, detail))
    if priced.credit:
        entries.append(LedgerEntry(
            f"{gateway}:allowance:{state.meter}:{seq}", state.account, "allowance",
            priced.credit, when, state.meter,
            {"kwh": str(priced.free_kwh), "month": priced.allowance.month,
             "value": format_money(priced.credit)}))
    # One construction of the next state (this is the hot path of every poll).
    new_state = MeterBilling(
        state.meter, state.account, state.tariff, state.multiplier, state.allowance,
        state.commissioned_at, reading.kwh, reading.rates, when, seq, priced.tier,
        priced.allowance, last_daily)
    return BillResult(new_state, entries, events, kwh)


def _daily(state: MeterBilling, when: datetime, tariff: Tariff, tz: ZoneInfo,
           gateway: str) -> list[LedgerEntry]:
    if not (tariff.daily_charge or any(v.daily_charge for v in tariff.later)):
        return []
    start = (state.commissioned_at or state.last_ts or when).astimezone(tz).date()
    days = daily_charge_days(state.last_daily, when.astimezone(tz).date(), start)
    entries = []
    for day in days:
        # The version of the tariff in force at the start of the day sets the day's charge.
        charge = tariff.at(datetime(day.year, day.month, day.day, tzinfo=tz), tz).daily_charge \
            if tariff.later else tariff.daily_charge
        if charge:
            entries.append(LedgerEntry(
                f"{gateway}:daily:{state.meter}:{day.isoformat()}", state.account, "charge",
                -charge, when, state.meter,
                {"fixed": "daily", "day": day.isoformat(), "tariff": tariff.id}))
    return entries
