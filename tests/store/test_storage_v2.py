"""Schema 2's compact storage reads back exactly what was written: a poll per reading row,
telemetry messages within the schema's 500 readings, deflated ledger details, the newest
reading of a meter, spending per day; and a `sync` by ids holds the ledger rows it names."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.config import RetentionConfig
from edge_agent.headend.messages import render
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import MeterRecord, Store
from edge_agent.store.ledger import decode_detail, encode_detail
from edge_agent.store.retention import RetentionSchedule

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NAMES = [f"q{n}" for n in range(10)]


def test_poll_rows_render_as_readings_within_the_message_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    with store.transaction():
        rows = [(f"m{m}", T0, name, f"{m}.{n}") for m in range(120)
                for n, name in enumerate(NAMES)]
        first, last = store.record_readings(rows)
        assert last - first + 1 == 120  # one row per poll
        store.enqueue_range("telemetry", first, last)
    seen = []
    for seq, kind, payload in store.pending(limit=1000):
        body = render(store, kind, payload)
        assert body is not None and seq
        assert len(body["readings"]) <= 500
        seen += [(r["meter"], r["name"], r["value"]) for r in body["readings"]]
    assert seen == [(m, n, v) for m, _, n, v in rows]
    assert store.readings_count() == 1200
    assert store.readings("m7", limit=3) == [
        {"meter": "m7", "ts": T0.isoformat(), "name": n, "value": f"7.{i}"}
        for i, n in enumerate(NAMES[:3])]


def test_latest_reading_is_the_newest_poll(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.add_meter(MeterRecord("m1", "bus", "A1", "flat"), Decimal("0"), T0)
    with store.transaction():
        for hour in range(3):
            store.record_readings([("m1", T0 + timedelta(hours=hour), "cover_open_count",
                                    str(hour)), ("m1", T0 + timedelta(hours=hour), "x", "1")])
    assert store.latest_reading("m1", "cover_open_count") == "2"
    assert store.latest_reading("m1", "nothing") is None
    assert Store(tmp_path / "agent.db").latest_reading("m1", "cover_open_count") == "2"


def test_details_round_trip() -> None:
    for detail in ({}, {"kwh": "0.25", "from": "2026-01-01T00:15:00+00:00", "register": "1.00",
                        "tariff": "flat", "pieces": [{"kwh": "0.25", "price": "0.56",
                                                       "label": "flat"}]},
                   {"note": "电费 top-up " * 30}, {"a": [1, 2, {"b": None}]}):
        text = json.dumps(detail, ensure_ascii=False, separators=(",", ":"))
        stored = encode_detail(text)
        assert decode_detail(stored) == detail
        assert len(stored) <= len(text.encode())


def test_spending_per_day_matches_the_ledger(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    now = datetime.now(UTC).replace(microsecond=0)
    entries = [LedgerEntry(f"gw:charge:m1:{n}", "A1", "charge", Decimal("-1.50"),
                           now - timedelta(hours=6 * n), "m1") for n in range(40)]
    store.append_ledger_entries(entries)
    # Whole days are exact; the first day of the window counts in proportion.
    since = (now - timedelta(days=5)).replace(hour=0, minute=0, second=0)
    exact = sum(-e.amount for e in entries if e.ts >= since)
    assert store.charges_since("A1", since) == exact
    rows = store.conn.execute("SELECT COUNT(*) FROM ledger_days").fetchone()[0]
    store.apply_retention(RetentionConfig(), now + timedelta(days=95))
    assert store.conn.execute("SELECT COUNT(*) FROM ledger_days").fetchone()[0] < rows


def test_sync_by_ids_holds_the_entries_it_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    old = T0 - timedelta(days=60)
    store.append_ledger_entries([LedgerEntry(f"gw:charge:m1:{n}", "A1", "charge",
                                             Decimal("-1"), old + timedelta(hours=n), "m1")
                                 for n in range(48)])
    store.acknowledge([seq for seq, _, _ in store.pending(limit=100)])
    store.requeue_ledger_ids(["gw:charge:m1:3"])  # the head end asks for one again
    for _ in range(5):
        store.apply_retention(RetentionConfig(), T0)
    assert [e["id"] for e in store.ledger_entries_by_id(["gw:charge:m1:3"])] == [
        "gw:charge:m1:3"]
    (_, kind, payload), = store.pending(limit=10)
    assert render(store, kind, payload)["entries"][0]["id"] == "gw:charge:m1:3"
    assert store.balance("A1") == store.ledger_sum("A1") == Decimal("-48")


def test_daemon_schedule_runs_a_pass_on_the_writer_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    with store.transaction():
        store.remember_command("c1", "ok", T0)
    ticks = iter([0.0, 30.0, 61.0, 62.0, 62.0, 700.0])
    clock = {"t": 0.0}

    def monotonic() -> float:
        clock["t"] = next(ticks, clock["t"])
        return clock["t"]

    with ThreadPoolExecutor(1) as writer:
        schedule = RetentionSchedule(store, RetentionConfig, lambda: T0 + timedelta(days=40),
                                     monotonic, writer.submit)
        schedule.tick()  # 30 s after start: not yet
        assert schedule._running is None
        schedule.tick()  # 61 s: a pass
        assert schedule._running is not None
        assert schedule._running.result(10).commands == 1
        first = schedule._running
        schedule.tick()  # 62 s: the next one is 10 minutes later
        assert schedule._running is first
    assert not store.command_seen("c1")


def test_a_retention_pass_that_fails_on_a_bug_is_logged_at_err(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody waits on the pass's future: an unexpected error (not SQLite's) used to stay in
    it, unseen; it is logged at err with its traceback and the next pass runs as planned."""
    import logging

    store = Store(tmp_path / "agent.db")

    def broken(*_: object) -> None:
        raise KeyError("grid_quarter_days")

    monkeypatch.setattr(store, "_prune_grid", broken)
    ticks = iter([0.0, 61.0])
    with ThreadPoolExecutor(1) as writer, caplog.at_level(logging.ERROR, logger="edge_agent"):
        schedule = RetentionSchedule(store, RetentionConfig, lambda: T0 + timedelta(days=40),
                                     lambda: next(ticks, 61.0), writer.submit)
        schedule.tick()
        assert schedule._running is not None
        assert not schedule._running.result(10)  # nothing pruned, nothing raised
    (record,) = [r for r in caplog.records if "retention pass failed" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is not None
