"""Tariff pricing with hand-computed figures, and `tariff check` style validation."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.errors import TariffError
from edge_agent.prepaid.tariff import (
    AllowanceState,
    TierState,
    load_tariff,
    price_interval,
    split_energy,
    tariff_from_text,
)

TZ = ZoneInfo("Asia/Shanghai")
TARIFFS = Path(__file__).resolve().parents[2] / "config" / "tariffs"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


def test_flat() -> None:
    t = load_tariff(TARIFFS / "flat.toml")
    priced = price_interval(t, at("2026-11-22 10:00"), at("2026-11-22 10:15"), D("10.00"), TZ)
    assert priced.cost == D("5.6000")


def test_seasonal_tier_example_as_written_crossing_inside_interval() -> None:
    t = load_tariff(TARIFFS / "winter-tiered.toml")
    # 1100 kWh already used this winter; 50 kWh more: 20 at 0.56 and 30 at 0.61.
    priced = price_interval(t, at("2027-01-10 10:00"), at("2027-01-10 11:00"), D("50.00"), TZ,
                            tier=TierState("winter:2026", D("1100")))
    assert [(p.kwh, p.price) for p in priced.pieces] == [(D("20.00"), D("0.56")),
                                                        (D("30.00"), D("0.61"))]
    assert priced.cost == D("29.5000")
    assert priced.tier == TierState("winter:2026", D("1150.00"))


def test_season_start_resets_the_tier_and_off_season_uses_price() -> None:
    t = load_tariff(TARIFFS / "winter-tiered.toml")
    # Interval from 14 Nov 12:00 to 15 Nov 12:00: half off-season, half in the new winter.
    priced = price_interval(t, at("2026-11-14 12:00"), at("2026-11-15 12:00"), D("2000.00"),
                            TZ, tier=TierState("winter:2025", D("5000")))
    labels = [(p.label, p.kwh, p.price) for p in priced.pieces]
    assert labels == [("off-season", D("1000.00"), D("0.56")),
                      ("winter:2026/tier1", D("1000.00"), D("0.56"))]
    priced = price_interval(t, at("2026-11-20 00:00"), at("2026-11-20 01:00"), D("200.00"),
                            TZ, tier=priced.tier)
    assert [(p.kwh, p.price) for p in priced.pieces] == [(D("120.00"), D("0.56")),
                                                        (D("80.00"), D("0.61"))]


def test_tou_window_boundary_split_by_time() -> None:
    t = load_tariff(TARIFFS / "residential-tou.toml")
    priced = price_interval(t, at("2026-11-22 21:30"), at("2026-11-22 22:30"), D("2.00"), TZ)
    assert [(p.label, p.kwh) for p in priced.pieces] == [("peak", D("1.00")),
                                                        ("valley", D("1.00"))]
    assert priced.cost == D("0.8000") + D("0.3000")


def test_tou_uses_meter_registers_when_present() -> None:
    t = load_tariff(TARIFFS / "residential-tou.toml")
    priced = price_interval(t, at("2026-11-22 21:30"), at("2026-11-22 22:30"), D("2.00"), TZ,
                            rate_kwh=[D(0), D("1.50"), D(0), D("0.50")])
    assert priced.cost == D("1.50") * D("0.8") + D("0.50") * D("0.3")


def test_allowance_at_month_change() -> None:
    t = load_tariff(TARIFFS / "flat-lowincome.toml")
    # 8 of October's 10 free kWh used; 4 kWh from 31 Oct 23:00 to 1 Nov 01:00:
    # 2 kWh in October (2 free left) and 2 kWh in November (fresh 10).
    priced = price_interval(t, at("2026-10-31 23:00"), at("2026-11-01 01:00"), D("4.00"), TZ,
                            allowance=AllowanceState("2026-10", D("8")))
    assert priced.cost == D("2.2400")
    assert priced.free_kwh == D("4.00") and priced.credit == D("2.2400")
    assert priced.allowance == AllowanceState("2026-11", D("2.00"))
    priced = price_interval(t, at("2026-11-02 00:00"), at("2026-11-02 01:00"), D("9.00"), TZ,
                            allowance=priced.allowance)
    assert priced.free_kwh == D("8.00") and priced.credit == D("4.4800")
    assert priced.cost - priced.credit == D("0.5600")


def test_split_energy_is_exact() -> None:
    spans = [(at("2026-01-01 00:00"), at("2026-01-01 00:07")),
             (at("2026-01-01 00:07"), at("2026-01-01 00:10")),
             (at("2026-01-01 00:10"), at("2026-01-01 00:11"))]
    parts = split_energy(D("0.05"), spans)
    # exact running totals 3.18, 4.55, 5 units round to 3, 5, 5: shares 3, 2, 0 (rounding
    # each part, as before issue 14, gave 3, 1, 1; see docs/prepaid.md "Rounding")
    assert sum(parts) == D("0.05") and parts == [D("0.03"), D("0.02"), D("0.00")]


def test_tariff_check_reports_every_error_with_location() -> None:
    text = """
[tariff]
id = "broken"
colour = "red"
[energy]
type = "tou"
prices = { peak = "0.8", valley = "0.30001", midday = "0.4" }
windows = [
  { start = "00:00", end = "09:00", rate = "valley" },
  { start = "08:00", end = "22:00", rate = "peak" },
  { start = "22:00", end = "23:00", rate = "shoulder" },
]
"""
    with pytest.raises(TariffError) as info:
        tariff_from_text(text, "broken.toml")
    problems = "\n".join(info.value.problems)
    assert "[tariff]: unknown key 'colour'" in problems
    assert "[energy].prices.valley: price '0.30001' has more than 4 decimals" in problems
    assert "[energy].prices.midday: unknown rate" in problems
    assert "windows: 08:00-22:00 overlaps" in problems
    assert "windows[2].rate: 'shoulder' has no price" in problems
    assert "23:00-24:00 is not covered" in problems


def test_tiers_must_increase_and_end_open() -> None:
    with pytest.raises(TariffError) as info:
        tariff_from_text("""
[tariff]
id = "t"
[energy]
type = "tiered"
period = "month"
blocks = [ { up_to = "200", price = "0.5" }, { up_to = "100", price = "0.6" } ]
""")
    problems = "\n".join(info.value.problems)
    assert "blocks[1].up_to: 100 must exceed the block before (200)" in problems
    assert "the last block must have no up_to" in problems


def test_float_prices_are_refused() -> None:
    with pytest.raises(TariffError, match="decimal string"):
        tariff_from_text('[tariff]\nid="x"\n[energy]\ntype="flat"\nprice=0.56\n')


def test_shipped_tariffs_are_valid() -> None:
    for path in TARIFFS.glob("*.toml"):
        assert load_tariff(path).id == path.stem
