"""Tariff versions with an effective time (issue 14, point 2)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from edge_agent.errors import TariffError
from edge_agent.prepaid.tariff import (
    combine_versions,
    price_interval,
    tariff_from_text,
    version_status,
)
from tests.helpers import TZ, at

V1 = '[tariff]\nid = "res"\n[energy]\ntype = "flat"\nprice = "0.5600"\n'
V2 = ('[tariff]\nid = "res"\neffective_from = 2027-01-01T00:00:00\n'
      '[energy]\ntype = "flat"\nprice = "0.6000"\n[fixed]\ndaily = "0.1000"\n')


def chain():
    return combine_versions([tariff_from_text(V2), tariff_from_text(V1)])["res"]


def test_an_interval_is_split_exactly_at_the_switch() -> None:
    # 4 kWh from 31 Dec 23:00 to 1 Jan 01:00 (local): 2 kWh before midnight at 0.56 (1.12),
    # 2 after at 0.60 (1.20).  Total 2.32.
    priced = price_interval(chain(), at("2026-12-31 23:00"), at("2027-01-01 01:00"),
                            D("4.00"), TZ)
    assert [(p.kwh, p.price) for p in priced.pieces] == [(D("2.00"), D("0.5600")),
                                                        (D("2.00"), D("0.6000"))]
    assert priced.cost == D("2.32")
    before = price_interval(chain(), at("2026-12-31 20:00"), at("2026-12-31 21:00"), D("1"), TZ)
    after = price_interval(chain(), at("2027-01-02 20:00"), at("2027-01-02 21:00"), D("1"), TZ)
    assert (before.cost, after.cost) == (D("0.5600"), D("0.6000"))


def test_status_of_versions_and_the_daily_charge_of_each_day(tmp_path) -> None:
    t = chain()
    assert [(v.effective_from is None, s) for v, s in
            version_status(t, at("2026-12-01 00:00"), TZ)] == [(True, "current"),
                                                               (False, "pending")]
    assert [s for _, s in version_status(t, at("2027-01-01 00:00"), TZ)] == [
        "superseded", "current"]
    # The fixed daily charge starts with the version that has it: billed through the
    # processor, days before 1 Jan owe nothing, 1 and 2 Jan owe 0.10 each.
    from edge_agent.prepaid.billing import bill
    from edge_agent.prepaid.records import MeterBilling, RegisterReading

    state = MeterBilling("m1", "A1", "res", commissioned_at=at("2026-12-30 08:00"),
                         last_kwh=D("10"), last_ts=at("2026-12-30 08:00"))
    result = bill(state, RegisterReading("m1", at("2027-01-02 08:00"), D("10")), t, TZ, "gw")
    assert [(e.detail["day"], e.amount) for e in result.entries] == [
        ("2027-01-01", D("-0.1000")), ("2027-01-02", D("-0.1000"))]


def test_two_versions_at_the_same_time_are_refused() -> None:
    with pytest.raises(TariffError, match="two versions take effect at 2027-01-01T00:00:00"):
        combine_versions([tariff_from_text(V2), tariff_from_text(V2.replace("0.6000", "0.7"))])
    with pytest.raises(TariffError, match="effective_from: 'soon' is not a date-time"):
        tariff_from_text(V1.replace('id = "res"', 'id = "res"\neffective_from = "soon"'))
