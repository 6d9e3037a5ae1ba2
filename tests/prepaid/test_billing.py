"""Billing through the processor and a real SQLite file: exact, idempotent, clock-proof."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from edge_agent.errors import TariffError
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import Store
from tests.helpers import at, energy_poll, processor


def step(p, when: str, kwh: str, meter: str = "000000000001") -> None:
    p.process([energy_poll(meter, at(when), kwh)], at(when))


def test_first_reading_after_commissioning_bills_nothing(tmp_path) -> None:
    p = processor(tmp_path / "a.db")
    step(p, "2026-11-22 08:15", "100.00")
    assert p.store.balance("A1") == 0
    step(p, "2026-11-22 08:30", "101.50")
    assert p.store.balance("A1") == D("-0.840000")
    [entry] = p.store.ledger("A1")
    assert entry["id"] == "gw1:charge:000000000001:1" and entry["amount"] == "-0.8400"
    assert entry["balance_after"] == "-0.8400"


def test_clock_jumping_backwards_never_double_charges(tmp_path) -> None:
    p = processor(tmp_path / "a.db")
    step(p, "2026-11-22 10:00", "101.00")
    # The clock jumps back an hour; the register still only went up by 1 kWh once.
    step(p, "2026-11-22 09:00", "102.00")
    step(p, "2026-11-22 09:00", "102.00")
    step(p, "2026-11-22 09:15", "102.00")
    assert p.store.balance("A1") == -(D("2.00") * D("0.56"))
    assert len(p.store.ledger("A1")) == 2


def test_register_going_backwards_bills_nothing_until_it_climbs_past(tmp_path) -> None:
    p = processor(tmp_path / "a.db")
    step(p, "2026-11-22 10:00", "110.00")
    step(p, "2026-11-22 10:15", "50.00")
    step(p, "2026-11-22 10:30", "110.50")
    assert p.store.balance("A1") == -(D("10.50") * D("0.56"))
    decreases = p.store.events(types=["register_decrease"])
    assert [e["detail"] for e in decreases] == [{"last_kwh": "110.00", "kwh": "50.00"}]


def test_daily_charge_once_per_day(tmp_path) -> None:
    p = processor(tmp_path / "a.db", tariff="flat-lowincome")
    step(p, "2026-11-24 10:00", "100.00")
    ids = [e["id"] for e in p.store.ledger("A1")]
    assert ids == [f"gw1:daily:000000000001:2026-11-{d}" for d in (22, 23, 24)]
    step(p, "2026-11-24 11:00", "100.00")
    step(p, "2026-11-23 11:00", "100.00")
    assert len(p.store.ledger("A1")) == 3 and p.store.balance("A1") == D("-0.3")


def test_allowance_entries_credit_the_free_kwh(tmp_path) -> None:
    p = processor(tmp_path / "a.db", tariff="flat-lowincome", start="2026-11-22 00:00",
                  allowance=True)
    step(p, "2026-11-22 10:00", "112.00")
    kinds = [(e["kind"], e["amount"]) for e in p.store.ledger("A1")]
    assert kinds == [("charge", "-0.1000"), ("charge", "-6.7200"), ("allowance", "5.6000")]
    other = processor(tmp_path / "b.db", tariff="flat-lowincome", start="2026-11-22 00:00")
    other.process([energy_poll("000000000001", at("2026-11-22 10:00"), "112.00")],
                  at("2026-11-22 10:00"))
    assert [e["kind"] for e in other.store.ledger("A1")] == ["charge", "charge"]


def test_topup_ids_are_idempotent_and_balance_is_ledger_sum(tmp_path) -> None:
    p = processor(tmp_path / "a.db")
    topup = LedgerEntry("pay-778", "A1", "topup", D("50.00"), at("2026-11-22 10:00"))
    added, _ = p.apply_entries([topup, topup], at("2026-11-22 10:00"))
    assert len(added) == 1
    added, _ = p.apply_entries([topup], at("2026-11-22 10:01"))
    assert added == []
    assert p.store.balance("A1") == D("50") == p.store.ledger_sum("A1")


def test_each_cycle_is_one_transaction(tmp_path) -> None:
    """A failure half-way through a cycle (meter 2's tariff is gone, after meter 1 was billed
    and both readings stored) leaves nothing of the cycle behind."""
    p = processor(tmp_path / "a.db", meters=2)
    p.store.conn.execute("UPDATE meters SET tariff='gone' WHERE address='000000000002'")
    p.store.conn.commit()
    p.reload()
    good = energy_poll("000000000001", at("2026-11-22 10:00"), "105.00")
    bad = energy_poll("000000000002", at("2026-11-22 10:00"), "101.00")
    with pytest.raises(TariffError, match="no tariff 'gone'"):
        p.process([good, bad], at("2026-11-22 10:00"))
    assert p.store.ledger() == [] and p.store.readings("000000000001") == []
    p.process([good], at("2026-11-22 10:00"))
    assert p.store.balance("A1") == -(D("5.00") * D("0.56"))


def test_replace_meter_bills_nothing_across_the_swap(tmp_path) -> None:
    from edge_agent.store import MeterRecord

    p = processor(tmp_path / "a.db")
    step(p, "2026-11-22 10:00", "110.00")
    p.store.replace_meter("000000000001", MeterRecord("000000000042", "bus1", "A1", "flat"),
                          D("111.00"), D("0.50"), at("2026-11-22 11:00"))
    p.reload()
    step(p, "2026-11-22 11:15", "2.50", "000000000042")
    # 10 kWh on the old meter before the swap, 2 kWh on the new one after; 1 kWh of the old
    # meter's final reading that no poll saw is billed by the head end, not twice here.
    assert p.store.balance("A1") == -(D("12.00") * D("0.56"))
    assert [m.address for m in p.store.meters()] == ["000000000042"]


def test_schema_newer_than_agent_is_refused(tmp_path) -> None:
    import sqlite3

    import pytest

    from edge_agent.errors import StorageError

    Store(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StorageError, match="newer than this agent"):
        Store(tmp_path / "a.db")


def test_readings_and_events_survive_reopen(tmp_path) -> None:
    p = processor(tmp_path / "a.db")
    p.process([energy_poll("000000000001", at("2026-11-22 10:00"), "101.00")],
              at("2026-11-22 10:00") + timedelta(seconds=1))
    p.store.close()
    again = Store(tmp_path / "a.db")
    assert again.readings("000000000001")[0]["value"] == "101.00"
    assert again.balance("A1") == -(D("1.00") * D("0.56"))


def test_retention_drops_telemetry_first_and_ledger_last(tmp_path) -> None:
    p = processor(tmp_path / "a.db")
    for minute in range(10):
        step(p, f"2026-11-22 10:{minute:02d}", f"{101 + minute}.00")
    store = p.store
    depth = store.outbox_depth()
    assert depth["telemetry"] == 10 and depth["ledger"] >= 9
    total = sum(depth.values())
    dropped = store.trim_outbox(max_messages=total - 10, max_age_days=30)
    assert dropped == 10
    after = store.outbox_depth()
    assert "telemetry" not in after and after["ledger"] == depth["ledger"]
    store.trim_outbox(max_messages=3, max_age_days=30)
    after = store.outbox_depth()
    assert after.get("ledger", 0) == 3  # events went before the ledger
