"""Billing a gap from the meter's daily freezes: boundaries fall where the meter froze them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from edge_agent.grid.backfill import FrozenDay, bill_frozen, freezes_to_read, needs_backfill
from edge_agent.prepaid.billing import bill
from edge_agent.prepaid.records import MeterBilling, RegisterReading
from edge_agent.prepaid.tariff import tariff_from_text

TZ = ZoneInfo("Asia/Shanghai")
M = "000000000001"
MONTHLY_TIERS = tariff_from_text("""
[tariff]
id = "monthly-tiers"
[energy]
type = "tiered"
period = "month"
blocks = [ { up_to = "50", price = "0.50" }, { price = "0.80" } ]
""")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=TZ)  # type: ignore[misc]


def billed_state() -> MeterBilling:
    """Commissioned 1 March at 0 kWh, last billed 30 March 12:00 at 40 kWh (tier: 40 used)."""
    state = MeterBilling(M, "acct", "monthly-tiers")
    for ts, kwh in ((at(2026, 3, 1), D(0)), (at(2026, 3, 30, 12), D(40))):
        state = bill(state, RegisterReading(M, ts, kwh), MONTHLY_TIERS, TZ, "gw").state
    return state


def freeze(day: int, month: int, kwh: str) -> FrozenDay:
    return FrozenDay(M, datetime(2026, month, day), (D(kwh), D(0), D(0), D(kwh), D(0)))


def test_freezes_to_read() -> None:
    today = date(2026, 4, 2)
    assert freezes_to_read(today, []) == [1, 2, 3]
    assert freezes_to_read(today, [date(2026, 4, 1), date(2026, 3, 30)]) == [2]
    assert freezes_to_read(today, [], days=7)[-1] == 7
    with pytest.raises(ValueError):
        freezes_to_read(today, [], days=8)


def test_freeze_closes_the_day_before() -> None:
    assert freeze(1, 4, "1").day == date(2026, 3, 31)


def test_gap_billed_from_freezes_crosses_tier_and_month_where_frozen() -> None:
    state = billed_state()
    # the meter used 12 kWh to 31 Mar 00:00, then 72 kWh on 31 March, then 36 kWh by noon
    done = bill_frozen(state, [freeze(1, 4, "124"), freeze(31, 3, "52")], MONTHLY_TIERS, TZ,
                       "gw")
    assert [f.day for f in done.billed] == [date(2026, 3, 30), date(2026, 3, 31)]
    charges = [e for e in done.entries if e.kind == "charge"]
    assert [e.ts for e in charges] == [at(2026, 3, 31), at(2026, 4, 1)]
    assert [-e.amount for e in charges] == [D("6.60"), D("57.60")]  # 10x0.5+2x0.8, 72x0.8
    assert [e.id for e in charges] == ["gw:charge:000000000001:2", "gw:charge:000000000001:3"]
    assert done.state.tier.used == D(124 - 40 + 40)  # still March: 40 + 12 + 72
    live = bill(done.state, RegisterReading(M, at(2026, 4, 1, 12), D(160)), MONTHLY_TIERS, TZ,
                "gw")
    assert -live.entries[0].amount == D("18.00")  # April starts at the first block
    assert done.events[-1].type == "frozen_backfill"


def test_proportional_split_would_have_billed_differently() -> None:
    """Why: the same gap billed as one reading spreads 120 kWh evenly over 48 hours."""
    state = billed_state()
    one = bill(state, RegisterReading(M, at(2026, 4, 1, 12), D(160)), MONTHLY_TIERS, TZ, "gw")
    assert -sum(e.amount for e in one.entries) == D("84.00")  # 82.20 from the freezes


def test_freezes_before_the_last_billed_reading_are_skipped() -> None:
    state = billed_state()
    done = bill_frozen(state, [freeze(30, 3, "28"), freeze(31, 3, "52")], MONTHLY_TIERS, TZ,
                       "gw")
    assert [f.at.day for f in done.skipped] == [30] and len(done.billed) == 1
    assert needs_backfill(state, datetime(2026, 3, 31), TZ)
    assert not needs_backfill(state, datetime(2026, 3, 30), TZ)
    again = bill_frozen(done.state, [freeze(31, 3, "52")], MONTHLY_TIERS, TZ, "gw")
    assert again.entries == [] and again.events == []  # idempotent


def test_gap_billed_in_proportion_is_corrected_by_a_new_entry() -> None:
    from edge_agent.grid.backfill import (
        correct_gap,
        is_gap,
        reconcile,
        state_from_dict,
        state_to_dict,
    )

    before = billed_state()
    one = bill(before, RegisterReading(M, at(2026, 4, 1, 12), D(160)), MONTHLY_TIERS, TZ, "gw")
    assert is_gap(before, one.state)
    billed = sum(e.amount for e in one.entries)
    assert billed == D("-84.00")
    fix = correct_gap(state_from_dict(state_to_dict(before)), one.state, billed,
                      [freeze(1, 4, "124"), freeze(31, 3, "52"), freeze(30, 3, "28")],
                      MONTHLY_TIERS, TZ, "gw", at(2026, 4, 2, 0, 5))
    assert fix is not None and fix.entry is not None
    assert (fix.entry.id, fix.entry.kind, fix.entry.amount) == (
        "gw:frozen-correction:000000000001:2", "adjustment", D("1.80"))  # 84.00 -> 82.20
    assert len(fix.freezes) == 2  # the freeze before the span is not inside it
    assert one.state.tier.used == D(30)  # April's share in proportion to time
    assert reconcile(one.state, one.state, fix.repriced).tier.used == D(36)  # as frozen
    assert correct_gap(before, one.state, billed, [], MONTHLY_TIERS, TZ, "gw",
                       at(2026, 4, 2)) is None
    assert state_from_dict(state_to_dict(one.state)) == one.state


def test_settlement_moments_for_a_gap_longer_than_the_daily_freezes() -> None:
    from edge_agent.grid.backfill import settlements, settlements_to_read

    now = datetime(2026, 4, 6, 10)
    assert settlements(now, count=3) == [datetime(2026, 4, 1), datetime(2026, 3, 1),
                                         datetime(2026, 2, 1)]
    assert settlements(datetime(2026, 1, 1), count=2) == [datetime(2026, 1, 1),
                                                          datetime(2025, 12, 1)]
    assert settlements_to_read(now, datetime(2026, 2, 20), datetime(2026, 4, 4)) == [
        (1, datetime(2026, 4, 1)), (2, datetime(2026, 3, 1))]
    assert settlements_to_read(now, datetime(2026, 4, 2), datetime(2026, 4, 4)) == []
