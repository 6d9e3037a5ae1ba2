"""Retention of the concentrator's tables (issue 13): 15-minute, daily and monthly figures by
age, a bounded amount per pass, the queued lineloss/usage messages untouched."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.config import RetentionConfig
from edge_agent.errors import ConfigError
from edge_agent.store import Store
from edge_agent.store import retention as retention_module

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
POLICY = RetentionConfig()


def _rows(store: Store, table: str) -> int:
    return int(store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _fill(store: Store, ages: list[int], meters: int = 2) -> None:
    """Rows of every concentrator table, `ages` days old each (line loss of every period)."""
    with store.transaction():
        for age in ages:
            moment = NOW - timedelta(days=age)
            day = moment.date()
            store.record_quarter(moment.replace(minute=0, second=0),
                                 {f"m{m}": Decimal(age) for m in range(meters)})
            for m in range(meters):
                store.conn.execute(
                    "INSERT INTO frozen_days (meter, day, at, forward, read_at) VALUES "
                    "(?,?,?,?,?)", (f"m{m}", day.isoformat(), moment.isoformat(),
                                    json.dumps([str(age)]), moment.isoformat()))
                store.save_usage(f"A{m}", day, {"account": f"A{m}", "day": day.isoformat(),
                                                "kwh": str(age)})
            for period in ("15min", "day", "month"):
                store.conn.execute(
                    "INSERT INTO line_loss (area, period, start, body, incomplete) VALUES "
                    "(?,?,?,?,0)", ("T1", period, moment.isoformat(),
                                    json.dumps({"period": period, "age": age})))
            store.save_clock(f"clock{age}", moment, moment, 0.5, False)


def _ages(store: Store, sql: str) -> set[int]:
    return {(NOW.date() - date.fromisoformat(r[0][:10])).days for r in store.conn.execute(sql)}


def test_concentrator_figures_kept_by_age(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    ages = [0, 1, 7, 8, 30, 32, 40, 61, 63, 100, 400, 700, 760, 800]
    _fill(store, ages)
    store.apply_retention(POLICY, NOW)
    quarter, daily = POLICY.grid_quarter_days, POLICY.grid_daily_days
    assert _ages(store, "SELECT quarter FROM quarter_readings") == {a for a in ages
                                                                     if a < quarter}
    assert _ages(store, "SELECT start FROM line_loss WHERE period='15min'") == {
        a for a in ages if a < quarter}
    # Daily figures: every freeze backfill and the month's line loss need stays (>= 32 days).
    for sql in ("SELECT day FROM frozen_days", "SELECT day FROM daily_usage",
                "SELECT start FROM line_loss WHERE period='day'",
                "SELECT read_at FROM meter_clocks"):
        assert _ages(store, sql) == {a for a in ages if a < daily}, sql
    # Monthly line loss: the 24 months before this one, and this one.
    months = _ages(store, "SELECT start FROM line_loss WHERE period='month'")
    assert months == {a for a in ages if a <= 700}  # 700 days: 2024-07; 760: 2024-05
    assert store.freeze_days("m0", NOW.date() - timedelta(days=8)) == {
        NOW.date() - timedelta(days=a) for a in (0, 1, 7, 8)}


def test_queued_lineloss_and_usage_messages_survive_their_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _fill(store, [100])
    queued = [(kind, payload) for _, kind, payload in store.pending(limit=10**6)]
    assert any(kind == "usage" for kind, _ in queued)
    store.apply_retention(POLICY, NOW)
    assert _rows(store, "daily_usage") == 0
    # The message carries its own copy of the row: nothing it needs was removed.
    assert [(kind, payload) for _, kind, payload in store.pending(limit=10**6)] == queued
    assert all(json.loads(payload) for _, payload in queued)


def test_each_pass_removes_a_bounded_number_of_rows(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention_module, "GRID_CHUNK", 5)
    store = Store(tmp_path / "agent.db")
    _fill(store, [40 + n for n in range(6)], meters=2)  # 12 old quarter values
    assert _rows(store, "quarter_readings") == 12
    assert store.apply_retention(POLICY, NOW).grid <= 5 * 7
    assert _rows(store, "quarter_readings") == 7
    store.apply_retention(POLICY, NOW)  # the day is not done: the next pass goes on
    store.apply_retention(POLICY, NOW)
    assert _rows(store, "quarter_readings") == 0
    # Once a pass found less than a chunk, the day is done: new old rows wait for tomorrow.
    _fill(store, [50], meters=1)
    store.apply_retention(POLICY, NOW + timedelta(hours=1))
    assert _rows(store, "quarter_readings") == 1
    store.apply_retention(POLICY, NOW + timedelta(days=1))
    assert _rows(store, "quarter_readings") == 0


def test_retention_keys_in_config(tmp_path: Path) -> None:
    from edge_agent.config import load_config

    base = tmp_path / "agent.toml"
    base.write_text('[agent]\ngateway_id = "gw1"\n\n[retention]\ngrid_quarter_days = 10\n'
                    "grid_daily_days = 40\ngrid_monthly_months = 12\n")
    config = load_config(base, quantities=False)
    assert config.retention == replace(RetentionConfig(), grid_quarter_days=10,
                                       grid_daily_days=40, grid_monthly_months=12)
    base.write_text('[agent]\ngateway_id = "gw1"\n\n[retention]\ngrid_daily_days = 20\n'
                    "grid_quarter_days = 0\n")
    with pytest.raises(ConfigError) as error:
        load_config(base, quantities=False)
    assert "[retention].grid_daily_days: 20 is below 32" in str(error.value)
    assert "[retention].grid_quarter_days: 0 must be positive" in str(error.value)
