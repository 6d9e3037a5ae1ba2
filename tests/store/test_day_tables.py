"""Schema 8: 15-minute readings in one table per UTC day, dropped whole by retention once
their daily figures are kept; a schema-5 database migrates with its data intact."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.config import RetentionConfig
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import SCHEMA_VERSION, MeterRecord, Store
from edge_agent.store import database as database_module
from edge_agent.store.readings import DAY_SHIFT

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = RetentionConfig()


def _poll(store: Store, ts: datetime, meters: int = 3, value: str = "1") -> tuple[int, int]:
    with store.transaction():
        written = store.record_readings((f"m{m}", ts, name, f"{value}{m}") for m in range(meters)
                                        for name in ("energy", "voltage"))
        assert written is not None
        store.enqueue_range("telemetry", *written)
        return written


def _store(path: Path) -> Store:
    store = Store(path)
    for m in range(3):
        store.add_meter(MeterRecord(f"m{m}", "bus1", f"A{m}", "flat"), Decimal(0), T0)
    return store


def _ack(store: Store) -> None:
    store.acknowledge([seq for seq, _, _ in store.pending(limit=10**9)])


def test_each_day_has_its_table_and_rowids_keep_time_order(tmp_path: Path) -> None:
    store = _store(tmp_path / "agent.db")
    spans = [_poll(store, T0 + timedelta(hours=h), value=str(h)) for h in range(0, 72, 6)]
    days = store.reading_days()
    assert days == [int(T0.timestamp()) // 86400 + n for n in range(3)]
    flat = [rowid for span in spans for rowid in span]
    assert flat == sorted(flat) and all(a >> DAY_SHIFT in days for a in flat)
    assert store.reading_rows() == 12 * 3 and store.readings_count() == 12 * 3 * 2
    assert store.latest_reading("m1", "energy") == "661"
    assert store.latest_values(["voltage"])["m2"]["voltage"][1] == "662"
    newest = store.readings("m0", limit=3)
    assert [r["ts"][:13] for r in newest] == ["2026-03-03T18", "2026-03-03T18", "2026-03-03T12"]
    assert len(store.readings("m0", limit=10**6, since=T0 + timedelta(days=1))) == 8 * 2


def test_a_cycle_across_midnight_is_queued_per_day(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _poll(store, T0 + timedelta(hours=23))
    with store.transaction():
        written = store.record_readings([
            ("m0", T0 + timedelta(hours=23, minutes=59, seconds=59), "energy", "5"),
            ("m1", T0 + timedelta(days=1, seconds=1), "energy", "6")])
        assert written is not None
        store.enqueue_range("telemetry", *written)
    refs = [json.loads(p)["ref"] for _, kind, p in store.pending(limit=100)
            if kind == "telemetry"]
    assert refs[-2][0] >> DAY_SHIFT != refs[-1][0] >> DAY_SHIFT  # one message per day table
    bodies = [store.readings_range(*ref) for ref in refs[-2:]]
    assert [[r["value"] for r in body] for body in bodies] == [["5"], ["6"]]


def test_retention_keeps_daily_figures_and_drops_the_day(tmp_path: Path) -> None:
    store = _store(tmp_path / "agent.db")
    for h in range(0, 24 * 3):
        _poll(store, T0 + timedelta(hours=h), value=str(h))
    now = T0 + timedelta(days=POLICY.readings_days + 2)
    store.apply_retention(POLICY, now)
    assert len(store.reading_days()) == 3  # nothing acknowledged: nothing removed
    assert store.apply_retention(POLICY, now).held == ["readings"]
    _ack(store)
    for _ in range(3):
        store.apply_retention(POLICY, now)
    assert store.reading_days() == [int(T0.timestamp()) // 86400 + 2]  # one day not yet old
    figures = [r for r in store.readings("m0", limit=10**6) if r["ts"] < "2026-03-03"]
    assert [(r["ts"][:16], r["name"], r["value"]) for r in figures] == [
        ("2026-03-02T23:00", "energy", "470"), ("2026-03-02T23:00", "voltage", "470"),
        ("2026-03-01T23:00", "energy", "230"), ("2026-03-01T23:00", "voltage", "230")]
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_schema")}
    assert "readings_d" + str(int(T0.timestamp()) // 86400) not in tables


def test_schema_5_database_migrates_with_its_data(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.db"
    with monkeypatch.context() as patch:  # a database as schema 5 made and filled it
        patch.setattr(database_module, "SCHEMA_VERSION", 5)
        old = Store(path)
        with old.transaction():  # meters as schema 5 has them (today's add_meter writes
            for m in range(3):   # columns it has not)
                old.conn.execute(
                    "INSERT INTO meters (address, bus, protocol, account, tariff, multiplier, "
                    "keep_power, allowance, active, commissioned_at, commission_kwh) VALUES "
                    "(?, 'bus1', 'dlt645-2007', ?, 'flat', 1, 0, 0, 1, ?, '0')",
                    (f"m{m}", f"A{m}", T0.isoformat()))
                old.conn.execute(
                    "INSERT INTO meter_state (address, last_kwh, last_ts, charge_seq, phase, "
                    "online, polls, replies, cwt) VALUES (?, '0', ?, 0, 'normal', 1, 0, 0, 0)",
                    (f"m{m}", T0.isoformat()))
                old.ensure_account(f"A{m}")
        old.conn.execute("INSERT INTO shapes (id, names) VALUES (1, 'energy,voltage')")
        with old.transaction():
            for h in range(48):
                old.conn.execute("INSERT INTO readings (ts, meter, name, value) VALUES "
                                 "(?,?,?,?)", (int((T0 + timedelta(hours=h)).timestamp()),
                                               "m0", "#1", f"{h}\x1f230"))
            last = old._last_rowid()
            old.conn.execute("UPDATE meter_state SET last_reading=? WHERE address='m0'",
                             (last,))
            old.enqueue_range("telemetry", last - 1, last)
            old.append_ledger_entries([LedgerEntry("pay-1", "A0", "topup", Decimal("10"), T0)],
                                      origin="headend")
        old.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 5
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (tmp_path / "agent.db.pre-v6.bak").exists()
    assert store.readings_count() == 96 and store.balance("A0") == Decimal("10")
    ref = json.loads(store.pending(limit=10)[0][2])["ref"]
    assert [r["value"] for r in store.readings_range(*ref)] == ["46", "230", "47", "230"]
    new = _poll(store, T0 + timedelta(days=3), meters=1)
    assert new[0] > last and store.latest_reading("m0", "energy") == "10"
    _ack(store)
    for _ in range(5):
        store.apply_retention(POLICY, T0 + timedelta(days=POLICY.readings_days + 5))
    # Old rows thin as before (a daily figure each day), the day table is dropped whole.
    assert [(r["ts"][:13], r["value"]) for r in store.readings("m0", limit=10)] == [
        ("2026-03-04T00", "10"), ("2026-03-04T00", "10"), ("2026-03-02T23", "47"),
        ("2026-03-02T23", "230"), ("2026-03-01T23", "23"), ("2026-03-01T23", "230")]
    assert store.reading_days() == []
    assert store.ledger_sum("A0") == store.balance("A0")


def test_a_day_written_again_after_it_was_dropped_keeps_rowids_unique(tmp_path: Path) -> None:
    store = _store(tmp_path / "agent.db")
    first = _poll(store, T0, value="a")
    _ack(store)
    for _ in range(2):
        store.apply_retention(POLICY, T0 + timedelta(days=POLICY.readings_days + 2))
    assert store.reading_days() == []  # its figures are in `readings` now
    again = _poll(store, T0 + timedelta(hours=1), value="b")  # the clock was set back
    assert again[0] > first[1]
    assert store.latest_reading("m0", "energy") == "b0"
    _ack(store)
    for _ in range(2):
        store.apply_retention(POLICY, T0 + timedelta(days=POLICY.readings_days + 2))
    assert store.reading_days() == [] and store.reading_rows() == 6
