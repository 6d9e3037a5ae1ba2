"""The concentrator's anomaly watch reads each meter's newest values; since schema 5 a
reading row holds a whole poll, pointed at from meter_state (no `latest` copy)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from edge_agent.store import MeterRecord, Store


def test_latest_values_come_from_the_newest_poll_row(tmp_path) -> None:
    store = Store(tmp_path / "agent.db")
    t0, t1 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 0, 15, tzinfo=UTC)
    with store.transaction():
        store.add_meter(MeterRecord("000000000001", "bus1", "A1", "flat"), Decimal(0), t0)
    with store.transaction():
        store.record_readings([("000000000001", t0, "forward_active_total", "1.00"),
                               ("000000000001", t0, "active_power_total", "0.5000")])
    with store.transaction():
        store.record_readings([("000000000001", t1, "forward_active_total", "1.25"),
                               ("000000000001", t1, "active_power_total", "1.0000")])
    values = store.latest_values(["forward_active_total", "active_power_total"])
    assert values["000000000001"]["forward_active_total"] == (int(t1.timestamp()), "1.25")
    assert values["000000000001"]["active_power_total"][1] == "1.0000"
    assert store.latest_reading("000000000001", "forward_active_total") == "1.25"
    store.close()
