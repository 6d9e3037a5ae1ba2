"""Enforcement decisions: alarm, grace, protected windows, keep-power, restore, the guard."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from edge_agent.errors import ConfigError
from edge_agent.prepaid.enforcement import AlertState, MeterEnforcement, check_alerts, decide, guard
from edge_agent.prepaid.policy import Policy, parse_policy
from tests.helpers import TZ, at

NOW = at("2026-11-22 10:00")
POLICY = Policy(alarm_grace=timedelta(minutes=30))


def m(**kw) -> MeterEnforcement:
    return MeterEnforcement("000000000001", "A1", **kw)


def test_alarm_first_then_trip_after_grace() -> None:
    d = decide(m(), D("-0.01"), POLICY, NOW, TZ)
    assert d.action == "alarm" and d.on_success.phase == "alarmed"
    assert [e.type for e in d.events] == ["credit_exhausted"]
    alarmed = d.on_success
    assert decide(alarmed, D("-0.01"), POLICY, NOW + timedelta(minutes=29), TZ).action is None
    d = decide(alarmed, D("-0.01"), POLICY, NOW + timedelta(minutes=30), TZ)
    assert d.action == "trip" and d.on_success.phase == "tripped"


def test_exactly_zero_is_exhausted_but_overdraft_allows_more() -> None:
    assert decide(m(), D("0"), POLICY, NOW, TZ).action == "alarm"
    policy = Policy(overdraft=D("10"))
    assert decide(m(), D("-9.99"), policy, NOW, TZ).action is None
    assert decide(m(), D("-10"), policy, NOW, TZ).action == "alarm"


def test_offline_meter_never_gets_a_decision() -> None:
    alarmed = m(phase="alarmed", alarm_since=NOW - timedelta(hours=5))
    d = decide(alarmed, D("-100"), POLICY, NOW, TZ, online=False)
    assert d.action is None and d.events == []


def test_protected_hours_defer_once_then_trip_when_window_ends() -> None:
    policy = Policy(alarm_grace=timedelta(0), protected_hours=((22 * 60, 7 * 60),))
    alarmed = m(phase="alarmed", alarm_since=at("2026-11-22 21:00"))
    d = decide(alarmed, D("-1"), policy, at("2026-11-22 23:00"), TZ)
    assert d.action is None and [e.type for e in d.events] == ["cutoff_deferred"]
    assert d.events[0].detail["reason"] == "protected_hours"
    again = decide(d.on_success, D("-1"), policy, at("2026-11-23 03:00"), TZ)
    assert again.action is None and again.events == []
    assert decide(again.on_success, D("-1"), policy, at("2026-11-23 07:00"), TZ).action == "trip"


@pytest.mark.parametrize("policy,reason", [
    (Policy(alarm_grace=timedelta(0), no_cutoff=True), "no_cutoff"),
    (Policy(alarm_grace=timedelta(0), holidays=frozenset({NOW.date()})), "holiday"),
])
def test_no_cutoff_flag_and_holidays(policy: Policy, reason: str) -> None:
    d = decide(m(phase="alarmed", alarm_since=NOW), D("-1"), policy, NOW, TZ)
    assert d.action is None and d.events[0].detail["reason"] == reason


def test_keep_power_meter_never_trips() -> None:
    d = decide(m(phase="alarmed", alarm_since=NOW - timedelta(days=9), keep_power=True),
               D("-500"), POLICY, NOW, TZ)
    assert d.action is None and d.events[0].detail["reason"] == "keep_power"


def test_restore_closes_with_configured_mode() -> None:
    tripped = m(phase="tripped")
    assert decide(tripped, D("0"), POLICY, NOW, TZ).action is None
    assert decide(tripped, D("0.01"), POLICY, NOW, TZ).action == "close_allowed"
    direct = Policy(close_mode="direct_close", restore_level=D("5"))
    assert decide(tripped, D("5"), direct, NOW, TZ).action is None
    assert decide(tripped, D("5.01"), direct, NOW, TZ).action == "direct_close"
    alarmed = m(phase="alarmed", alarm_since=NOW)
    assert decide(alarmed, D("1"), POLICY, NOW, TZ).action == "alarm_release"


def test_consumption_while_tripped_raised_once() -> None:
    tripped = m(phase="tripped")
    d = decide(tripped, D("-3"), POLICY, NOW, TZ, consumed_kwh=D("0.50"))
    assert [e.type for e in d.events] == ["consumption_while_tripped"]
    d2 = decide(d.on_success, D("-3"), POLICY, NOW, TZ, consumed_kwh=D("0.50"))
    assert d2.events == []


def test_guard_holds_every_trip_beyond_the_share() -> None:
    policy = Policy(max_trip_share=D("0.1"), trip_guard_min=3)
    trips = [decide(MeterEnforcement(f"{n:012d}", f"A{n}", phase="alarmed",
                                     alarm_since=NOW - timedelta(hours=1)), D("-1"), policy,
                    NOW, TZ) for n in range(1, 6)]
    held, events = guard(trips, 20, policy, NOW)
    assert all(d.action is None for d in held) and [e.type for e in events] == ["trip_guard"]
    assert all(d.on_success.phase == "alarmed" for d in held)
    allowed, events = guard(trips[:3], 20, policy, NOW)
    assert [d.action for d in allowed] == ["trip"] * 3 and events == []


def test_alerts_once_per_crossing_and_days_left() -> None:
    policy = Policy(alert_levels=(D("20"), D("5")), alert_days_left=D(3))
    state, events = check_alerts("A1", AlertState(), D("19"), None, policy, NOW)
    assert [e.detail["level"] for e in events] == ["20.0000"]
    state, events = check_alerts("A1", state, D("18"), None, policy, NOW)
    assert events == []
    state, events = check_alerts("A1", state, D("4"), D("2"), policy, NOW)  # 2 days left
    assert [e.detail.get("level", "days") for e in events] == ["5.0000", "days"]
    state, events = check_alerts("A1", state, D("50"), D("1"), policy, NOW)
    assert events == [] and state == AlertState()
    _, events = check_alerts("A1", state, D("19"), None, policy, NOW)
    assert len(events) == 1  # re-armed after the top-up


def test_policy_validation_names_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy({"alarm_grace_minutes": -5, "close_mode": "slam", "colour": 1,
                      "overdraft": 1.5, "protected_hours": ["22-07"]})
    text = str(info.value)
    for fragment in ("alarm_grace_minutes: -5", "close_mode: 'slam'", "unknown key 'colour'",
                     "overdraft: overdraft must be a decimal string", "protected_hours[0]"):
        assert fragment in text
