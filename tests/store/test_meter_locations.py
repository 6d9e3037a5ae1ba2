"""Meters' field data (issue 13): the migration that adds it upgrades an existing database,
and the file's values are merged with what the head end gave."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from edge_agent.store import SCHEMA_VERSION, MeterRecord, Store
from edge_agent.store.database import MIGRATIONS, _migration_field_data

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def test_an_existing_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    before = MIGRATIONS.index(_migration_field_data)  # the schema before this migration
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:before]:
        migration(conn)
    conn.execute(f"PRAGMA user_version={before}")
    conn.commit()
    conn.close()
    # a database written by the previous release, with a meter and its account
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO meters (address, bus, protocol, account, tariff, multiplier, "
                 "keep_power, allowance, active) VALUES ('000000000001', 'b1', "
                 "'dlt645-2007', 'A1', 'flat', 1, 0, 0, 1)")
    conn.execute("INSERT INTO accounts (id, balance_micro, alerts) VALUES ('A1', 0, '{}')")
    conn.execute("INSERT INTO meter_state (address, online, relay) VALUES "
                 "('000000000001', 1, 'closed')")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [m.address for m in store.meters()] == ["000000000001"]  # kept
    assert store.meter_locations() == {}
    assert store.quarter_times(T0) == {}  # quarter_readings has its read times
    with store.transaction():
        store.set_meter_location("000000000001", {"lat": 30.5, "lon": 120.25, "pole": "P-1"},
                                 "headend", T0)
    assert store.meter_locations()["000000000001"]["pole"] == "P-1"
    assert list(tmp_path.glob(f"agent.db.pre-v{before + 1}.bak"))  # a copy was kept first
    store.close()


def test_the_file_seeds_and_the_head_end_keeps_what_the_file_leaves_out(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.add_meter(MeterRecord("000000000001", "b1", "A1", "flat"), Decimal(0), T0)
    with store.transaction():
        store.set_meter_location("000000000001", {"lat": 30.5, "lon": 120.25, "pole": "P-1"},
                                 "headend", T0)
        store.seed_meter_locations([
            ("000000000001", {"lat": None, "lon": None, "pole": None, "phase": "C",
                              "customer_class": None}),
            ("000000000002", {"lat": None, "lon": None, "pole": None, "phase": None,
                              "customer_class": None}),  # nothing: no row
            ("000000000099", {"lat": 30.0, "lon": 120.0, "pole": None, "phase": None,
                              "customer_class": None})], T0)
    kept = store.meter_locations()
    assert sorted(kept) == ["000000000001", "000000000099"]
    assert kept["000000000001"] == {"lat": 30.5, "lon": 120.25, "pole": "P-1", "phase": "C",
                                    "customer_class": None, "source": "file"}
    store.close()
