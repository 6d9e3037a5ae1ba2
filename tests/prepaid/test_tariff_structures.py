"""The tariff structures of issue 14, each priced by hand (figures worked in the comments)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from edge_agent.errors import TariffError
from edge_agent.prepaid.tariff import (
    Account,
    TierState,
    load_tariff,
    price_interval,
    tariff_from_text,
)
from tests.helpers import TARIFFS, TZ, at


def pieces(priced) -> list[tuple[str, D, D]]:
    return [(p.label, p.kwh, p.price) for p in priced.pieces]


def test_shanghai_tier_prices_per_rate_split_by_time() -> None:
    # 3100 kWh used in 2026; 40 kWh from 21:00 to 23:00: 20 peak (21-22), 20 valley (22-23).
    # Peak: 3100 -> 3120 is tier 1: 20 x 0.617 = 12.34.  Valley: 3120 -> 3140 is tier 2:
    # 20 x 0.337 = 6.74.  Total 19.08.
    t = load_tariff(TARIFFS / "shanghai-tou-tiers.toml")
    priced = price_interval(t, at("2026-06-10 21:00"), at("2026-06-10 23:00"), D("40.00"), TZ,
                            tier=TierState("2026", D("3100")))
    assert pieces(priced) == [("peak:tier1", D("20.00"), D("0.6170")),
                              ("valley:tier2", D("20.00"), D("0.3370"))]
    assert priced.cost == D("19.08") and priced.tier == TierState("2026", D("3140.00"))


def test_shanghai_with_meter_registers_fills_tiers_in_register_order() -> None:
    # Registers: peak 15, valley 25; 3110 used.  Peak 10 x 0.617 = 6.17 (tier 1 full at 3120)
    # + 5 x 0.677 = 3.385; valley 25 x 0.337 = 8.425.  Total 17.98.
    t = load_tariff(TARIFFS / "shanghai-tou-tiers.toml")
    priced = price_interval(t, at("2026-06-10 21:00"), at("2026-06-10 23:00"), D("40.00"), TZ,
                            tier=TierState("2026", D("3110")),
                            rate_kwh=[D(0), D("15.00"), D(0), D("25.00")])
    assert pieces(priced) == [("peak:tier1", D("10.00"), D("0.6170")),
                              ("peak:tier2", D("5.00"), D("0.6770")),
                              ("valley:tier2", D("25.00"), D("0.3370"))]
    assert priced.cost == D("17.98")


def test_guangdong_surcharge_on_tou_with_summer_thresholds() -> None:
    # July (summer, tier 1 up to 260): 250 used; 20 kWh 09:00-11:00: 10 flat (09-10), 10 peak
    # (10-11).  Flat 10 fills tier 1: 10 x 0.588 = 5.88; peak 10 in tier 2: 10 x (0.9996 +
    # 0.05) = 10.496.  Total 16.376.
    t = load_tariff(TARIFFS / "guangdong-tou-tiers.toml")
    priced = price_interval(t, at("2026-07-15 09:00"), at("2026-07-15 11:00"), D("20.00"), TZ,
                            tier=TierState("2026-07", D("250")))
    assert pieces(priced) == [("flat:tier1", D("10.00"), D("0.5880")),
                              ("peak:tier2", D("10.00"), D("1.0496"))]
    assert priced.cost == D("16.376")


def test_guangdong_winter_thresholds_and_month_reset() -> None:
    # December (winter, tier 2 up to 400): 395 used; 10 kWh flat 20:00-21:00: 5 x 0.638 (tier 2)
    # = 3.19 and 5 x 0.888 (tier 3) = 4.44.  Total 7.63.  (In July the same 10 kWh would all be
    # tier 2: the summer threshold is 600.)
    t = load_tariff(TARIFFS / "guangdong-tou-tiers.toml")
    priced = price_interval(t, at("2026-12-15 20:00"), at("2026-12-15 21:00"), D("10.00"), TZ,
                            tier=TierState("2026-12", D("395")))
    assert pieces(priced) == [("flat:tier2", D("5.00"), D("0.6380")),
                              ("flat:tier3", D("5.00"), D("0.8880"))]
    assert priced.cost == D("7.63")
    summer = price_interval(t, at("2026-07-15 20:00"), at("2026-07-15 21:00"), D("10.00"), TZ,
                            tier=TierState("2026-07", D("395")))
    assert pieces(summer) == [("flat:tier2", D("10.00"), D("0.6380"))]
    # 700 used in October (tier 3); 4 kWh 31 Oct 23:00 - 1 Nov 01:00: 2 flat in October at
    # 0.588 + 0.30 = 0.888 (1.776), 2 valley in November, a new month, tier 1 at 0.294 (0.588).
    # Total 2.364.
    priced = price_interval(t, at("2026-10-31 23:00"), at("2026-11-01 01:00"), D("4.00"), TZ,
                            tier=TierState("2026-10", D("700")))
    assert pieces(priced) == [("flat:tier3", D("2.00"), D("0.8880")),
                              ("valley:tier1", D("2.00"), D("0.2940"))]
    assert priced.cost == D("2.364") and priced.tier == TierState("2026-11", D("2.00"))


def test_critical_peak_only_in_july_and_august() -> None:
    # July 15, 8 kWh 10:00-14:00, 2 an hour: peak 10-11 (2 x 1.0), sharp 11-13 (4 x 1.2), flat
    # 13-14 (2 x 0.6): 2.0 + 4.8 + 1.2 = 8.0.  June: peak 10-13 (6 x 1.0) + flat 2 x 0.6 = 7.2.
    t = load_tariff(TARIFFS / "beijing-critical-peak.toml")
    july = price_interval(t, at("2026-07-15 10:00"), at("2026-07-15 14:00"), D("8.00"), TZ)
    assert pieces(july) == [("peak", D("2.00"), D("1.0000")), ("sharp", D("4.00"), D("1.2000")),
                            ("flat", D("2.00"), D("0.6000"))]
    assert july.cost == D("8.0")
    june = price_interval(t, at("2026-06-15 10:00"), at("2026-06-15 14:00"), D("8.00"), TZ)
    assert pieces(june) == [("peak", D("6.00"), D("1.0000")), ("flat", D("2.00"), D("0.6000"))]
    assert june.cost == D("7.2")
    # 16:00-17:00: sharp in August (1.2), flat in September (0.6).
    aug = price_interval(t, at("2026-08-31 16:00"), at("2026-08-31 17:00"), D("1.00"), TZ)
    sep = price_interval(t, at("2026-09-01 16:00"), at("2026-09-01 17:00"), D("1.00"), TZ)
    assert (aug.cost, sep.cost) == (D("1.2"), D("0.6"))


def test_seasonal_tou_windows() -> None:
    # 6 kWh 12:00-18:00, 1 an hour.  Summer (July): flat 12-13, peak 13-17, flat 17-18:
    # 0.56 + 4 x 0.9 + 0.56 = 4.72.  Winter (December): flat 12-17, peak 17-18: 5 x 0.56 + 0.9
    # = 3.70.  April (no season): flat 6 x 0.56 = 3.36.
    t = load_tariff(TARIFFS / "seasonal-tou.toml")

    def cost(day: str) -> D:
        return price_interval(t, at(f"{day} 12:00"), at(f"{day} 18:00"), D("6.00"), TZ).cost

    assert (cost("2026-07-15"), cost("2026-12-15"), cost("2026-04-15")) == (
        D("4.72"), D("3.70"), D("3.36"))
    # Across the end of summer, 24 kWh from 31 Aug 16:00 to 1 Sep 16:00, 1 an hour: peak
    # 16-17 (0.9), flat 17-24 (7 x 0.56 = 3.92), valley 00-08 (8 x 0.3 = 2.4), flat 08-16
    # (spring/autumn windows: 8 x 0.56 = 4.48).  Total 11.70.
    priced = price_interval(t, at("2026-08-31 16:00"), at("2026-09-01 16:00"), D("24.00"), TZ)
    assert [(p.label, p.kwh) for p in priced.pieces] == [
        ("peak", D("1.00")), ("flat", D("7.00")), ("valley", D("8.00")), ("flat", D("8.00"))]
    assert priced.cost == D("11.70")


def test_yearly_tiers_prorated_for_a_part_year() -> None:
    # Connected 10 May 2026: 8 months left (May counts whole), thresholds 2880 x 8/12 = 1920
    # and 4800 x 8/12 = 3200.  1900 used; 50 kWh: 20 x 0.4883 = 9.766 + 30 x 0.5383 = 16.149,
    # total 25.915.  In 2027 the full 2880 applies: 50 x 0.4883 = 24.415.
    t = load_tariff(TARIFFS / "beijing-yearly-tiers.toml")
    may = Account(since=date(2026, 5, 10))
    priced = price_interval(t, at("2026-09-01 10:00"), at("2026-09-01 11:00"), D("50.00"), TZ,
                            tier=TierState("2026", D("1900")), account=may)
    assert pieces(priced) == [("tier1", D("20.00"), D("0.4883")),
                              ("tier2", D("30.00"), D("0.5383"))]
    assert priced.cost == D("25.915")
    later = price_interval(t, at("2027-09-01 10:00"), at("2027-09-01 11:00"), D("50.00"), TZ,
                           tier=TierState("2027", D("1900")), account=may)
    assert later.cost == D("24.415")


def test_household_tier_bonus() -> None:
    # +100 kWh on every threshold: 2980 / 4900.  2900 used, 50 kWh: all tier 1, 50 x 0.4883
    # = 24.415; without the bonus all tier 2, 50 x 0.5383 = 26.915.
    t = load_tariff(TARIFFS / "beijing-yearly-tiers.toml")

    def cost(bonus: str) -> D:
        return price_interval(t, at("2027-03-01 10:00"), at("2027-03-01 11:00"), D("50.00"),
                              TZ, tier=TierState("2027", D("2900")),
                              account=Account(tier_bonus=D(bonus))).cost

    assert (cost("100"), cost("0")) == (D("24.415"), D("26.915"))


@pytest.mark.parametrize(("change", "problem"), [
    ('{ up_to = "260" }, { up_to = "600", surcharge = "0.05" }',
     "the last block must have no up_to"),
    ('{ up_to = "260", surcharge = "0.05", prices = { peak = "1" } }, { surcharge = "0.30" }',
     "give surcharge or prices, not both"),
    ('{ up_to = "260", prices = { peak = "1" } }, { surcharge = "0.30" }',
     "prices: flat is missing"),
])
def test_tou_tier_blocks_are_validated(change: str, problem: str) -> None:
    text = (TARIFFS / "guangdong-tou-tiers.toml").read_text().replace(
        '{ up_to = "260" }, { up_to = "600", surcharge = "0.05" }, { surcharge = "0.30" }',
        change)
    with pytest.raises(TariffError) as info:
        tariff_from_text(text, "g.toml")
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_critical_windows_may_not_overlap_in_a_month_and_prorate_needs_a_year() -> None:
    text = (TARIFFS / "beijing-critical-peak.toml").read_text().replace(
        '"16:00", end = "17:00", rate = "sharp", months = [7, 8]',
        '"12:00", end = "17:00", rate = "sharp", months = [8, 9]')
    with pytest.raises(TariffError) as info:
        tariff_from_text(text, "b.toml")
    assert any("overlap in month 8" in p for p in info.value.problems)
    text = (TARIFFS / "beijing-yearly-tiers.toml").read_text().replace('"year"', '"month"')
    with pytest.raises(TariffError) as info:
        tariff_from_text(text, "y.toml")
    assert any("prorate: only with period" in p for p in info.value.problems)


def test_season_windows_must_cover_the_day() -> None:
    text = (TARIFFS / "seasonal-tou.toml").read_text().replace(
        '{ start = "17:00", end = "24:00", rate = "flat" },\n]', ']', 1)
    with pytest.raises(TariffError) as info:
        tariff_from_text(text, "s.toml")
    assert info.value.problems == [
        "s.toml: [energy].seasons[0].windows: 17:00-24:00 is not covered"]
