"""A customer meter's line-loss area (`behind`) is kept with the meter: the migration that adds
it upgrades an existing database (meters in no area), and a swap keeps the area."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from edge_agent.runtime.operations import commission
from edge_agent.store import SCHEMA_VERSION, MeterRecord, Store
from edge_agent.store.database import MIGRATIONS, _migration_meter_behind

T0 = datetime(2026, 4, 1, tzinfo=UTC)
TOTAL = "000000000099"


def test_an_existing_database_is_upgraded_with_meters_in_no_area(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    before = MIGRATIONS.index(_migration_meter_behind)
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:before]:
        migration(conn)
    conn.execute(f"PRAGMA user_version={before}")
    conn.execute("INSERT INTO meters (address, bus, protocol, account, tariff, multiplier, "
                 "keep_power, allowance, active) VALUES ('000000000001', 'b1', "
                 "'dlt645-2007', 'A1', 'flat', 1, 0, 0, 1)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (meter,) = store.meters()
    assert meter.address == "000000000001" and meter.behind is None
    with store.transaction():  # the daemon registers the file's meters again at start
        store.add_meter(MeterRecord("000000000001", "b1", "A1", "flat", behind=TOTAL))
    assert store.meter("000000000001").behind == TOTAL
    store.close()


def test_a_replacement_inherits_the_area_of_the_meter_it_replaces(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.add_meter(MeterRecord("000000000001", "b1", "A1", "flat", behind=TOTAL),
                    Decimal(0), T0)
    write, _ = commission(store, None, None, {
        "action": "replace", "old": "000000000001", "new": "000000000002",
        "old_final_kwh": "10.00", "new_initial_kwh": "0.00"}, "technician:t", T0)
    with store.transaction():
        assert write()["behind"] == TOTAL
    assert [(m.address, m.behind) for m in store.meters()] == [("000000000002", TOTAL)]
    assert not store.meter("000000000001").active  # out of the area's sales
    store.close()
