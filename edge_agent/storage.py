"""The one module that speaks SQL: schema, migrations and every query of the agent.

SQLite in WAL mode, so the CLI reads while the daemon writes.  Each poll cycle writes in one
transaction (SD cards wear).  Ledger entries are append-only with a unique id: appending an id
that exists changes nothing, and an account's balance (kept beside the ledger in the same
transaction) always equals the sum of its entries, in integer micro-yuan.  Everything the head
end must hear of is queued in `outbox` in the same transaction that creates it; the outbox row
id is the message's `seq`, so it is strictly increasing and survives restarts.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge_agent.billing import Event, LedgerEntry, MeterBilling
from edge_agent.enforcement import AlertState, MeterEnforcement
from edge_agent.errors import StorageError
from edge_agent.money import format_money, from_micro, to_micro
from edge_agent.tariff import AllowanceState, TierState


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


sqlite_utils = _import_sqlite_utils()

SCHEMA_VERSION = 1
_INSERT_LEDGER = ("INSERT INTO ledger (id, account, kind, amount, amount_micro, ts, meter, "
                  "detail, balance_after, origin) VALUES (?,?,?,?,?,?,?,?,?,?)")
LEDGER_KINDS = ("topup", "charge", "allowance", "adjustment", "opening")


@dataclass(frozen=True)
class MeterRecord:
    address: str
    bus: str
    account: str
    tariff: str
    protocol: str = "dlt645-2007"
    multiplier: int = 1
    keep_power: bool = False
    allowance: bool = False
    unit: int | None = None  # Modbus unit id
    model: str | None = None  # Modbus register map
    commissioned_at: str | None = None
    commission_kwh: str | None = None
    active: bool = True


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


MIGRATIONS = [_migration_1]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).isoformat()


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


class Store:
    """The agent's database: open once per process; thread-safe for one writer at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self.last_readings_range: tuple[int, int] | None = None
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed ledger entry survives power loss
        conn.execute("PRAGMA busy_timeout=30000")
        with self._guard:
            self._connections.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection: each thread has its own, so transactions never mix."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._local.db = sqlite_utils.Database(conn)
            self._local.depth = 0
        return conn

    def use_large_cache(self) -> None:
        """Give this thread's connection a 16 MiB page cache (the writer's ledger indexes
        stay cached); other threads keep SQLite's small default."""
        if not getattr(self._local, "large_cache", False):
            self.conn.execute("PRAGMA cache_size=-16384")
            self._local.large_cache = True

    @property
    def db(self) -> sqlite_utils.Database:
        self.conn  # noqa: B018  (creates this thread's connection)
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
        for number in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                MIGRATIONS[number - 1](self.db)
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

    # -- meters and accounts --------------------------------------------------------------
    def add_meter(self, meter: MeterRecord, initial_kwh: Decimal | None = None,
                  at: datetime | None = None) -> None:
        """Register (or update) a meter; an initial reading makes it the billing baseline."""
        row = meter.__dict__ | {"keep_power": int(meter.keep_power),
                                "allowance": int(meter.allowance), "active": 1}
        existing = self.meter(meter.address)
        with self.transaction():
            if existing is None or initial_kwh is not None:
                row["commissioned_at"] = _iso(at)
                row["commission_kwh"] = None if initial_kwh is None else str(initial_kwh)
            else:
                row["commissioned_at"] = existing.commissioned_at
                row["commission_kwh"] = existing.commission_kwh
            self.db["meters"].upsert(row, pk="address")
            self.ensure_account(meter.account)
            if existing is None or initial_kwh is not None:
                self.conn.execute("DELETE FROM meter_state WHERE address=?", (meter.address,))
                self.conn.execute(
                    "INSERT INTO meter_state (address, last_kwh, last_ts, charge_seq, phase, "
                    "online, polls, replies, cwt) VALUES (?,?,?,0,'normal',1,0,0,0)",
                    (meter.address, None if initial_kwh is None else str(initial_kwh),
                     _iso(at) if initial_kwh is not None else None))

    def replace_meter(self, old: str, new: MeterRecord, old_final_kwh: Decimal,
                      new_initial_kwh: Decimal, at: datetime) -> None:
        """Swap a meter: bill nothing across the swap; the old one keeps its history."""
        with self.transaction():
            if self.meter(old) is None:
                raise StorageError(f"unknown meter {old}")
            self.conn.execute("UPDATE meters SET active=0, replaced_by=? WHERE address=?",
                              (new.address, old))
            self.conn.execute("UPDATE meter_state SET last_kwh=? WHERE address=?",
                              (str(old_final_kwh), old))
            self.add_meter(new, new_initial_kwh, at)

    def set_meter_tariff(self, address: str, tariff: str) -> None:
        with self.transaction():
            if self.meter(address) is None:
                raise StorageError(f"unknown meter {address}")
            self.conn.execute("UPDATE meters SET tariff=? WHERE address=?", (tariff, address))

    def set_keep_power(self, address: str, keep_power: bool) -> None:
        with self.transaction():
            self.conn.execute("UPDATE meters SET keep_power=? WHERE address=?",
                              (int(keep_power), address))

    def remove_meter(self, address: str) -> None:
        with self.transaction():
            if self.meter(address) is None:
                raise StorageError(f"unknown meter {address}")
            self.conn.execute("UPDATE meters SET active=0 WHERE address=?", (address,))

    def meter(self, address: str) -> MeterRecord | None:
        row = self.conn.execute(
            "SELECT address, bus, account, tariff, protocol, multiplier, keep_power, "
            "allowance, unit, model, commissioned_at, commission_kwh, active FROM meters "
            "WHERE address=?", (address,)).fetchone()
        return None if row is None else _meter(row)

    def meters(self, active_only: bool = True) -> list[MeterRecord]:
        rows = self.conn.execute(
            "SELECT address, bus, account, tariff, protocol, multiplier, keep_power, "
            "allowance, unit, model, commissioned_at, commission_kwh, active FROM meters "
            + ("WHERE active=1 " if active_only else "") + "ORDER BY address").fetchall()
        return [_meter(r) for r in rows]

    def ensure_account(self, account: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO accounts (id, balance_micro, alerts) "
                          "VALUES (?, 0, '{}')", (account,))

    def balance(self, account: str) -> Decimal:
        row = self.conn.execute("SELECT balance_micro FROM accounts WHERE id=?",
                                (account,)).fetchone()
        if row is None:
            raise StorageError(f"unknown account {account}")
        return from_micro(row[0])

    def balances(self) -> dict[str, Decimal]:
        return {a: from_micro(m) for a, m in
                self.conn.execute("SELECT id, balance_micro FROM accounts ORDER BY id")}

    def ledger_sum(self, account: str) -> Decimal:
        """The balance recomputed from the ledger itself (for checks and audits)."""
        row = self.conn.execute("SELECT COALESCE(SUM(amount_micro),0) FROM ledger "
                                "WHERE account=?", (account,)).fetchone()
        return from_micro(row[0])

    # -- ledger ---------------------------------------------------------------------------
    def append_ledger_entries(self, entries: Iterable[LedgerEntry], origin: str = "gateway",
                              outbox: bool = True) -> list[dict[str, Any]]:
        """Append entries; ids that exist are skipped.  Returns the rows actually added.

        Balances are read once per batch inside the write transaction (nobody else can write
        meanwhile), advanced in Python, and written back once per account.
        """
        batch = list(entries)
        for entry in batch:
            if entry.kind not in LEDGER_KINDS:
                raise StorageError(f"ledger entry {entry.id}: unknown kind {entry.kind!r}")
        if not batch:
            return []
        with self.transaction():
            conn = self.conn
            # Fast path: usually every id is new.  Insert the lot under a savepoint; if any id
            # was already there, undo it and take the careful path that skips known ids.
            conn.execute("SAVEPOINT ledger_batch")
            before = conn.total_changes
            added, rows, balances = self._ledger_rows(batch, set(), origin)
            conn.executemany(_INSERT_LEDGER.replace("INSERT", "INSERT OR IGNORE"), rows)
            if conn.total_changes - before != len(rows):
                conn.execute("ROLLBACK TO ledger_batch")
                known = self._existing_ids([e.id for e in batch])
                added, rows, balances = self._ledger_rows(batch, known, origin)
                conn.executemany(_INSERT_LEDGER, rows)  # a duplicate now is an error
            conn.execute("RELEASE ledger_batch")
            touched = {row["account"] for row in added}
            conn.executemany("UPDATE accounts SET balance_micro=? WHERE id=?",
                             [(balances[a], a) for a in touched])
            if added and outbox:
                self.enqueue_range("ledger", self._last_rowid() - len(rows) + 1,
                                   self._last_rowid())
        return added

    def _last_rowid(self) -> int:
        return int(self.conn.execute("SELECT last_insert_rowid()").fetchone()[0])

    def _ledger_rows(self, batch: list[LedgerEntry], known: set[str], origin: str
                     ) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]], dict[str, int]]:
        """Rows to insert for the entries whose id is not in `known` (nor repeated)."""
        balances = self.balances_micro({e.account for e in batch})
        added: list[dict[str, Any]] = []
        rows: list[tuple[Any, ...]] = []
        seen = set(known)
        for entry in batch:
            if entry.id in seen:
                continue  # this id is already in the ledger: a no-op
            seen.add(entry.id)
            micro = to_micro(entry.amount)
            if entry.account not in balances:
                self.ensure_account(entry.account)
                balances[entry.account] = 0
            balances[entry.account] += micro
            row = {"id": entry.id, "account": entry.account, "kind": entry.kind,
                   "amount": format_money(entry.amount), "ts": _iso(entry.ts),
                   "meter": entry.meter, "detail": entry.detail,
                   "balance_after": format_money(from_micro(balances[entry.account]))}
            detail = json.dumps(entry.detail, ensure_ascii=False)
            added.append(row)
            rows.append((entry.id, entry.account, entry.kind, row["amount"], micro,
                         row["ts"], entry.meter, detail, row["balance_after"], origin))
        return added, rows, balances

    def _existing_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            found.update(r[0] for r in self.conn.execute(
                f"SELECT id FROM ledger WHERE id IN ({','.join('?' * len(part))})", part))
        return found

    def balances_micro(self, accounts: Iterable[str]) -> dict[str, int]:
        """Balances of these accounts in micro-yuan (accounts that do not exist are left out)."""
        wanted = list(accounts)
        out: dict[str, int] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            out.update(self.conn.execute(
                f"SELECT id, balance_micro FROM accounts WHERE id IN ({','.join('?' * len(part))})",
                part).fetchall())
        return out

    def ledger(self, account: str | None = None, limit: int = 100,
               since_seq: int = 0) -> list[dict[str, Any]]:
        sql = ("SELECT seq, id, account, kind, amount, ts, meter, detail, balance_after, origin "
               "FROM ledger WHERE seq > ?")
        params: list[Any] = [since_seq]
        if account:
            sql += " AND account = ?"
            params.append(account)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = self.conn.execute(sql, params).fetchall()
        return [
            {"seq": r[0], "id": r[1], "account": r[2], "kind": r[3], "amount": r[4],
             "ts": r[5], "meter": r[6], "detail": json.loads(r[7] or "{}"),
             "balance_after": r[8], "origin": r[9]}
            for r in reversed(rows)
        ]

    def ledger_ids(self, account: str | None = None) -> set[str]:
        sql = "SELECT id FROM ledger" + (" WHERE account=?" if account else "")
        return {r[0] for r in self.conn.execute(sql, (account,) if account else ())}

    def ledger_entries_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = list(ids)
        out = []
        for chunk in range(0, len(wanted), 500):
            part = wanted[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            out += self.conn.execute(f"{_LEDGER_MESSAGE_COLUMNS} WHERE id IN ({marks}) "
                                     "ORDER BY seq", part).fetchall()
        return [_ledger_message(r) for r in out]

    def charges_since(self, account: str, since: datetime) -> Decimal:
        """Money spent on energy and fixed charges since `since` (a positive number)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(amount_micro),0) FROM ledger WHERE account=? AND "
            "kind IN ('charge','allowance') AND ts >= ?", (account, _iso(since))).fetchone()
        return -from_micro(row[0])

    # -- billing and enforcement state ----------------------------------------------------
    def billing_states(self) -> dict[str, MeterBilling]:
        rows = self.conn.execute(
            "SELECT m.address, m.account, m.tariff, m.multiplier, m.allowance, "
            "m.commissioned_at, s.last_kwh, s.last_rates, s.last_ts, s.charge_seq, "
            "s.tier_period, s.tier_used, s.allowance_month, s.allowance_used, s.last_daily "
            "FROM meters m JOIN meter_state s ON s.address = m.address WHERE m.active=1")
        out = {}
        for r in rows:
            rates = json.loads(r[7]) if r[7] else None
            out[r[0]] = MeterBilling(
                meter=r[0], account=r[1], tariff=r[2], multiplier=r[3] or 1,
                allowance=bool(r[4]), commissioned_at=_dt(r[5]), last_kwh=_dec(r[6]),
                last_rates=tuple(Decimal(x) for x in rates) if rates else None,
                last_ts=_dt(r[8]), charge_seq=r[9] or 0,
                tier=TierState(r[10] or "", Decimal(r[11] or 0)),
                allowance_state=AllowanceState(r[12] or "", Decimal(r[13] or 0)),
                last_daily=date.fromisoformat(r[14]) if r[14] else None)
        return out

    def save_billing_states(self, states: Iterable[MeterBilling],
                            answered_at: dict[str, tuple[datetime, str | None]] | None = None,
                            previous: dict[str, MeterBilling] | None = None,
                            day_counts: dict[str, tuple[int, int]] | None = None) -> None:
        """Store billing states; with `answered_at`, also count each meter's answered poll
        (one UPDATE per meter per cycle instead of two: this is the hot path).  With
        `previous`, a state whose tier, allowance, daily and rate parts did not change gets
        the short UPDATE."""
        seen = answered_at or {}
        before = previous or {}
        short, full = [], []
        for st in states:
            answered = int(st.meter in seen)
            when, relay = seen.get(st.meter, (None, None))
            day = (day_counts or {}).get(st.meter, (None, None))
            head = (None if st.last_kwh is None else str(st.last_kwh), _iso(st.last_ts),
                    st.charge_seq, answered, answered, answered, _iso(when), relay, *day)
            old = before.get(st.meter)
            if old is not None and (old.tier, old.allowance_state, old.last_daily,
                                    old.last_rates) == (st.tier, st.allowance_state,
                                                        st.last_daily, st.last_rates):
                short.append((*head, st.meter))
            else:
                full.append((*head,
                             json.dumps([str(x) for x in st.last_rates]) if st.last_rates
                             else None, st.tier.period, str(st.tier.used),
                             st.allowance_state.month, str(st.allowance_state.used),
                             st.last_daily.isoformat() if st.last_daily else None, st.meter))
        common = ("UPDATE meter_state SET last_kwh=?, last_ts=?, charge_seq=?, polls=polls+?, "
                  "replies=replies+?, online=CASE WHEN ? THEN 1 ELSE online END, "
                  "last_seen=COALESCE(?, last_seen), relay=COALESCE(?, relay), "
                  "day_polls=COALESCE(?, day_polls), day_replies=COALESCE(?, day_replies)")
        self.conn.executemany(common + " WHERE address=?", short)
        self.conn.executemany(
            common + ", last_rates=?, tier_period=?, tier_used=?, allowance_month=?, "
            "allowance_used=?, last_daily=? WHERE address=?", full)

    def enforcement_states(self) -> dict[str, MeterEnforcement]:
        rows = self.conn.execute(
            "SELECT m.address, m.account, m.keep_power, s.phase, s.alarm_since, s.deferred, "
            "s.cwt FROM meters m JOIN meter_state s ON s.address = m.address "
            "WHERE m.active=1")
        return {r[0]: MeterEnforcement(r[0], r[1], bool(r[2]), r[3] or "normal", _dt(r[4]),
                                       r[5], bool(r[6])) for r in rows}

    def save_enforcement_states(self, states: Iterable[MeterEnforcement]) -> None:
        self.conn.executemany(
            "UPDATE meter_state SET phase=?, alarm_since=?, deferred=?, cwt=? WHERE address=?",
            [(s.phase, _iso(s.alarm_since), s.deferred, int(s.cwt_raised), s.meter)
             for s in states])

    def set_relay(self, address: str, relay: str) -> None:
        self.conn.execute("UPDATE meter_state SET relay=? WHERE address=?", (relay, address))

    def record_poll(self, results: Iterable[tuple[str, bool, datetime]],
                    day_counts: dict[str, tuple[int, int]] | None = None) -> None:
        """Count one poll per meter, and whether it answered."""
        days = day_counts or {}
        self.conn.executemany(
            "UPDATE meter_state SET polls=polls+1, replies=replies+?, online=?, "
            "last_seen=CASE WHEN ? THEN ? ELSE last_seen END, "
            "day_polls=COALESCE(?, day_polls), day_replies=COALESCE(?, day_replies) "
            "WHERE address=?",
            [(int(ok), int(ok), int(ok), _iso(ts), *days.get(a, (None, None)), a)
             for a, ok, ts in results])

    def meter_status(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT m.address, m.bus, m.protocol, m.account, m.tariff, s.last_kwh, s.last_seen, "
            "s.relay, s.phase, s.online, s.day_polls, s.day_replies, a.balance_micro, "
            "m.keep_power "
            "FROM meters m JOIN meter_state s ON s.address=m.address "
            "JOIN accounts a ON a.id=m.account WHERE m.active=1 ORDER BY m.bus, m.address")
        return [{"meter": r[0], "bus": r[1], "protocol": r[2], "account": r[3],
                 "tariff": r[4], "kwh": r[5], "last_reading": r[6], "relay": r[7] or "unknown",
                 "phase": r[8], "online": bool(r[9]), "polls": r[10] or 0,
                 "replies": r[11] or 0,
                 "success_rate": None if not r[10] else round((r[11] or 0) / r[10], 4),
                 "balance": format_money(from_micro(r[12])), "keep_power": bool(r[13])}
                for r in rows]

    def bus_health(self, meters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Per bus: meters, online, requests and replies over the last day, success rate,
        relays open (from `meter_status` rows, given or read)."""
        buses: dict[str, dict[str, Any]] = {}
        for m in self.meter_status() if meters is None else meters:
            bus = buses.setdefault(m["bus"], {"bus": m["bus"], "meters": 0, "online": 0,
                                              "requests": 0, "replies": 0, "relays_open": 0})
            bus["meters"] += 1
            bus["online"] += int(m["online"])
            bus["requests"] += m["polls"]
            bus["replies"] += m["replies"]
            bus["relays_open"] += int(m["relay"] == "open")
        for bus in buses.values():
            bus["success_rate"] = (round(bus["replies"] / bus["requests"], 4)
                                   if bus["requests"] else None)
        return list(buses.values())

    def alert_states(self) -> dict[str, AlertState]:
        out = {}
        for account, text in self.conn.execute("SELECT id, alerts FROM accounts"):
            data = json.loads(text or "{}")
            out[account] = AlertState(frozenset(data.get("levels", [])), data.get("days", False))
        return out

    def save_alert_states(self, states: dict[str, AlertState]) -> None:
        self.conn.executemany("UPDATE accounts SET alerts=? WHERE id=?", [
            (json.dumps({"levels": sorted(s.levels), "days": s.days}), a)
            for a, s in states.items()])

    # -- readings and events --------------------------------------------------------------
    def record_readings(self, rows: Iterable[tuple[str, datetime, str, str]]) -> int:
        """Append (meter, ts, name, value) readings and keep the latest value of each."""
        params = [(int(ts.timestamp()), m, n, v) for m, ts, n, v in rows]
        if not params:
            return 0
        self.conn.executemany("INSERT INTO readings (ts, meter, name, value) VALUES (?,?,?,?)",
                              params)
        self.last_readings_range = (self._last_rowid() - len(params) + 1, self._last_rowid())
        self.conn.executemany(
            "INSERT INTO latest (ts, meter, name, value) VALUES (?,?,?,?) "
            "ON CONFLICT(meter, name) DO UPDATE SET ts=excluded.ts, value=excluded.value "
            "WHERE excluded.ts >= latest.ts", params)
        return len(params)

    def readings(self, meter: str, limit: int = 100,
                 since: datetime | None = None) -> list[dict[str, Any]]:
        """Readings of one meter, newest first (a time window keeps the scan short)."""
        start = 0 if since is None else int(since.timestamp())
        rows = self.conn.execute("SELECT ts, name, value FROM readings WHERE ts >= ? AND "
                                 "meter=? ORDER BY ts DESC LIMIT ?",
                                 (start, meter, limit)).fetchall()
        return [{"meter": meter, "ts": datetime.fromtimestamp(t, UTC).isoformat(), "name": n,
                 "value": v} for t, n, v in rows]

    def latest_reading(self, meter: str, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM latest WHERE meter=? AND name=?",
                                (meter, name)).fetchone()
        return None if row is None else row[0]

    def online_states(self) -> dict[str, bool]:
        return {a: bool(o) for a, o in
                self.conn.execute("SELECT address, online FROM meter_state")}

    def record_events(self, events: Iterable[Event], outbox: bool = True) -> None:
        rows = [(_iso(e.ts), e.meter, e.account, e.type, e.severity,
                 json.dumps(e.detail, sort_keys=True, default=str)) for e in events]
        if not rows:
            return
        self.conn.executemany("INSERT INTO events (ts, meter, account, type, severity, detail) "
                              "VALUES (?,?,?,?,?,?)", rows)
        if outbox:  # one message per event (contract), each a reference to its row
            last = self._last_rowid()
            for seq in range(last - len(rows) + 1, last + 1):
                self.enqueue_range("events", seq, seq)

    def events(self, limit: int = 100, meter: str | None = None,
               types: Iterable[str] = ()) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts, meter, account, type, severity, detail FROM events WHERE 1=1"
        params: list[Any] = []
        if meter:
            sql += " AND meter=?"
            params.append(meter)
        kinds = list(types)
        if kinds:
            sql += f" AND type IN ({','.join('?' * len(kinds))})"
            params += kinds
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [{"seq": r[0], "ts": r[1], "meter": r[2], "account": r[3], "type": r[4],
                 "severity": r[5], "detail": json.loads(r[6] or "{}")}
                for r in reversed(self.conn.execute(sql, params).fetchall())]

    # -- outbox ---------------------------------------------------------------------------
    def high_water_seq(self) -> int:
        """The last seq given to a queued message (the retained status carries it)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return int(row[0]) if row else 0

    def requeue_ledger(self, since_seq: int, account: str | None = None) -> int:
        """Queue the ledger again from `since_seq` on (head-end `sync`); returns the count."""
        with self.transaction():
            if account:
                entries = [e for e in self.ledger(account, limit=10_000_000,
                                                  since_seq=since_seq)]
                for e in entries:
                    e.pop("seq", None)
                    e.pop("origin", None)
                for start in range(0, len(entries), 500):
                    self.enqueue("ledger", {"entries": entries[start:start + 500]})
                return len(entries)
            last = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]
            count = self.conn.execute("SELECT COUNT(*) FROM ledger WHERE seq > ?",
                                      (since_seq,)).fetchone()[0]
            if last > since_seq:
                self.enqueue_range("ledger", since_seq + 1, last)
            return int(count)

    def enqueue_range(self, kind: str, first: int, last: int, per_message: int = 500) -> int:
        """Queue messages made of rows `first..last` of the kind's table, at most
        `per_message` rows each (rendered when sent: the data is stored once, the outbox row
        only points at it).  Returns the last seq queued."""
        seq = 0
        for start in range(first, last + 1, per_message):
            end = min(start + per_message - 1, last)
            seq = self.enqueue_encoded(kind, f'{{"ref":[{start},{end}]}}')
        return seq

    def render(self, kind: str, payload: str) -> dict[str, Any] | None:
        """The message body of an outbox row (None: the rows it pointed at are gone)."""
        data = json.loads(payload)
        ref = data.get("ref")
        if ref is None:
            return data
        first, last = ref
        if kind == "ledger":
            rows = self.conn.execute(f"{_LEDGER_MESSAGE_COLUMNS} WHERE seq BETWEEN ? AND ? "
                                     "ORDER BY seq", (first, last)).fetchall()
            return {"entries": [_ledger_message(r) for r in rows]} if rows else None
        if kind == "events":
            row = self.conn.execute("SELECT ts, meter, account, type, severity, detail FROM "
                                    "events WHERE seq=?", (first,)).fetchone()
            if row is None:
                return None
            return {"ts": row[0], "meter": row[1], "account": row[2], "type": row[3],
                    "severity": row[4], "detail": json.loads(row[5] or "{}")}
        if kind == "telemetry":
            rows = self.conn.execute(
                "SELECT meter, ts, name, value FROM readings WHERE rowid BETWEEN ? AND ? "
                "ORDER BY rowid", (first, last)).fetchall()
            return {"readings": [
                {"meter": r[0], "ts": datetime.fromtimestamp(r[1], UTC).isoformat(),
                 "name": r[2], "value": r[3]} for r in rows]} if rows else None
        raise StorageError(f"outbox row of kind {kind!r} cannot hold a reference")

    def enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        return self.enqueue_encoded(kind, json.dumps(payload, default=str, ensure_ascii=False))

    def enqueue_encoded(self, kind: str, payload: str) -> int:
        """Queue a message whose JSON payload is already encoded."""
        cursor = self.conn.execute(
            "INSERT INTO outbox (kind, payload, created) VALUES (?,?,?)",
            (kind, payload, datetime.now(UTC).isoformat()))
        return int(cursor.lastrowid or 0)

    def pending(self, limit: int = 100, after: int = 0) -> list[tuple[int, str, str]]:
        return self.conn.execute("SELECT seq, kind, payload FROM outbox WHERE seq > ? "
                                 "ORDER BY seq LIMIT ?", (after, limit)).fetchall()

    def acknowledge(self, seqs: Iterable[int]) -> None:
        with self.transaction():
            self.conn.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])

    def outbox_depth(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind"))

    def trim_outbox(self, max_messages: int, max_age_days: int) -> int:
        """Enforce retention: drop telemetry first (oldest first), events and ledger last."""
        dropped = 0
        with self.transaction():
            cutoff = datetime.now(UTC).timestamp() - max_age_days * 86400
            cutoff_iso = datetime.fromtimestamp(cutoff, UTC).isoformat()
            dropped += self.conn.execute("DELETE FROM outbox WHERE kind IN ('telemetry','status')"
                                         " AND created < ?", (cutoff_iso,)).rowcount
            for kinds in (("telemetry", "status", "cmd_result"), ("events",), ("ledger",)):
                total = self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                excess = total - max_messages
                if excess <= 0:
                    break
                marks = ",".join("?" * len(kinds))
                dropped += self.conn.execute(
                    f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind IN "
                    f"({marks}) ORDER BY seq LIMIT ?)", (*kinds, excess)).rowcount
        return dropped

    # -- key/value, commands, tariffs -----------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def put(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO kv (key, value) VALUES (?,?) ON CONFLICT(key) DO "
                          "UPDATE SET value=excluded.value", (key, value))

    def command_seen(self, command_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM commands_seen WHERE id=?",
                                 (command_id,)).fetchone() is not None

    def remember_command(self, command_id: str, status: str, at: datetime) -> None:
        self.conn.execute("INSERT OR IGNORE INTO commands_seen (id, ts, status) VALUES (?,?,?)",
                          (command_id, _iso(at), status))

    def save_tariff(self, tariff_id: str, body: str, at: datetime) -> None:
        with self.transaction():
            self.db["tariffs"].upsert({"id": tariff_id, "body": body, "updated_at": _iso(at)},
                                      pk="id")

    def tariffs(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, body FROM tariffs"))


def _meter(row: tuple[Any, ...]) -> MeterRecord:
    return MeterRecord(address=row[0], bus=row[1], account=row[2], tariff=row[3],
                       protocol=row[4], multiplier=row[5] or 1, keep_power=bool(row[6]),
                       allowance=bool(row[7]), unit=row[8], model=row[9],
                       commissioned_at=row[10], commission_kwh=row[11], active=bool(row[12]))


_LEDGER_MESSAGE_COLUMNS = ("SELECT id, account, kind, amount, ts, meter, detail, balance_after "
                           "FROM ledger")


def _ledger_message(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ledger entry as the head end receives it (docs/mqtt.md)."""
    return {"id": row[0], "account": row[1], "kind": row[2], "amount": row[3], "ts": row[4],
            "meter": row[5], "detail": json.loads(row[6] or "{}"), "balance_after": row[7]}
