"""The database itself: connections, schema and migrations, transactions.

SQLite in WAL mode, so the CLI reads while the daemon writes; each thread has its own
connection and rows come back by name (`sqlite3.Row`).  Each poll cycle writes in one
transaction (SD cards wear).  The table groups live beside this module (`meters`, `ledger`,
`state`, `readings`, `outbox`, `settings`); `Store` in `__init__` is all of them on one database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge_agent.errors import StorageError

SCHEMA_VERSION = 11
SQLITE_NEEDED = (3, 35, 5)  # DROP COLUMN (schema 11), fixed in 3.35.5; generated columns 3.31
BACKUPS_KEPT = 3  # pre-migration copies kept beside the database
# Tuned for an SD card (see docs/storage.md): a larger WAL between checkpoints means a page
# changed by several cycles is copied into the database once, not once per cycle.
WAL_AUTOCHECKPOINT_PAGES = 4096  # 16 MiB of WAL at 4 KiB pages
JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint
# Page caches (KiB).  The writer touches few pages per cycle now that nothing it writes is
# indexed per meter or account (schema 2): 4 MiB hold them all with 2,048 meters.  Other
# threads (head-end link, control socket, CLI) read little: 512 KiB each.
WRITER_CACHE_KIB = 2048
READER_CACHE_KIB = 128


Connection = sqlite3.Connection


def _migration_1(db: Connection) -> None:
    # The first release made these with sqlite-utils; the same tables, in plain SQL (the
    # library cost the daemon 9 MB of memory for nothing else).
    db.execute("""CREATE TABLE [meters] ([address] TEXT PRIMARY KEY, [bus] TEXT,
                  [protocol] TEXT, [account] TEXT, [tariff] TEXT, [multiplier] INTEGER,
                  [keep_power] INTEGER, [allowance] INTEGER, [unit] INTEGER, [model] TEXT,
                  [commissioned_at] TEXT, [commission_kwh] TEXT, [active] INTEGER,
                  [replaced_by] TEXT)""")
    db.execute("""CREATE TABLE [accounts] ([id] TEXT PRIMARY KEY, [balance_micro] INTEGER,
                  [alerts] TEXT)""")
    db.execute("""CREATE TABLE [meter_state] ([address] TEXT PRIMARY KEY, [last_kwh] TEXT,
                  [last_rates] TEXT, [last_ts] TEXT, [charge_seq] INTEGER, [tier_period] TEXT,
                  [tier_used] TEXT, [allowance_month] TEXT, [allowance_used] TEXT,
                  [last_daily] TEXT, [phase] TEXT, [alarm_since] TEXT, [deferred] TEXT,
                  [cwt] INTEGER, [relay] TEXT, [online] INTEGER, [last_seen] TEXT,
                  [polls] INTEGER, [replies] INTEGER, [day_polls] INTEGER,
                  [day_replies] INTEGER)""")
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
    db.execute("CREATE TABLE [kv] ([key] TEXT PRIMARY KEY, [value] TEXT)")
    db.execute("CREATE TABLE [commands_seen] ([id] TEXT PRIMARY KEY, [ts] TEXT, [status] TEXT)")
    db.execute("""CREATE TABLE [tariffs] ([id] TEXT PRIMARY KEY, [body] TEXT,
                  [updated_at] TEXT)""")


def _migration_policy_classes(db: Connection) -> None:
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


def _migration_grid(db: Connection) -> None:
    from edge_agent.store.grid import migration_grid

    migration_grid(db)


def _migration_command_results(db: Connection) -> None:
    """Remember what a command was (its digest) and what it answered, so a redelivery gets
    the same result again; who set each meter setting (file or head end)."""
    db.execute("ALTER TABLE commands_seen ADD COLUMN digest TEXT")
    db.execute("ALTER TABLE commands_seen ADD COLUMN result TEXT")
    db.execute("""CREATE TABLE meter_settings (address TEXT NOT NULL, name TEXT NOT NULL,
                  value TEXT, source TEXT, at TEXT, file_value TEXT,
                  PRIMARY KEY (address, name))""")



def _migration_retention(db: Connection) -> None:
    """Bounded storage and fewer bytes per reading (docs/storage.md).

    The ledger loses its two indexes that each cycle touched in 1,024 places (one page per
    account or meter: megabytes of WAL a cycle).  Ids stay unique through a partial index over
    the entries that come from outside (top-ups, adjustments); the gateway's own entries are
    unique by construction (a per-meter sequence advanced in the same transaction).  Spending
    per account and day goes to `ledger_days`, whose rows for today sit together.  The ids of
    compacted entries stay resolvable in `ledger_gone` (a 64-bit hash each)."""
    db.execute("""CREATE TABLE ledger_v2 (seq INTEGER PRIMARY KEY,
                  id TEXT NOT NULL, account TEXT NOT NULL, kind TEXT NOT NULL,
                  amount TEXT NOT NULL, amount_micro INTEGER NOT NULL, ts TEXT NOT NULL,
                  meter TEXT, detail TEXT, balance_after TEXT NOT NULL, origin TEXT NOT NULL)""")
    db.execute("INSERT INTO ledger_v2 SELECT seq, id, account, kind, amount, amount_micro, ts, "
               "meter, detail, balance_after, origin FROM ledger ORDER BY seq")
    db.execute("DROP TABLE ledger")
    db.execute("ALTER TABLE ledger_v2 RENAME TO ledger")
    db.execute("CREATE UNIQUE INDEX ledger_id ON ledger (id) WHERE origin != 'gateway'")
    db.execute("""CREATE TABLE ledger_days (day TEXT NOT NULL, account TEXT NOT NULL,
                  kind TEXT NOT NULL, micro INTEGER NOT NULL, PRIMARY KEY (day, account, kind))
                  WITHOUT ROWID""")
    db.execute("INSERT INTO ledger_days SELECT substr(ts, 1, 10), account, kind, "
               "SUM(amount_micro) FROM ledger GROUP BY 1, 2, 3")
    db.execute("""CREATE TABLE ledger_gone (hash INTEGER PRIMARY KEY, ts INTEGER NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS commands_seen_ts ON commands_seen (ts)")
    # A reading row holds a whole poll: `name` is `#<id>` of its list of quantities here.
    # The newest row of each meter is pointed at from `meter_state` (rewritten every cycle
    # anyway) instead of copied into `latest` (which stays for rows of schema 1).
    db.execute("ALTER TABLE meter_state ADD COLUMN last_reading INTEGER")
    db.execute("CREATE TABLE shapes (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE)")


def _migration_field_data(db: Connection) -> None:
    """Issue 13: a meter's field data for technicians (location, pole, phase, customer class),
    from agent.toml or the head end's `add_meter`, so the state verbs show it for every meter
    (`store.meters.Meters.meter_locations`); when each 15-minute register was read (a read too
    far from its quarter boundary makes the quarter's line loss incomplete)."""
    db.execute("""CREATE TABLE meter_locations (address TEXT PRIMARY KEY, lat REAL, lon REAL,
                  pole TEXT, phase TEXT, customer_class TEXT, source TEXT NOT NULL,
                  at TEXT)""")
    db.execute("ALTER TABLE quarter_readings ADD COLUMN read_at TEXT")


def _migration_meter_behind(db: Connection) -> None:
    """The total meter a customer meter sits behind (its line-loss area), kept with the meter
    so that meters the head end adds (`add_meter` `behind`) or a technician swaps in
    (`commission replace` inherits it) count in their area's line loss: the concentrator
    reads the areas from the stored meters, not from agent.toml (which seeds it)."""
    db.execute("ALTER TABLE meters ADD COLUMN behind TEXT")


def _migration_day_tables(db: Connection) -> None:
    """15-minute readings in one table per UTC day, `readings_d<N>` (store/readings.py),
    dropped whole by retention once their daily figures are copied into `readings`: deleting
    97 % of a day's rows rewrote every page of it (docs/storage.md).  Day tables are made when
    their first reading comes; rows already in `readings` stay there and are thinned as
    before.  Their rowids (`N << 32 | n`) are above any earlier one, so the outbox's
    references keep their order; nothing stored changes, an agent of schema 5 would not see
    the new rows (hence the version)."""
    db.execute("INSERT OR IGNORE INTO kv (key, value) VALUES ('readings.day_tables', '1')")


def _migration_ledger_day_tables(db: Connection) -> None:
    """The gateway's own ledger entries (charges) in one table per UTC day of their time,
    `ledger_d<N>` (store/ledger.py), which retention folds into the carried-forward entries
    and drops whole: deleting a day of entries from `ledger` rewrote most of its pages on
    some days (docs/storage.md).  `seq` stays one sequence across the tables.  Entries from
    outside (top-ups, adjustments), carried-forward ones and those already stored stay in
    `ledger`; an agent of schema 8 would not see the new tables (hence the version)."""
    db.execute("INSERT OR IGNORE INTO kv (key, value) VALUES ('ledger.day_tables', '1')")


def _migration_ledger_compact_ids(db: Connection) -> None:
    """New ledger day tables store the number at the end of the gateway's entry ids, not the
    ids (`id` is generated from the gateway prefix in the table's definition, kind, meter and
    that number: store/ledger.py).  Tables made before stay as they are until folded.  An
    agent of schema 9 could not insert into the new tables (hence the version)."""
    db.execute("INSERT OR IGNORE INTO kv (key, value) VALUES ('ledger.compact_ids', '1')")


def _migration_meter_state_times(db: Connection) -> None:
    """`meter_state.last_ts` and `last_seen` (written for every meter at every cycle) as
    microseconds since the epoch, `ts_us` and `seen_us`, with the same text given back by
    generated columns of the old names: 34-48 bytes less a row, a quarter of the pages each
    cycle rewrites (docs/storage.md)."""
    db.execute("ALTER TABLE meter_state ADD COLUMN ts_us INTEGER")
    db.execute("ALTER TABLE meter_state ADD COLUMN seen_us INTEGER")
    db.executemany("UPDATE meter_state SET ts_us=?, seen_us=? WHERE address=?",
                   [(epoch_micro(from_iso(ts)), epoch_micro(from_iso(seen)), address)
                    for address, ts, seen in db.execute(
                        "SELECT address, last_ts, last_seen FROM meter_state").fetchall()])
    for name, column in (("last_ts", "ts_us"), ("last_seen", "seen_us")):
        db.execute(f"ALTER TABLE meter_state DROP COLUMN {name}")
        db.execute(f"ALTER TABLE meter_state ADD COLUMN {name} TEXT GENERATED ALWAYS AS "
                   f"({iso_sql(column)}) VIRTUAL")


MIGRATIONS = [_migration_1, _migration_policy_classes, _migration_grid,
              _migration_command_results, _migration_retention, _migration_field_data,
              _migration_meter_behind, _migration_day_tables, _migration_ledger_day_tables,
              _migration_ledger_compact_ids, _migration_meter_state_times]


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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micro(moment: datetime | None) -> int | None:
    """Microseconds since the epoch (exact integer arithmetic): how hot tables store a time
    that `iso_sql` gives back as `to_iso`'s text."""
    if moment is None:
        return None
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return (utc - _EPOCH) // timedelta(microseconds=1)


def iso_sql(column: str) -> str:
    """SQL giving `to_iso`'s text (`2026-01-02T23:45:00.123456+00:00`, no fraction when it is
    zero) of a column of microseconds since the epoch; floor division, so a time before 1970
    (a clock gone wrong) reads back right too."""
    micro = f"(({column} % 1000000 + 1000000) % 1000000)"
    return (f"(CASE WHEN {column} IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%S', "
            f"({column} - {micro}) / 1000000, 'unixepoch') || CASE WHEN {micro} "
            f"THEN printf('.%06d', {micro}) ELSE '' END || '+00:00' END)")


def from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def to_decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def backup_database(source: str | Path, target: str | Path,
                    conn: sqlite3.Connection | None = None) -> Path:
    """An online, consistent copy of the database at `source` (SQLite's backup API: works
    while the daemon writes; the schema is not touched, so an older or newer one is copied
    as it is).  Written under a temporary name beside `target` and renamed, private to its
    owner, as one self-contained file (no -wal)."""
    source, target = Path(source), Path(target)
    if conn is None and not source.is_file():
        raise StorageError(f"no database at {source}")
    if target.is_dir():
        target = target / source.name
    partial = target.with_name(f".{target.name}.partial")
    old = os.umask(0o077)
    own = conn is None
    try:
        if own:
            conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        assert conn is not None
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(str(partial))
        try:
            conn.backup(copy, pages=4096)  # in steps, so the daemon is never held for long
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
        partial.chmod(0o600)
        os.replace(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StorageError(f"backup of {source} to {target} failed: {exc}") from exc
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StorageError(f"backup to {target} failed: {exc.strerror or exc}") from exc
    finally:
        os.umask(old)
        if own and conn is not None:
            conn.close()
    return target


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
        self._private_files()
        self._migrate()

    def _private_files(self) -> None:
        """The database (and its -wal/-shm) readable by its owner only, however the daemon
        was started: balances and meter addresses are customer data."""
        old = os.umask(0o077)
        try:
            for suffix in ("", "-wal", "-shm"):
                path = Path(f"{self.path}{suffix}")
                if suffix == "" and not path.exists():
                    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
                if not path.exists():
                    continue
                info = path.stat()
                if info.st_mode & 0o077 and info.st_uid == os.geteuid():  # ours, too open
                    path.chmod(0o600)
        finally:
            os.umask(old)

    def _connect(self) -> sqlite3.Connection:
        old = os.umask(0o077)  # the -wal and -shm files SQLite creates are private too
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
                conn.execute("PRAGMA busy_timeout=30000")
                if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before the first table
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}"
                               f"{' read-only' if self.readonly else ''}: {exc}") from None
        finally:
            os.umask(old)
        conn.execute("PRAGMA synchronous=FULL")  # a committed ledger entry survives power loss
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
        # Debian builds SQLite with secure_delete on: every deleted row would be overwritten
        # with zeros, i.e. retention would write as much as it frees.  FAST zeroes only what
        # is being written anyway (the file is private to the daemon's user).
        conn.execute("PRAGMA secure_delete=FAST")
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
            self._local.depth = 0
        return conn

    def use_large_cache(self) -> None:
        """Give this thread's connection (the writer's) a larger page cache than readers."""
        if not getattr(self._local, "large_cache", False):
            self.conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._local.large_cache = True

    def scratch(self) -> None:
        """A throw-away database (`bill replay`): commits need not reach the disk, so this
        thread's connection stops waiting for fsync."""
        self.conn.execute("PRAGMA synchronous=OFF")

    def upsert(self, table: str, row: dict[str, Any], pk: str) -> None:
        """Insert `row`, or update the columns it names where `pk` matches."""
        columns = list(row)
        updates = ", ".join(f"[{c}]=excluded.[{c}]" for c in columns if c != pk)
        self.conn.execute(
            f"INSERT INTO [{table}] ({', '.join(f'[{c}]' for c in columns)}) VALUES "
            f"({','.join('?' * len(columns))}) ON CONFLICT([{pk}]) DO "
            + (f"UPDATE SET {updates}" if updates else "NOTHING"), list(row.values()))

    def close(self) -> None:
        with self._guard:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        if sqlite3.sqlite_version_info < SQLITE_NEEDED:  # generated columns, DROP COLUMN
            raise StorageError(f"SQLite {sqlite3.sqlite_version} is too old: edge-agent needs "
                               f"{'.'.join(map(str, SQLITE_NEEDED))} or newer (Debian 12 has "
                               "3.40)")
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
        if version > 0:  # an existing database: keep a copy before changing its schema
            self.backup_before_migration(version)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                # Another process (the daemon and a CLI verb, both opening a new file) may
                # have migrated meanwhile: look again under the write lock.
                if self.conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                    continue
                MIGRATIONS[number - 1](self.conn)
                self.conn.execute(f"PRAGMA user_version={number}")
        if self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            # Incremental vacuum only takes effect after one full VACUUM (once, here).
            self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.conn.execute("VACUUM")

    def backup(self, target: str | Path) -> Path:
        """An online, consistent copy of this database (see `backup_database`)."""
        return backup_database(self.path, target, self.conn)

    def backup_before_migration(self, version: int) -> Path:
        """`agent.db.pre-v<N>.bak` beside the database (the unit's ProtectSystem lets the
        daemon write only there); the last `BACKUPS_KEPT` are kept."""
        target = self.backup(self.path.with_name(f"{self.path.name}.pre-v{version + 1}.bak"))
        old = sorted(self.path.parent.glob(f"{self.path.name}.pre-v*.bak"),
                     key=lambda p: p.stat().st_mtime)
        for stale in old[:-BACKUPS_KEPT]:
            stale.unlink(missing_ok=True)
        return target

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read snapshot over several statements (WAL: a read transaction), so that a
        list of day tables and the queries on them see the same database although the
        writer's retention may drop a table in between.  Inside a transaction: that one."""
        conn = self.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")  # (nothing written: ends the read)

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
