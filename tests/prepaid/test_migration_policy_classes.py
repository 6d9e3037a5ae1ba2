"""A schema-1 database (before issue 14) migrates: pushed tariffs become versions, accounts
gain class, bonus and top-up sequence."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from edge_agent.store import Store
from edge_agent.store.database import _migration_1


def test_schema_1_database_migrates(tmp_path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    _migration_1(sqlite_utils.Database(conn))
    conn.execute("INSERT INTO tariffs VALUES ('pushed', 'body', '2026-11-01T00:00:00+00:00')")
    conn.execute("INSERT INTO accounts VALUES ('A1', 5000000, '{}')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.tariffs() == {"pushed": "body"}
    assert [(v["id"], v["effective_from"]) for v in store.tariff_versions()] == [("pushed", "")]
    assert store.account_settings() == {"A1": (None, 0)}
    assert store.topup_sequence("A1") == (0, frozenset())
    store.close()
