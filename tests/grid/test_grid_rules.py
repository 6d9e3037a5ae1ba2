"""Line loss, anomaly rules and the clock-sync policy, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal as D

import pytest

from edge_agent.grid import anomaly, clocksync, lineloss

T0 = datetime(2026, 4, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


def loss(supply: D | None, sales: dict[str, D | None], threshold: D = D("0.08")
         ) -> lineloss.LineLoss:
    return lineloss.line_loss("000000000099", "day", T0, T1, supply, sales, threshold)


def test_complete_loss_rate_and_no_flags() -> None:
    result = loss(D("100"), {"a": D("50"), "b": D("45")})
    assert (result.sales_kwh, result.loss_kwh, result.rate) == (D("95"), D("5"), D("0.0500"))
    assert not (result.incomplete or result.negative or result.over_threshold)
    assert lineloss.loss_events(result) == []


def test_missing_customer_marks_incomplete_and_computes_nothing() -> None:
    result = loss(D("100"), {"a": D("50"), "b": None, "c": None})
    assert result.incomplete and result.missing == ("b", "c") and result.customers == 3
    assert result.loss_kwh is None and result.rate is None and result.sales_kwh is None
    assert result.as_dict()["missing"] == 2
    assert lineloss.loss_events(result) == []  # a partial sum raises nothing


def test_missing_supply_is_incomplete() -> None:
    result = loss(None, {"a": D("1")})
    assert result.incomplete and result.rate is None and result.missing == ()


def test_a_read_far_from_the_quarter_boundary_makes_the_quarter_incomplete() -> None:
    start = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    read_at = {"t": start + timedelta(seconds=5), "a": start + timedelta(seconds=61),
               "b": start - timedelta(seconds=90)}
    assert lineloss.late_reads(start, read_at, ["t", "a", "b", "c"], 60) == ["a", "b"]
    assert lineloss.late_reads(start, read_at, ["t", "a", "b"], 61) == ["b"]  # 61 s: on time
    end = start + timedelta(minutes=15)
    result = lineloss.line_loss("t", "15min", start, end, D("10"), {"a": D("5"), "b": D("1")},
                                D("0.08"), ["b", "a", "a"], 60)
    assert result.incomplete and result.rate is None and result.loss_kwh is None
    assert result.late == ("a", "b") and result.missing == ()
    assert result.reason == "2 meter(s) read more than 60 s from the period's boundary"
    assert lineloss.loss_events(result) == []  # a theft-sized loss from skewed reads: nothing
    body = result.as_dict()
    assert body["late_meters"] == ["a", "b"] and body["reason"] == result.reason
    on_time = lineloss.line_loss("t", "15min", start, end, D("10"), {"a": D("5")}, D("0.08"))
    assert "reason" not in on_time.as_dict() and "late_meters" not in on_time.as_dict()


def test_negative_loss_is_flagged_with_an_event() -> None:
    result = loss(D("90"), {"a": D("50"), "b": D("45")})
    assert result.negative and result.loss_kwh == D("-5") and result.rate == D("-0.0556")
    assert [e.type for e in lineloss.loss_events(result)] == ["line_loss_negative"]


def test_high_loss_raises_the_event() -> None:
    result = loss(D("100"), {"a": D("50"), "b": D("30")})
    assert result.over_threshold and result.rate == D("0.2000")
    (event,) = lineloss.loss_events(result)
    assert event.type == "line_loss_high" and event.meter == "000000000099"
    assert event.detail["rate"] == "0.2000"


def test_energy_between_applies_multiplier_and_refuses_decrease() -> None:
    assert lineloss.energy_between(D("10.50"), D("12.00"), 50) == D("75.00")
    assert lineloss.energy_between(D("12"), D("11")) is None
    assert lineloss.energy_between(None, D("11")) is None


def test_windows() -> None:
    assert lineloss.quarter_start(datetime(2026, 4, 1, 10, 44, 59)) == datetime(2026, 4, 1,
                                                                                10, 30)
    start, end = lineloss.month_window(datetime(2026, 12, 9).date(), UTC)
    assert (start.month, end.year, end.month) == (12, 2027, 1)


def test_register_too_fast_and_stopped() -> None:
    start, end = T0, T0 + timedelta(hours=1)
    fast = anomaly.register_rate("m", start, end, D("10"), D("21"), D("1"))
    assert [e.type for e in fast] == ["register_too_fast"]  # 11 kWh > 10 x 1 kW x 1 h
    assert anomaly.register_rate("m", start, end, D("10"), D("19"), D("1")) == []
    stopped = anomaly.register_rate("m", start, end, D("10"), D("10"), D("0.1"))
    assert [e.type for e in stopped] == ["register_stopped"]
    assert anomaly.register_rate("m", start, end, D("10"), D("10"), D("0.05")) == []
    assert anomaly.register_rate("m", start, end, D("10"), D("9"), D("1")) == []


def test_clock_deviation_raised_once_then_cleared() -> None:
    raised, events = anomaly.clock_deviation("m", T0 + timedelta(seconds=90), T0, False)
    assert raised and [e.type for e in events] == ["clock_deviation"]
    assert events[0].detail["seconds"] == 90
    assert anomaly.clock_deviation("m", T0 + timedelta(seconds=95), T0, True) == (True, [])
    raised, events = anomaly.clock_deviation("m", T0 + timedelta(seconds=2), T0, True)
    assert not raised and [e.type for e in events] == ["clock_ok"]


def test_status_word_changes_bit_by_bit_named() -> None:
    events = anomaly.status_changes("m", 3, 0x0100, 0x0100 | (1 << 4) | (1 << 6) | (1 << 14),
                                    T0)
    assert [(e.detail["name"], e.detail["value"]) for e in events] == [
        ("relay_open", 1), ("relay_command_open", 1), ("bit14", 1)]
    assert anomaly.status_changes("m", 1, 1 << 2, 0, T0)[0].detail["name"] == "clock_battery_low"


def test_read_failure_streak_raises_once() -> None:
    streak, raised = 0, []
    for ok in (False, False, False, False, True, False):
        streak, events = anomaly.read_failures("m", streak, ok, T0)
        raised += events
    assert [e.detail["streak"] for e in raised] == [3] and streak == 1


def test_cover_openings() -> None:
    assert anomaly.cover_openings("m", "cover_open_count", None, 3, T0) == []
    (event,) = anomaly.cover_openings("m", "terminal_cover_open_count", 3, 4, T0)
    assert event.detail["di"] == "03300E00" and event.severity == "critical"


@pytest.mark.parametrize(("moment", "ok"), [
    (time(14, 20), True), (time(14, 4), False), (time(13, 56), False), (time(14, 5, 1), True),
    (time(0, 10), False), (time(23, 40), False), (time(0, 40), True), (time(23, 10), True)])
def test_broadcast_only_away_from_the_hour_and_midnight(moment: time, ok: bool) -> None:
    assert clocksync.away_from_hour(moment) is ok


def test_gateway_trust() -> None:
    assert clocksync.gateway_trusted("auto", True) == (True, "")
    assert not clocksync.gateway_trusted("auto", False)[0]
    assert "cannot tell" in clocksync.gateway_trusted("auto", None)[1]
    assert clocksync.gateway_trusted("trust", None)[0]
    assert not clocksync.gateway_trusted("distrust", True)[0]
    with pytest.raises(ValueError):
        clocksync.gateway_trusted("maybe", True)


def test_sync_plan() -> None:
    now = datetime(2026, 4, 1, 14, 20)
    off = {"a": timedelta(seconds=90), "b": timedelta(minutes=20), "c": timedelta(seconds=3)}
    trusted = (True, "")
    plan = clocksync.plan_sync(off, now, trusted, broadcast_done_today=False)
    assert plan.broadcast and plan.set_meters == ("b",) and plan.ok_meters == ("c",)
    after = clocksync.plan_sync(off, now, trusted, broadcast_done_today=True)
    assert not after.broadcast and after.set_meters == ("a", "b")
    near_hour = clocksync.plan_sync(off, now.replace(minute=58), trusted, False)
    assert not near_hour.broadcast and near_hour.set_meters == ()
    refused = clocksync.plan_sync(off, now, (False, "no NTP"), False)
    assert refused.refused == "no NTP" and not refused.broadcast and not refused.set_meters


def test_load_switched_between_readings_is_not_a_stopped_register() -> None:
    start, end = T0, T0 + timedelta(hours=1)
    assert anomaly.register_rate("m", start, end, D("5"), D("5"), D("2"),
                                 power_min_kw=D("0")) == []
