"""The database itself: connections, schema and migrations, transactions.

SQLite in WAL mode, so the CLI reads while the daemon writes; each thread has its own
connection and rows come back by name (`sqlite3.Row`).  Each poll cycle writes in one
transaction (SD cards wear).  The table groups live beside this module (`meters`, `ledger`,
`state`, `readings`, `outbox`, `settings`); `Store` in `__init__` is all of them on one database.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import StorageError


def _import_sqlite_utils():  # type: ignore[no-untyped-def]
    """sqlite-utils imports numpy and pandas when installed, only to map their types.  The
    agent stores neither, and on a gateway those 13+ MB of memory matter, so they are hidden
    from that one import (unless something already loaded them)."""
    blocked = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import sqlite_utils as module
    finally:
        for name in blocked:
            sys.modules.pop(name, None)
    return module


if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 4


def _migration_1(db: sqlite_utils.Database) -> None:
    db["meters"].create({
        "address": str, "bus": str, "protocol": str, "account": str, "tariff": str,
        "multiplier": int, "keep_power": int, "allowance": int, "unit": int, "model": str,
        "commissioned_at": str, "commission_kwh": str, "active": int, "replaced_by": str,
    }, pk="address")
    db["accounts"].create({"id": str, "balance_micro": int, "alerts": str}, pk="id")
    db["meter_state"].create({
        "address": str, "last_kwh": str, "last_rates": str, "last_ts": str, "charge_seq": int,
        "tier_period": str, "tier_used": str, "allowance_month": str, "allowance_used": str,
        "last_daily": str, "phase": str, "alarm_since": str, "deferred": str, "cwt": int,
        "relay": str, "online": int, "last_seen": str, "polls": int, "replies": int,
        "day_polls": int, "day_replies": int,
    }, pk="address")
    # Readings are appended in time order (rowid table, index on time only): each cycle
    # writes to the end of the file instead of touching one page per meter, which is both
    # faster and kinder to an SD card.  The latest value per meter and quantity is kept in
    # `latest` for the tamper check and the CLI.
    db.execute("""CREATE TABLE readings (ts INTEGER NOT NULL, meter TEXT NOT NULL,
                  name TEXT NOT NULL, value TEXT NOT NULL)""")
    db.execute("CREATE INDEX readings_ts ON readings (ts)")
    db.execute("""CREATE TABLE latest (meter TEXT NOT NULL, name TEXT NOT NULL,
                  ts INTEGER NOT NULL, value TEXT NOT NULL, PRIMARY KEY (meter, name))
                  WITHOUT ROWID""")
    # The ledger is append-only (rows are never deleted), so a plain rowid is already
    # strictly increasing; the outbox deletes acknowledged rows and needs AUTOINCREMENT.
    db.execute("""CREATE TABLE ledger (seq INTEGER PRIMARY KEY,
                  id TEXT NOT NULL UNIQUE, account TEXT NOT NULL, kind TEXT NOT NULL,
                  amount TEXT NOT NULL, amount_micro INTEGER NOT NULL, ts TEXT NOT NULL,
                  meter TEXT, detail TEXT, balance_after TEXT NOT NULL, origin TEXT NOT NULL)""")
    db.execute("CREATE INDEX ledger_account ON ledger (account, ts)")
    db.execute("""CREATE TABLE events (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL,
                  meter TEXT, account TEXT, type TEXT NOT NULL, severity TEXT NOT NULL,
                  detail TEXT)""")
    db.execute("""CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                  kind TEXT NOT NULL, payload TEXT NOT NULL, created TEXT NOT NULL)""")
    db.execute("CREATE INDEX outbox_kind ON outbox (kind, seq)")
    db["kv"].create({"key": str, "value": str}, pk="key")
    db["commands_seen"].create({"id": str, "ts": str, "status": str}, pk="id")
    db["tariffs"].create({"id": str, "body": str, "updated_at": str}, pk="id")


def _migration_policy_classes(db: sqlite_utils.Database) -> None:
    """Issue 14: per-account policy class, household tier bonus and top-up sequence; tariff
    versions (an id may have versions waiting for their `effective_from`)."""
    db.execute("ALTER TABLE accounts ADD COLUMN policy_class TEXT")
    db.execute("ALTER TABLE accounts ADD COLUMN tier_bonus_kwh TEXT")
    db.execute("ALTER TABLE accounts ADD COLUMN topup_seq INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE accounts ADD COLUMN topup_ahead TEXT NOT NULL DEFAULT '[]'")
    db.execute("""CREATE TABLE tariff_versions (id TEXT NOT NULL,
                  effective_from TEXT NOT NULL DEFAULT '', body TEXT NOT NULL,
                  updated_at TEXT, PRIMARY KEY (id, effective_from))""")
    db.execute("INSERT INTO tariff_versions (id, effective_from, body, updated_at) "
               "SELECT id, '', body, updated_at FROM tariffs")
    db.execute("DROP TABLE tariffs")


def _migration_grid(db: sqlite_utils.Database) -> None:
    from edge_agent.store.grid import migration_grid

    migration_grid(db)


def _migration_command_results(db: sqlite_utils.Database) -> None:
    """Remember what a command was (its digest) and what it answered, so a redelivery gets
    the same result again; who set each meter setting (file or head end)."""
    db["commands_seen"].add_column("digest", str)
    db["commands_seen"].add_column("result", str)
    db["meter_settings"].create({"address": str, "name": str, "value": str, "source": str,
                                 "at": str, "file_value": str}, pk=("address", "name"))


MIGRATIONS = [_migration_1, _migration_policy_classes, _migration_grid,
              _migration_command_results]


def to_iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).isoformat()


def wire_time(moment: datetime | str | None) -> str | None:
    """The contract's time format: RFC 3339 UTC, whole seconds, `Z` (2026-11-22T10:00:00Z).

    The database keeps microseconds (ordering within a second); messages never do."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def to_decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


class Database:
    """The agent's database: open once per process; thread-safe for one writer at a time."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly  # a user who may read but not write the database (CLI)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                # Without a write-ahead log beside it (no daemon writing), a reader that may
                # not create the -shm file opens the file as immutable; with one, the
                # daemon's -shm is there to share.
                wal = self.path.with_name(self.path.name + "-wal").exists()
                query = "mode=ro" if wal else "mode=ro&immutable=1"
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{query}", uri=True,
                                       timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA schema_version").fetchone()  # fails now, not later
            else:
                conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}"
                               f"{' read-only' if self.readonly else ''}: {exc}") from None
        conn.execute("PRAGMA synchronous=FULL")  # a committed ledger entry survives power loss
        conn.execute("PRAGMA busy_timeout=30000")
        conn.row_factory = sqlite3.Row
        with self._guard:
            self._connections.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection: each thread has its own, so transactions never mix."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._local.db = None  # sqlite-utils on first use (CLI start-up time)
            self._local.depth = 0
        return conn

    def use_large_cache(self) -> None:
        """Give this thread's connection a 16 MiB page cache (the writer's ledger indexes
        stay cached); other threads keep SQLite's small default."""
        if not getattr(self._local, "large_cache", False):
            self.conn.execute("PRAGMA cache_size=-16384")
            self._local.large_cache = True

    def scratch(self) -> None:
        """A throw-away database (`bill replay`): commits need not reach the disk, so this
        thread's connection stops waiting for fsync."""
        self.conn.execute("PRAGMA synchronous=OFF")

    @property
    def db(self) -> sqlite_utils.Database:
        conn = self.conn
        if self._local.db is None:
            self._local.db = _import_sqlite_utils().Database(conn)
        return self._local.db

    def close(self) -> None:
        with self._guard:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(f"database {self.path} has schema {version}, newer than this "
                               f"agent understands ({SCHEMA_VERSION}); upgrade edge-agent")
        if self.readonly:
            if version < SCHEMA_VERSION:
                raise StorageError(f"database {self.path} has schema {version}; the daemon "
                                   f"(or a user who may write it) must upgrade it first")
            return
        if version == SCHEMA_VERSION:
            return
        db = self.db  # sqlite-utils loads before the write lock is taken, not while held
        for number in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                # Another process (the daemon and a CLI verb, both opening a new file) may
                # have migrated meanwhile: look again under the write lock.
                if self.conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                    continue
                MIGRATIONS[number - 1](db)
                self.conn.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested calls in the same thread join the outer one)."""
        conn = self.conn
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        if self.readonly:
            raise StorageError(f"cannot write the database {self.path}: opened read-only "
                               "(this user may not write it; run as the agent's user)")
        conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0













    def _last_rowid(self) -> int:
        return int(self.conn.execute("SELECT last_insert_rowid()").fetchone()[0])
