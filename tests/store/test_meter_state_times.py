"""Schema 11: `meter_state`'s two times (rewritten for every meter at every cycle) are stored
as microseconds since the epoch and read back as the same text `to_iso` gave before."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.store import SCHEMA_VERSION, MeterRecord, Store
from edge_agent.store import database as database_module
from edge_agent.store.database import epoch_micro, iso_sql, to_iso

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_generated_text_is_to_iso_exactly() -> None:
    rng = random.Random(11)
    moments = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999999,
                                                             tzinfo=UTC),
               datetime(1900, 3, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2099, 12, 31, 23, 59, 59,
                                                                      tzinfo=UTC),
               T0.astimezone(timezone(timedelta(hours=8))), T0 + timedelta(microseconds=10)]
    moments += [datetime(1950, 1, 1, tzinfo=UTC) + timedelta(
        seconds=rng.randint(0, 150 * 365 * 86400), microseconds=rng.choice(
            [0, 1, 999999, rng.randint(0, 999999)])) for _ in range(500)]
    conn = sqlite3.connect(":memory:")
    sql = iso_sql("?1")
    for moment in moments:
        assert conn.execute(f"SELECT {sql}", (epoch_micro(moment),)).fetchone()[0] == to_iso(
            moment), moment
    assert conn.execute(f"SELECT {sql}", (None,)).fetchone()[0] is None
    assert epoch_micro(None) is None


def test_a_poll_is_stored_as_an_integer_and_read_as_text(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.add_meter(MeterRecord("m0", "bus1", "A0", "flat"), Decimal("5"), T0)
    seen = T0 + timedelta(minutes=15, microseconds=123456)
    store.record_poll([("m0", True, seen)])
    row = store.conn.execute("SELECT ts_us, seen_us, typeof(ts_us), typeof(seen_us), last_ts, "
                             "last_seen FROM meter_state").fetchone()
    assert tuple(row) == (epoch_micro(T0), epoch_micro(seen), "integer", "integer",
                          to_iso(T0), to_iso(seen))
    assert store.meter_status()[0]["last_reading"] == to_iso(seen)
    assert store.billing_states()["m0"].last_ts == T0


def test_schema_10_times_migrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.db"
    seen = "2026-03-01T12:15:00.000007+00:00"
    with monkeypatch.context() as patch:  # a database as schema 10 made and filled it
        patch.setattr(database_module, "SCHEMA_VERSION", 10)
        old = Store(path)
        with old.transaction():
            for m, (ts, last) in enumerate([(T0.isoformat(), seen), (None, None)]):
                old.conn.execute(
                    "INSERT INTO meter_state (address, last_kwh, last_ts, last_seen, charge_seq, "
                    "phase, online, polls, replies, cwt) VALUES (?, '0', ?, ?, 7, 'normal', 1, "
                    "0, 0, 0)", (f"m{m}", ts, last))
        old.close()
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11
    rows = store.conn.execute("SELECT address, ts_us, last_ts, last_seen, charge_seq FROM "
                              "meter_state ORDER BY address").fetchall()
    assert [tuple(r) for r in rows] == [("m0", epoch_micro(T0), T0.isoformat(), seen, 7),
                                        ("m1", None, None, None, 7)]


def test_an_sqlite_too_old_for_the_schema_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.errors import StorageError

    monkeypatch.setattr(database_module, "SQLITE_NEEDED", (99, 0))
    with pytest.raises(StorageError, match=r"SQLite 3\.\d+\.\d+ is too old: edge-agent needs "
                                           r"99\.0 or newer"):
        Store(tmp_path / "agent.db")
    assert not (tmp_path / "agent.db.pre-v1.bak").exists()


_KILLED_IN_THE_MIGRATION = """
import os, signal, sys
sys.path.insert(0, {root!r})
from edge_agent.store import Store
from edge_agent.store import database

real = database.MIGRATIONS[10]
def dying(db):  # schema 11 half done: a column added, another dropped, then the power fails
    db.execute("ALTER TABLE meter_state ADD COLUMN ts_us INTEGER")
    db.execute("ALTER TABLE meter_state DROP COLUMN last_seen")
    os.kill(os.getpid(), signal.SIGKILL)
assert real.__name__ == "_migration_meter_state_times"
database.MIGRATIONS[10] = dying
Store({path!r})
"""


def test_a_kill_in_the_middle_of_the_migration_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each migration is one transaction: a process killed after schema 11's first ALTERs
    leaves schema 10 with its text times, and the next start migrates it whole."""
    import subprocess
    import sys

    path = tmp_path / "agent.db"
    seen = "2026-03-01T12:15:00.000007+00:00"
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "SCHEMA_VERSION", 10)
        old = Store(path)
        with old.transaction():
            old.conn.execute(
                "INSERT INTO meter_state (address, last_kwh, last_ts, last_seen, charge_seq, "
                "phase, online, polls, replies, cwt) VALUES ('m0', '0', ?, ?, 7, 'normal', 1, "
                "0, 0, 0)", (T0.isoformat(), seen))
        old.close()
    script = _KILLED_IN_THE_MIGRATION.format(root=str(Path(__file__).resolve().parents[2]),
                                             path=str(path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -9, done.stderr
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 10
        assert raw.execute("SELECT last_ts, last_seen FROM meter_state").fetchone() == (
            T0.isoformat(), seen)
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert tuple(store.conn.execute("SELECT ts_us, last_ts, last_seen, charge_seq FROM "
                                    "meter_state").fetchone()) == (epoch_micro(T0),
                                                                   T0.isoformat(), seen, 7)
