"""Policy classes, start-up and offline holds, top-up sequence (issue 14, points 3-5)."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import parse_config
from edge_agent.errors import ConfigError, Conflict, UnknownPolicyClass
from edge_agent.prepaid.policy import parse_policy
from edge_agent.prepaid.records import LedgerEntry
from tests.helpers import at, energy_poll, numbered_topup, processor

M1 = "000000000001"
CLASSES = {
    "alarm_grace_minutes": 0,
    "classes": {
        "hospital": {"trips_need_force": True},
        "lowincome": {"overdraft": "10", "protected_hours": ["18:00-08:00"]},
    },
}


def run_down(proc, when: str = "2026-11-22 12:00") -> list:
    """From 100.00 to 110.00 kWh at 0.56 with no credit: -5.60; alarm, then the decision."""
    first = proc.process([energy_poll(M1, at(when) - timedelta(minutes=2), "110.00")],
                         at(when) - timedelta(minutes=2))
    for d in first:
        proc.relay_done(d, True, at(when) - timedelta(minutes=2))
    return proc.process([energy_poll(M1, at(when), "110.00")], at(when))


def types(proc) -> list[str]:
    return [e["type"] for e in proc.store.events(limit=1000)]


def test_a_class_overrides_the_defaults_and_gateway_keys_are_refused() -> None:
    policy = parse_policy(CLASSES)
    low = policy.for_class("lowincome")
    assert low.overdraft == D("10") and low.alarm_grace == timedelta(0)
    assert policy.for_class(None) is policy and policy.for_class("gone") is policy
    with pytest.raises(ConfigError, match=r"classes.x.max_trip_share: a setting of the whole"):
        parse_policy({"classes": {"x": {"max_trip_share": "0.5"}}})
    with pytest.raises(ConfigError, match=r"classes.x.overdraft"):
        parse_policy({"classes": {"x": {"overdraft": "-1"}}})


def test_accounts_in_config_name_existing_classes() -> None:
    base = '[policy]\n[policy.classes.hospital]\ntrips_need_force = true\n'
    config = parse_config(base + '[accounts.A1]\npolicy_class = "hospital"\n'
                          'tier_bonus_kwh = "100"\n')
    assert [(a.name, a.policy_class, a.tier_bonus_kwh) for a in config.accounts] == [
        ("A1", "hospital", D("100"))]
    with pytest.raises(ConfigError, match=r"\[accounts.A2\].policy_class: no "
                                          r"\[policy.classes.vip\]"):
        parse_config(base + '[accounts.A2]\npolicy_class = "vip"\n')


def test_hospital_trips_need_force(tmp_path) -> None:
    proc = processor(tmp_path / "a.db", parse_policy(CLASSES))
    proc.set_account_class("A1", "hospital", now=at("2026-11-22 08:00"), actor="headend")
    assert run_down(proc) == []
    assert "cutoff_deferred" in types(proc) and "policy_class_set" in types(proc)
    [deferred] = proc.store.events(types=["cutoff_deferred"])
    assert deferred["detail"]["reason"] == "force_required"
    with pytest.raises(Conflict, match="need force"):
        proc.check_operator_trip(M1, force=False)
    proc.check_operator_trip(M1, force=True)
    with pytest.raises(UnknownPolicyClass):
        proc.set_account_class("A1", "vip")
    # Back to the default class: the next cycle trips.
    proc.set_account_class("A1", None)
    assert [d.action for d in proc.process([energy_poll(M1, at("2026-11-22 12:05"), "110.00")],
                                           at("2026-11-22 12:05"))] == ["trip"]


def test_startup_window_defers_then_trips(tmp_path) -> None:
    proc = processor(tmp_path / "a.db", parse_policy({**CLASSES,
                                                      "startup_keep_power_minutes": 10}))
    proc.started_at = at("2026-11-22 11:55")
    assert run_down(proc) == []  # 12:00: 5 minutes after the start
    later = proc.process([energy_poll(M1, at("2026-11-22 12:06"), "110.00")],
                         at("2026-11-22 12:06"))
    assert [d.action for d in later] == ["trip"]
    held = [e for e in proc.store.events(limit=100) if e["type"].startswith("enforcement_")]
    assert [(e["type"], e["detail"]["reason"]) for e in held] == [
        ("enforcement_suspended", "startup"), ("enforcement_resumed", "startup")]


def test_headend_unreachable_defers_new_trips_but_topups_restore(tmp_path) -> None:
    proc = processor(tmp_path / "a.db", parse_policy({**CLASSES, "offline_enforcement_hours": 6}))
    proc.store.set_headend_last_seen(at("2026-11-22 05:00"))  # 7 hours before
    assert run_down(proc) == []
    [deferred] = proc.store.events(types=["cutoff_deferred"])
    assert deferred["detail"]["reason"] == "headend_unreachable"
    # Heard again: the trip goes ahead; then, silent for 6 hours, a top-up still restores.
    proc.store.set_headend_last_seen(at("2026-11-22 12:01"))
    [trip] = proc.process([energy_poll(M1, at("2026-11-22 12:02"), "110.00")],
                          at("2026-11-22 12:02"))
    proc.relay_done(trip, True, at("2026-11-22 12:02"), "open")
    proc.process([energy_poll(M1, at("2026-11-22 19:00"), "110.00")], at("2026-11-22 19:00"))
    assert proc.hold == "headend_unreachable"
    _, restore = proc.apply_entries(
        [LedgerEntry("pay-1", "A1", "topup", D("50"), at("2026-11-22 19:05"))],
        at("2026-11-22 19:05"))
    assert [d.action for d in restore] == ["close_allowed"]


def test_topup_sequence_gap_fill_and_repeat(tmp_path) -> None:
    proc = processor(tmp_path / "a.db")

    def topup(seq: int, txn: str) -> list:
        return numbered_topup(proc, seq, txn)

    assert topup(1, "t1") and topup(4, "t4")  # 2 and 3 never arrived: applied anyway
    [gap] = proc.store.events(types=["topup_gap"])
    assert gap["account"] == "A1" and gap["detail"]["missing"] == [2, 3]
    assert topup(3, "t3") and len(proc.store.events(types=["topup_gap"])) == 1
    assert topup(2, "t2")
    assert proc.store.topup_sequence("A1") == (4, frozenset())
    assert proc.store.events(types=["topup_gap_closed"])[0]["detail"] == {"last_seq": 4}
    assert topup(2, "t2") == []  # a repeat: nothing
    assert proc.store.balance("A1") == D("40")


def test_household_tier_bonus_bills_through_the_processor(tmp_path) -> None:
    # Beijing yearly tiers, connected 1 Jan 2027 (no proration).  2980 kWh used on 2 Jan.
    # With +100 kWh: all tier 1, 2980 x 0.4883 = 1455.1340.  Without: 2880 x 0.4883 +
    # 100 x 0.5383 = 1406.3040 + 53.8300 = 1460.1340.
    def charged(bonus: str, path: Path) -> D:
        proc = processor(path, tariff="beijing-yearly-tiers", initial="0.00",
                         start="2027-01-01 00:00")
        proc.set_account_class("A1", None, D(bonus))
        proc.process([energy_poll(M1, at("2027-01-02 00:00"), "2980.00")],
                     at("2027-01-02 00:00"))
        return -proc.store.balance("A1")

    assert charged("100", tmp_path / "a.db") == D("1455.1340")
    assert charged("0", tmp_path / "b.db") == D("1460.1340")


WINDOWS = st.sampled_from([[], ["22:00-07:00"], ["12:00-13:00"], ["00:00-24:00"]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hours=WINDOWS, class_hours=WINDOWS, no_cutoff=st.booleans(),
       account_class=st.sampled_from([None, "hospital", "night"]),
       keep_power=st.booleans(), offline=st.sampled_from([0, 1, 24]),
       startup=st.sampled_from([0, 5, 60]),
       started=st.one_of(st.none(), st.integers(0, 180)),
       last_seen=st.one_of(st.none(), st.integers(0, 48 * 60)),
       minute=st.integers(0, 7 * 1440 - 1))
def test_no_trip_while_any_protection_applies(hours, class_hours, no_cutoff, account_class,
                                             keep_power, offline, startup, started,
                                             last_seen, minute) -> None:
    now = at("2026-11-23 00:00") + timedelta(minutes=minute)
    policy = parse_policy({
        "alarm_grace_minutes": 0, "protected_hours": hours, "offline_enforcement_hours": offline,
        "startup_keep_power_minutes": startup,
        "classes": {"hospital": {"trips_need_force": True},
                    "night": {"protected_hours": class_hours, "no_cutoff": no_cutoff}}})
    with tempfile.TemporaryDirectory() as tmp:
        proc = processor(Path(tmp) / "a.db", policy, keep_power=keep_power,
                         start="2026-11-22 00:00")
        proc.set_account_class("A1", account_class)
        proc.started_at = None if started is None else now - timedelta(minutes=started)
        if last_seen is not None:
            proc.store.set_headend_last_seen(now - timedelta(minutes=last_seen))
        before = now - timedelta(minutes=1)
        for d in proc.process([energy_poll(M1, before, "110.00")], before):
            proc.relay_done(d, True, before)
        actions = [d.action for d in proc.process([energy_poll(M1, now, "110.00")], now)]
        proc.store.close()
    local = now.hour * 60 + now.minute
    windows = class_hours if account_class == "night" else hours

    def inside(text: str) -> bool:
        start, end = (int(p[:2]) * 60 + int(p[3:]) for p in text.split("-"))
        return start <= local < end if start <= end else (local >= start or local < end)

    protected = (
        keep_power or account_class == "hospital"
        or (account_class == "night" and no_cutoff)
        or any(inside(w) for w in windows)
        or (started is not None and startup and started < startup)
        or (last_seen is not None and offline and last_seen >= offline * 60))
    assert ("trip" in actions) == (not protected)
