"""The smaller correctness points of issue 14, one test each."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ConfigError, TariffError, UsageError
from edge_agent.prepaid.policy import Policy, parse_policy
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.prepaid.replay import Replay
from edge_agent.prepaid.tariff import load_tariff, price_interval, split_energy, tariff_from_text
from tests.helpers import TARIFFS, TZ, at, energy_poll, processor

NEW_YORK = ZoneInfo("America/New_York")
TOU_NY = """
[tariff]
id = "ny"
[energy]
type = "tou"
prices = { valley = "0.30", flat = "0.60" }
windows = [ { start = "00:00", end = "08:00", rate = "valley" },
            { start = "08:00", end = "24:00", rate = "flat" } ]
"""


def test_month_boundary_splits_only_for_meters_with_the_allowance() -> None:
    t = load_tariff(TARIFFS / "flat-lowincome.toml")
    start, end = at("2026-10-31 23:00"), at("2026-11-01 01:00")
    without = price_interval(t, start, end, D("4.00"), TZ, allowance_enabled=False)
    assert [(p.kwh, p.month) for p in without.pieces] == [(D("4.00"), "2026-10")]
    with_ = price_interval(t, start, end, D("4.00"), TZ)
    assert [(p.kwh, p.month) for p in with_.pieces] == [(D("2.00"), "2026-10"),
                                                       (D("2.00"), "2026-11")]


def test_daylight_saving_split_uses_elapsed_hours() -> None:
    # 8 March 2026 in New York: 02:00 becomes 03:00.  From 00:00 to 12:00 local, 11 hours
    # elapse: 7 of them before 08:00 (valley), 4 after (flat).  11 kWh: 7 valley + 4 flat
    # (clock hours would say 8/12 and 4/12: 7.33 + 3.67).
    t = tariff_from_text(TOU_NY)
    start = datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK)
    end = datetime(2026, 3, 8, 12, 0, tzinfo=NEW_YORK)
    priced = price_interval(t, start, end, D("11.00"), NEW_YORK)
    assert [(p.label, p.kwh) for p in priced.pieces] == [("valley", D("7.00")),
                                                        ("flat", D("4.00"))]
    assert priced.cost == D("7.00") * D("0.30") + D("4.00") * D("0.60")


def test_season_on_29_february_is_refused() -> None:
    text = (TARIFFS / "winter-tiered.toml").read_text().replace('"11-15"', '"02-29"')
    with pytest.raises(TariffError) as info:
        tariff_from_text(text, "t.toml")
    assert any("'02-29' does not exist in most years" in p for p in info.value.problems)


def test_replay_refuses_a_negative_topup() -> None:
    replay = Replay(load_tariff(TARIFFS / "flat.toml"), Policy(), TZ)
    rows = [(at("2026-11-22 08:00"), "m1", D("1.00"), None)]
    with pytest.raises(UsageError, match="must be positive"):
        replay.run(rows, [(at("2026-11-22 09:00"), D("-5"), "t1")])


def test_multi_meter_replay_charges_daily_fees_from_each_meters_first_reading() -> None:
    replay = Replay(load_tariff(TARIFFS / "flat-lowincome.toml"), Policy(no_cutoff=True), TZ,
                    D("100"))
    rows = [(at("2026-11-20 08:00"), "m1", D("1.00"), None),
            (at("2026-11-22 08:00"), "m2", D("5.00"), None),
            (at("2026-11-22 09:00"), "m1", D("2.00"), None),
            (at("2026-11-22 09:00"), "m2", D("6.00"), None)]
    result = replay.run(rows, [])
    daily = sorted(str(i["id"]) for i in result.timeline
                   if i["type"] == "ledger" and ":daily:" in str(i["id"]))
    assert daily == ["replay:daily:m1:2026-11-20", "replay:daily:m1:2026-11-21",
                     "replay:daily:m1:2026-11-22", "replay:daily:m2:2026-11-22"]


def test_protected_hours_starting_where_they_end_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"starts and ends at the same time .*no_cutoff"):
        parse_policy({"protected_hours": ["07:00-07:00"]})
    assert parse_policy({"protected_hours": ["00:00-24:00"]}).protected_hours == ((0, 1440),)


@given(st.integers(0, 10000), st.lists(st.integers(1, 10000), min_size=2, max_size=6),
       st.data())
def test_an_extra_split_point_moves_no_energy(units: int, lengths: list[int],
                                              data: st.DataObject) -> None:
    """Rounding on running totals: splitting a span in two gives the same energy to the rest
    and the two halves add up to what the whole span had."""
    base = at("2026-01-01 00:00")
    edges = [base]
    for length in lengths:
        edges.append(edges[-1] + timedelta(seconds=length))
    spans = list(itertools.pairwise(edges))
    whole = split_energy(D(units) / 100, spans)
    cut = data.draw(st.integers(0, len(spans) - 1))
    a, b = spans[cut]
    middle = a + (b - a) * data.draw(st.floats(0.01, 0.99))
    finer = split_energy(D(units) / 100, [*spans[:cut], (a, middle), (middle, b),
                                          *spans[cut + 1:]])
    assert [*finer[:cut], finer[cut] + finer[cut + 1], *finer[cut + 2:]] == whole
    assert sum(whole) == D(units) / 100


def test_days_left_divides_by_the_days_actually_observed(tmp_path) -> None:
    # Connected 22 Nov 08:00 with 30 yuan; 25 kWh at 0.56 (14.00 yuan) by 23 Nov 08:00.
    # One day observed: 14.00 a day, 16.00 left = 1.1 days <= 3 -> the reminder fires.
    # (Dividing by 7 days would give 2.00 a day and 8 days left: no reminder.)
    proc = processor(tmp_path / "a.db", Policy(alert_levels=(), alert_days_left=D(3)))
    proc.apply_entries([LedgerEntry("t1", "A1", "topup", D("30"), at("2026-11-22 08:00"))],
                       at("2026-11-22 08:00"))
    proc.process([energy_poll("000000000001", at("2026-11-23 08:00"), "125.00")],
                 at("2026-11-23 08:00"))
    [event] = [e for e in proc.store.events(limit=100) if e["type"] == "low_balance"]
    assert event["detail"] == {"balance": "16.0000", "daily_cost": "14.0000", "days_left": "1.1"}


def test_cli_replay_refuses_a_negative_topup(tmp_path) -> None:
    from click.testing import CliRunner

    from edge_agent.cli import main

    csv = tmp_path / "r.csv"
    csv.write_text("2026-11-22T08:00,m1,1.00\n")
    result = CliRunner().invoke(main, ["bill", "replay", str(csv), "--tariff",
                                       str(TARIFFS / "flat.toml"), "--topup",
                                       "2026-11-22T09:00=-5"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --topup")
