"""Bounded storage: retention never removes what the head end has not acknowledged, and the
ledger stays exact (balance = sum of entries) and de-duplicating after compaction."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from edge_agent.config import RetentionConfig
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import Store

START = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetentionConfig()


def _ack_all(store: Store) -> None:
    store.acknowledge([seq for seq, _, _ in store.pending(limit=10**9)])


def _fill(store: Store, days: int, meters: int = 3) -> None:
    """`days` of hourly readings (two quantities) and charges for a few meters."""
    for hour in range(days * 24):
        ts = START + timedelta(hours=hour)
        with store.transaction():
            first_last = store.record_readings(
                (f"m{m}", ts, name, str(hour)) for m in range(meters)
                for name in ("energy", "voltage"))
            assert first_last is not None
            store.enqueue_range("telemetry", *first_last)
            store.append_ledger_entries(
                LedgerEntry(f"gw:charge:m{m}:{hour}", f"A{m}", "charge", Decimal("-0.25"), ts,
                            f"m{m}") for m in range(meters))
            if hour % 24 == 0:
                store.append_ledger_entries([LedgerEntry(f"pay-{hour}", "A0", "topup",
                                                         Decimal("10"), ts)], origin="headend")


def _exact(store: Store) -> None:
    for account, balance in store.balances().items():
        assert store.ledger_sum(account) == balance


def _run(store: Store, now: datetime, passes: int = 200) -> None:
    for _ in range(passes):  # each pass does a bounded amount of work
        store.apply_retention(POLICY, now)


def test_unacknowledged_rows_are_never_removed(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _fill(store, days=100)
    readings, ledger = store.readings_count(), len(store.ledger(limit=10**9))
    _run(store, START + timedelta(days=400))
    # Nothing was acknowledged: every row is still there.
    assert store.readings_count() == readings
    assert len(store.ledger(limit=10**9)) == ledger
    # Acknowledge all but the last 10 days' messages: the rest is pruned, those stay.
    keep_from = START + timedelta(days=90)
    for seq, kind, payload in store.pending(limit=10**9):
        body = store.readings_range(*json.loads(payload)["ref"]) if kind == "telemetry" else None
        if body is None or body[0]["ts"] < keep_from:
            store.acknowledge([seq])
    _run(store, START + timedelta(days=400))
    assert len(store.readings("m0", since=keep_from, limit=10**9)) == 10 * 24 * 2
    for _seq, kind, payload in store.pending(limit=10**9):  # every message still renders
        assert kind != "telemetry" or len(store.readings_range(*json.loads(payload)["ref"])) > 0
    _exact(store)


def test_readings_thin_to_daily_then_monthly(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _fill(store, days=100, meters=1)
    _ack_all(store)
    now = START + timedelta(days=100)
    _run(store, now)
    rows = store.readings("m0", limit=10**9)
    by_age = [(now - datetime.fromisoformat(r["ts"])).days for r in rows]
    recent = [d for d in by_age if d < POLICY.readings_days]
    daily = [d for d in by_age if POLICY.readings_days < d < POLICY.daily_days]
    older = [d for d in by_age if d > POLICY.daily_days]
    january = [r for r in rows if r["ts"] < "2026-02-01"]
    assert len(recent) >= (POLICY.readings_days - 1) * 24 * 2  # every reading
    assert len(daily) <= (POLICY.daily_days - POLICY.readings_days + 1) * 2  # one a day
    # A whole month older than `daily_days` keeps one reading per quantity (January); the
    # month still partly within `daily_days` (February) keeps its daily figures until then.
    assert len(january) == 2
    assert len(older) <= 2 + 9 * 2
    _run(store, START + timedelta(days=900))
    assert store.readings_count() == 0


def test_ledger_compaction_keeps_balances_exact_and_ids_resolvable(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _fill(store, days=60)
    _ack_all(store)
    before = store.balances()
    count = len(store.ledger(limit=10**9))
    _run(store, START + timedelta(days=60))
    assert store.balances() == before
    _exact(store)
    rows = store.ledger(limit=10**9)
    assert len(rows) < count / 3
    carried = [r for r in rows if r["origin"] == "carry"]
    months = {r["id"].split(":")[2] for r in carried}
    assert months == {"2026-01", "2026-02"}
    assert len({r["id"] for r in carried}) == len(carried)  # one per account, month, kind
    # A top-up the head end resends after its entry was compacted is still a no-op.
    assert store.append_ledger_entries([LedgerEntry("pay-0", "A0", "topup", Decimal("10"),
                                                    START)], origin="headend") == []
    assert store.balances() == before
    _exact(store)
    # Nor are carried entries ever sent: the head end has their originals.
    assert all(e["id"] != c["id"] for c in carried for e in store.ledger_range(0, 10**9))
    # A later pass folds further entries into the same carried entry of the month.
    _run(store, START + timedelta(days=75))
    ids = [r["id"] for r in store.ledger(limit=10**9) if r["origin"] == "carry"]
    assert len(ids) == len(set(ids))
    assert store.balances() == before
    _exact(store)


def test_events_and_commands_pruned_by_age(tmp_path: Path) -> None:
    from edge_agent.prepaid.records import Event

    store = Store(tmp_path / "agent.db")
    with store.transaction():
        store.record_events([Event("offline", "warning", START, "m0", None, {})])
        store.remember_command("c1", "ok", START)
    store.apply_retention(POLICY, START + timedelta(days=POLICY.events_days + 1))
    assert len(store.events()) == 1  # its message is not acknowledged yet
    _ack_all(store)
    store.apply_retention(POLICY, START + timedelta(days=POLICY.events_days + 1))
    assert store.events() == []
    assert not store.command_seen("c1")


def test_database_is_private_and_incrementally_vacuumed(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    with store.transaction():
        store.set_setting("x", "y")
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{tmp_path / 'agent.db'}{suffix}")
        if path.exists():
            assert path.stat().st_mode & 0o077 == 0, path
    assert store.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_migration_from_v1_backs_up_and_vacuums(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path)  # a version-1 database as the previous release made it
    conn.execute("PRAGMA journal_mode=WAL")
    from edge_agent.store.database import MIGRATIONS

    MIGRATIONS[0](conn)
    conn.execute("INSERT INTO kv VALUES ('k', 'v1')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.setting("k") == "v1"
    assert store.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    backup = tmp_path / "agent.db.pre-v2.bak"
    assert backup.stat().st_mode & 0o077 == 0
    old = sqlite3.connect(backup)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT value FROM kv").fetchone()[0] == "v1"


def test_fold_cache_is_given_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _fill(store, days=20)
    _ack_all(store)
    store.use_large_cache()
    before = store.conn.execute("PRAGMA cache_size").fetchone()[0]
    assert store.apply_retention(POLICY, START + timedelta(days=20)).ledger_folded > 0
    assert store.conn.execute("PRAGMA cache_size").fetchone()[0] == before
    _exact(store)
