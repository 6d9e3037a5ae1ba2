"""Accounts and the append-only ledger.

An account's balance (kept beside the ledger in the same transaction) always equals the sum of
its entries, in integer micro-yuan.  Appending an id that exists changes nothing.

Since schema 9 the gateway's own entries (charges, fixed charges, allowances: 96 a day per
meter) go to a table per UTC day of their time, `ledger_d<N>` (N: days since 1970-01-01);
entries from outside (top-ups, adjustments, openings), the carried-forward ones of retention
and the entries stored before stay in `ledger`, whose partial index keeps outside ids unique.
`seq` is one sequence over all of them, given here (the highest stored + 1), so "entries after
seq S" and the outbox's references read the same as before.  Retention folds a day's table
into the carried-forward entries and drops it whole: a DELETE of a day of entries from one
large table rewrote most of its pages on some days, depending on how SQLite's b-tree
rebalanced the emptied leaves (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from edge_agent.errors import Malformed, UnknownAccount
from edge_agent.prepaid.money import format_money, from_micro, to_micro
from edge_agent.prepaid.vocabulary import LedgerKind
from edge_agent.store.database import Database, epoch_micro, from_iso, iso_sql, to_iso

if TYPE_CHECKING:  # the prepaid records load when used: `edge-agent status` starts faster
    from edge_agent.prepaid.enforcement import AlertState
    from edge_agent.prepaid.records import LedgerEntry

_LEDGER_COLUMNS = ("seq, id, account, kind, amount, amount_micro, ts, meter, detail, "
                   "balance_after")
_INSERT_LEDGER = (f"INSERT INTO ledger ({_LEDGER_COLUMNS}, origin) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?)")
LEDGER_KINDS = tuple(LedgerKind)
#: what a ledger message says of an entry, from each ledger table in turn ({t}: its name)
_MESSAGE_FIELDS = "seq, id, account, kind, amount, ts, meter, detail, balance_after"
LEDGER_MESSAGE_COLUMNS = f"SELECT {_MESSAGE_FIELDS} FROM {{t}}"
GATEWAY_ORIGIN = "gateway"  # `origin` of the gateway's own entries (those in day tables)
DAY_TABLE_PREFIX = "ledger_d"


def ledger_day_table(day: int) -> str:
    """The table of the gateway's ledger entries of UTC day `day` (days since the epoch)."""
    return f"{DAY_TABLE_PREFIX}{int(day)}"


def _money_sql(micro: str) -> str:
    """SQL giving `format_money` of an integer column of micro-yuan (same text)."""
    frac = f"printf('%06d', abs({micro}) % 1000000)"
    return (f"(CASE WHEN {micro} < 0 THEN '-' ELSE '' END || (abs({micro}) / 1000000) || '.' "
            f"|| substr({frac}, 1, 4) || rtrim(substr({frac}, 5), '0'))")


# A day table stores what `ledger` keeps as text (`ts`, `amount`, `balance_after`) as integers
# (`t`: microseconds since the epoch; micro-yuan) and gives the same text back as generated
# columns: 30-odd bytes less a row, 96 rows a day per meter (pages written, pages allocated).
_DAY_TABLE_TAIL = ("account TEXT NOT NULL, kind TEXT NOT NULL, amount_micro INTEGER NOT NULL, "
                   "t INTEGER NOT NULL, meter TEXT, detail TEXT, balance_micro INTEGER NOT NULL, "
                   f"amount TEXT GENERATED ALWAYS AS ({_money_sql('amount_micro')}) VIRTUAL, "
                   f"ts TEXT GENERATED ALWAYS AS ({iso_sql('t')}) VIRTUAL, "
                   "balance_after TEXT GENERATED ALWAYS AS "
                   f"({_money_sql('balance_micro')}) VIRTUAL, "
                   f"origin TEXT GENERATED ALWAYS AS ('{GATEWAY_ORIGIN}') VIRTUAL")
# Schema 9's day tables stored the id as text; they are still written on their day, then
# folded and dropped like the others.
_DAY_TABLE_COLUMNS_V9 = f"seq INTEGER PRIMARY KEY, id TEXT NOT NULL, {_DAY_TABLE_TAIL}"
_INSERT_DAY_V9 = ("INSERT INTO {t} (seq, id, account, kind, amount_micro, t, meter, detail, "
                  "balance_micro) VALUES (?,?,?,?,?,?,?,?,?)")
# Since schema 10 the id the gateway gives its entries, `<gateway>:<kind>:<meter>:<n>`, is not
# stored: only `n` is, and `id` is a generated column that puts the table's gateway prefix (in
# its definition) before kind and meter again.  An id of any other form (a daily charge's,
# or a gateway renamed during the day) is stored whole in `xid`.  That is 20-odd bytes less
# in each of the 96 rows a meter adds a day (docs/storage.md).
_DAY_ID_SQL = "COALESCE(xid, {prefix} || kind || ':' || meter || ':' || n)"
_DAY_PREFIX_RE = re.compile(r"COALESCE\(xid, '((?:[^']|'')*)' \|\|")
_NARROW_MAX_VARIABLES = 30_000  # (SQLite allows 32,766 `?` a statement)
_INSERT_DAY = ("INSERT INTO {t} (seq, n, xid, account, kind, amount_micro, t, meter, detail, "
               "balance_micro) VALUES (?,?,?,?,?,?,?,?,?,?)")


def _day_table_columns(prefix: str) -> str:
    """A day table's columns, its ids' gateway prefix (`gw1:`) written into `id`'s SQL."""
    quoted = "'" + prefix.replace("'", "''") + "'"
    return (f"seq INTEGER PRIMARY KEY, n INTEGER, xid TEXT, {_DAY_TABLE_TAIL}, "
            f"id TEXT GENERATED ALWAYS AS ({_DAY_ID_SQL.format(prefix=quoted)}) VIRTUAL, "
            "CHECK (xid IS NOT NULL OR (n IS NOT NULL AND meter IS NOT NULL))")


def _id_prefix(rows: list[tuple[Any, ...]]) -> str:
    """The gateway part, with its colon, of the first id among day-table `rows` that has the
    gateway's form (`gw1:charge:m:7` → `gw1:`); "" if none has (their ids are kept whole)."""
    for row in rows:
        entry_id, kind, meter = row[1], row[3], row[6]
        own = f"{kind}:{meter}:{entry_id.rsplit(':', 1)[-1]}"  # (a meter may hold colons)
        prefix = entry_id[:len(entry_id) - len(own)]
        if entry_id.endswith(own) and prefix.endswith(":") and _id_number(
                entry_id, prefix, kind, meter) is not None:
            return prefix
    return ""


def _id_number(entry_id: str, prefix: str, kind: str, meter: str | None) -> int | None:
    """`n` when `entry_id` is exactly `<prefix><kind>:<meter>:<n>` (n in canonical form, as
    SQLite writes an integer back), else None (the id is stored whole)."""
    head = f"{prefix}{kind}:{meter}:"
    if meter is None or not entry_id.startswith(head):
        return None
    tail = entry_id[len(head):]
    if not (0 < len(tail) <= 18 and tail.isascii() and tail.isdigit()) or str(int(tail)) != tail:
        return None
    return int(tail)


# Ledger details are small JSON objects with the same keys every time: deflated against this
# fixed dictionary they take a third of the bytes (every byte of a ledger row is written twice,
# WAL then database, 96 times a day per meter).  NEVER change this text: stored details need
# it to be read; a new dictionary needs a new version byte.
_DETAIL_V1 = b"\x01"
_DETAIL_DICTIONARY = (
    b'{"fixed":"daily","day":"2026-01-01","tariff":"flat"}{"kwh":"0.00","month":"2026-01",'
    b'"allowance":"0.00"}{"kwh":"0.25","from":"2026-01-01T00:00:00+00:00","register":"0.00",'
    b'"tariff":"flat","pieces":[{"kwh":"0.25","price":"0.5600","label":"flat"},{"kwh":"0.0",'
    b'"price":"0.","label":"tou"},{"kwh":"0.1","price":"0.5","label":"tier1"},'
    b'{"kwh":"1.0","price":"0.6","label":"peak"},{"kwh":"0.","price":"0.3","label":"valley"}]}')


def encode_detail(text: str) -> str | bytes:
    """A detail's JSON as stored: deflated with the fixed dictionary when that is shorter."""
    raw = text.encode()
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY,
                              _DETAIL_DICTIONARY)
    packed = _DETAIL_V1 + packer.compress(raw) + packer.flush()
    return packed if len(packed) < len(raw) else text


def decode_detail(stored: str | bytes | None) -> dict[str, Any]:
    """A stored detail back as a dict (JSON text, or deflated bytes from `encode_detail`)."""
    if not stored:
        return {}
    if isinstance(stored, bytes):
        if stored[:1] != _DETAIL_V1:
            raise ValueError("ledger detail stored in an unknown format")
        unpacker = zlib.decompressobj(-15, _DETAIL_DICTIONARY)
        stored = (unpacker.decompress(stored[1:]) + unpacker.flush()).decode()
    return json.loads(stored)  # type: ignore[no-any-return]


def id_hash(entry_id: str) -> int:
    """A ledger id as a signed 64-bit integer (the key of `ledger_gone`)."""
    return int.from_bytes(hashlib.blake2b(entry_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


def ledger_row(row: sqlite3.Row) -> dict[str, Any]:
    """A ledger entry by name, `detail` decoded: what the CLI shows and the head end receives."""
    return {"id": row["id"], "account": row["account"], "kind": row["kind"],
            "amount": row["amount"], "ts": row["ts"], "meter": row["meter"],
            "detail": decode_detail(row["detail"]), "balance_after": row["balance_after"]}


class Ledger(Database):
    """Accounts and the append-only ledger."""

    def ensure_account(self, account: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO accounts (id, balance_micro, alerts) "
                          "VALUES (?, 0, '{}')", (account,))

    def balance(self, account: str) -> Decimal:
        row = self.conn.execute("SELECT balance_micro FROM accounts WHERE id=?",
                                (account,)).fetchone()
        if row is None:
            raise UnknownAccount(f"unknown account {account}")
        return from_micro(row[0])

    def balances(self) -> dict[str, Decimal]:
        return {a: from_micro(m) for a, m in
                self.conn.execute("SELECT id, balance_micro FROM accounts ORDER BY id")}

    def ledger_sum(self, account: str) -> Decimal:
        """The balance recomputed from the ledger itself (for checks and audits)."""
        return from_micro(sum(int(row[0]) for row in self.ledger_select(
            "SELECT COALESCE(SUM(amount_micro), 0) FROM {t} WHERE account=?", (account,))))

    # -- the ledger's tables ------------------------------------------------------------------
    def ledger_day_tables(self) -> list[int]:
        """Days that have a table of the gateway's entries, oldest first."""
        rows = self.conn.execute("SELECT name FROM sqlite_schema WHERE type='table' AND "
                                 f"name GLOB '{DAY_TABLE_PREFIX}[0-9]*'").fetchall()
        return sorted(int(r[0][len(DAY_TABLE_PREFIX):]) for r in rows)

    def ledger_tables(self, first_day: int = 0, last_day: int = 1 << 40) -> list[str]:
        """`ledger`, then the day tables of days `first_day..last_day`, oldest first."""
        return ["ledger"] + [ledger_day_table(d) for d in self.ledger_day_tables()
                             if first_day <= d <= last_day]

    def ledger_select(self, sql: str, params: Iterable[Any] = (), first_day: int = 0,
                      last_day: int = 1 << 40) -> list[sqlite3.Row]:
        """The rows of `sql` (which reads `FROM {t}`) run on `ledger` and each day table of
        days `first_day..last_day` in turn, in one read snapshot; the caller merges: orders
        by seq, sums, takes the least."""
        values = tuple(params)
        with self.snapshot():
            return [row for table in self.ledger_tables(first_day, last_day)
                    for row in self.conn.execute(sql.replace("{t}", table), values).fetchall()]

    def ledger_select_ids(self, columns: str, ids: Iterable[str],
                          where: str = "") -> list[sqlite3.Row]:
        """`SELECT columns FROM <each ledger table> WHERE id IN ids [AND where]`, in one read
        snapshot.  A day table of schema 10 generates `id`, so a plain `id IN` would build the
        id of every row of every table (no index: 6x the time of a stored column); its rows
        are first narrowed on what is stored: `xid`, or `n` and `meter` (every meter an id
        could name: a meter may hold colons), then matched on `id` exactly."""
        wanted = list(dict.fromkeys(ids))
        out: list[sqlite3.Row] = []
        extra = f" AND ({where})" if where else ""
        with self.snapshot():
            tables = self.ledger_tables()
            compact = {t for t in tables if t != "ledger"
                       and isinstance(self._day_table_prefix(t), str)}
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                marks = ",".join("?" * len(part))
                numbers, meters = set(), set()
                for entry_id in part:
                    pieces = entry_id.split(":")
                    if len(pieces) >= 3 and pieces[-1].isascii() and pieces[-1].isdigit():
                        numbers.add(int(pieces[-1][:18]))
                        meters.update(":".join(pieces[j:-1]) for j in range(1, len(pieces) - 1))
                narrow = (f"(xid IN ({marks}) OR (n IN ({','.join('?' * len(numbers))}) AND "
                          f"meter IN ({','.join('?' * len(meters))}))) AND ")
                narrowed = (*part, *numbers, *meters)
                if len(narrowed) + len(part) > _NARROW_MAX_VARIABLES:
                    narrowed = ()  # ids of hundreds of colons: the plain (slower) lookup
                for table in tables:
                    if table in compact and narrowed:
                        sql, params = f"{narrow}id IN ({marks}){extra}", (*narrowed, *part)
                    else:
                        sql, params = f"id IN ({marks}){extra}", tuple(part)
                    out += self.conn.execute(f"SELECT {columns} FROM {table} WHERE {sql}",
                                             params).fetchall()
        return out

    def ledger_top_seq(self) -> int:
        """The highest seq given to a ledger entry still stored (carried-forward entries keep
        the seq of the last entry they sum up, so this never goes back)."""
        return max(int(r[0]) for r in self.ledger_select("SELECT COALESCE(MAX(seq), 0) FROM {t}"))

    def ledger_rows(self) -> int:
        """Stored ledger entries, in every table."""
        return sum(int(r[0]) for r in self.ledger_select("SELECT COUNT(*) FROM {t}"))

    def _insert_ledger(self, rows: list[tuple[Any, ...]], origin: str, ignore: bool) -> None:
        """Insert rows (`_LEDGER_COLUMNS` order): the gateway's own in their day's table,
        others in `ledger` (`ignore`: an outside id already there is skipped)."""
        # Entries from outside go to `ledger`; so do the gateway's own stamped before 1970 (a
        # clock gone wrong: a day table's generated text is for times from 1970 on).
        in_ledger: list[tuple[Any, ...]] = []
        by_day: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            seq, entry_id, account, kind, _, micro, ts, meter, detail, after = row
            t = epoch_micro(from_iso(ts)) if origin == GATEWAY_ORIGIN else -1
            if t < 0:
                in_ledger.append((*row, origin))
            else:
                by_day.setdefault(t // 86_400_000_000, []).append(
                    (seq, entry_id, account, kind, micro, t, meter, detail,
                     to_micro(Decimal(after))))
        if in_ledger:
            verb = "INSERT OR IGNORE" if ignore else "INSERT"
            self.conn.executemany(_INSERT_LEDGER.replace("INSERT", verb, 1), in_ledger)
        for day, part in by_day.items():
            table = ledger_day_table(day)
            # No index: the seq is the rowid, the gateway's ids are unique by construction,
            # and retention reads or drops the table whole.
            prefix = self._day_table_prefix(table)
            if prefix is None:
                prefix = _id_prefix(part)
                self.conn.execute(f"CREATE TABLE {table} ({_day_table_columns(prefix)})")
            elif prefix is False:  # a table of schema 9 (made before the upgrade)
                self.conn.executemany(_INSERT_DAY_V9.replace("{t}", table), part)
                continue
            rows_in = []
            for row in part:
                n = _id_number(row[1], prefix, row[3], row[6])
                rows_in.append((row[0], n, None if n is not None else row[1], *row[2:]))
            self.conn.executemany(_INSERT_DAY.replace("{t}", table), rows_in)

    def _day_table_prefix(self, table: str) -> str | bool | None:
        """The gateway prefix written into day table `table`'s `id` (see `_DAY_ID_SQL`);
        False for a table of schema 9 (ids stored whole); None when there is no such table.
        Read from the table's definition each time: retention may drop and a late entry
        make it again."""
        row = self.conn.execute("SELECT sql FROM sqlite_schema WHERE type='table' AND name=?",
                                (table,)).fetchone()
        if row is None:
            return None
        found = _DAY_PREFIX_RE.search(row[0])
        return found.group(1).replace("''", "'") if found else False

    def append_ledger_entries(self, entries: Iterable[LedgerEntry], origin: str = "gateway",
                              outbox: bool = True) -> list[dict[str, Any]]:
        """Append entries; ids that exist are skipped.  Returns the rows actually added.

        Balances are read once per batch inside the write transaction (nobody else can write
        meanwhile), advanced in Python, and written back once per account.
        """
        batch = list(entries)
        for entry in batch:
            if entry.kind not in LEDGER_KINDS:
                raise Malformed(f"ledger entry {entry.id}: unknown kind {entry.kind!r}")
        if not batch:
            return []
        with self.transaction():
            conn = self.conn
            # Fast path: usually every id is new.  Insert the lot under a savepoint; if any id
            # was already there, undo it and take the careful path that skips known ids.
            conn.execute("SAVEPOINT ledger_batch")
            first = self.ledger_top_seq() + 1
            before = conn.total_changes
            gone = self.ledger_gone([e.id for e in batch])  # compacted away, still known
            added, rows, balances = self._ledger_rows(batch, gone, origin, first)
            self._insert_ledger(rows, origin, ignore=True)
            if conn.total_changes - before != len(rows):
                conn.execute("ROLLBACK TO ledger_batch")
                known = self._existing_ids([e.id for e in batch]) | gone
                added, rows, balances = self._ledger_rows(batch, known, origin, first)
                self._insert_ledger(rows, origin, ignore=False)  # a duplicate now is an error
            conn.execute("RELEASE ledger_batch")
            touched = {row["account"] for row in added}
            conn.executemany("UPDATE accounts SET balance_micro=? WHERE id=?",
                             [(balances[a], a) for a in touched])
            self._count_days(rows)
            if added and outbox:
                self.enqueue_range("ledger", first, first + len(rows) - 1)
        return added

    def _ledger_rows(self, batch: list[LedgerEntry], known: set[str], origin: str, first: int
                     ) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]], dict[str, int]]:
        """Rows to insert for the entries whose id is not in `known` (nor repeated), with
        seqs from `first` on."""
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
                   "amount": format_money(entry.amount), "ts": to_iso(entry.ts),
                   "meter": entry.meter, "detail": entry.detail,
                   "balance_after": format_money(from_micro(balances[entry.account]))}
            detail = encode_detail(json.dumps(entry.detail, ensure_ascii=False,
                                              separators=(",", ":")))
            added.append(row)
            rows.append((first + len(rows), entry.id, entry.account, entry.kind,
                         row["amount"], micro, row["ts"], entry.meter, detail,
                         row["balance_after"]))
        return added, rows, balances

    def _count_days(self, rows: list[tuple[Any, ...]]) -> None:
        """Add the entries to `ledger_days` (money per UTC day, account and kind)."""
        days: dict[tuple[str, str, str], int] = {}
        for row in rows:
            key = (row[6][:10], row[2], row[3])
            days[key] = days.get(key, 0) + row[5]
        self.conn.executemany("INSERT INTO ledger_days (day, account, kind, micro) "
                              "VALUES (?,?,?,?) ON CONFLICT (day, account, kind) DO UPDATE "
                              "SET micro = micro + excluded.micro",
                              [(*key, micro) for key, micro in days.items()])

    def ledger_gone(self, ids: list[str]) -> set[str]:
        """Those of `ids` whose entry was compacted into a carried-forward one (retention):
        their hash is remembered, so appending them again is still a no-op."""
        if not ids or self.conn.execute("SELECT 1 FROM ledger_gone LIMIT 1").fetchone() is None:
            return set()
        hashes = {id_hash(i): i for i in ids}
        keys = list(hashes)
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            found.update(hashes[h] for (h,) in self.conn.execute(
                f"SELECT hash FROM ledger_gone WHERE hash IN ({','.join('?' * len(part))})",
                part))
        return found

    def _existing_ids(self, ids: list[str]) -> set[str]:
        """Those of `ids` already in the ledger as entries from outside the gateway (the
        gateway's own ids are unique by construction, and namespaced by the gateway id)."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            found.update(r[0] for r in self.conn.execute(
                f"SELECT id FROM ledger WHERE id IN ({','.join('?' * len(part))}) "
                "AND origin != 'gateway'", part))  # the ids index covers entries from outside
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
        """The last `limit` entries after `since_seq` (of one account), oldest first."""
        sql = ("SELECT seq, id, account, kind, amount, ts, meter, detail, balance_after, origin "
               "FROM {t} WHERE seq > ?")
        params: list[Any] = [since_seq]
        if account:
            sql += " AND account = ?"
            params.append(account)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = sorted(self.ledger_select(sql, params), key=lambda r: r["seq"])
        return [{**dict(r), "detail": decode_detail(r["detail"])}
                for r in rows[max(len(rows) - limit, 0):]]

    def ledger_ids(self, account: str | None = None) -> set[str]:
        sql = "SELECT id FROM {t}" + (" WHERE account=?" if account else "")
        return {r[0] for r in self.ledger_select(sql, (account,) if account else ())}

    def ledger_entries_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        out = self.ledger_select_ids(_MESSAGE_FIELDS, ids,
                                     "origin != 'carry'")  # (never sent: acknowledged)
        return [ledger_row(r) for r in sorted(out, key=lambda r: r["seq"])]

    def charges_since(self, account: str, since: datetime) -> Decimal:
        """Money spent on energy and fixed charges since `since` (a positive number), from
        the daily totals: the first day counts in proportion to the part of it after `since`
        (an estimate for "days left", read hourly; the ledger has no per-account index)."""
        start = since.astimezone(UTC)
        first = start.date()
        today = datetime.now(UTC).date()
        days = [(first + timedelta(days=n)).isoformat()
                for n in range((max(today, first) - first).days + 2)]
        totals = dict(self.conn.execute(
            f"SELECT day, SUM(micro) FROM ledger_days WHERE day IN ({','.join('?' * len(days))})"
            " AND account=? AND kind IN ('charge','allowance') GROUP BY day",
            (*days, account)).fetchall())
        spent = Decimal(sum(m for d, m in totals.items() if d != days[0]))
        part = Decimal(86400 - (start.hour * 3600 + start.minute * 60 + start.second)) / 86400
        spent += Decimal(totals.get(days[0], 0)) * part
        return -from_micro(int(spent.to_integral_value()))

    def alert_states(self) -> dict[str, AlertState]:
        from edge_agent.prepaid.enforcement import AlertState

        out = {}
        for account, text in self.conn.execute("SELECT id, alerts FROM accounts"):
            data = json.loads(text or "{}")
            out[account] = AlertState(frozenset(data.get("levels", [])), data.get("days", False))
        return out

    def save_alert_states(self, states: dict[str, AlertState]) -> None:
        self.conn.executemany("UPDATE accounts SET alerts=? WHERE id=?", [
            (json.dumps({"levels": sorted(s.levels), "days": s.days}), a)
            for a, s in states.items()])

    # -- per-account settings (issue 14) --------------------------------------------------
    def account_settings(self) -> dict[str, tuple[str | None, Decimal]]:
        """Per account: its policy class (None: the default policy) and tier bonus kWh."""
        return {row[0]: (row[1], Decimal(row[2] or "0")) for row in self.conn.execute(
            "SELECT id, policy_class, tier_bonus_kwh FROM accounts")}

    def set_account_settings(self, account: str, policy_class: str | None,
                             tier_bonus_kwh: Decimal | None = None) -> None:
        """Assign an account's policy class (None: the default) and household tier bonus."""
        with self.transaction():
            self.ensure_account(account)
            self.conn.execute("UPDATE accounts SET policy_class=?, tier_bonus_kwh=? WHERE id=?",
                              (policy_class, None if not tier_bonus_kwh else str(tier_bonus_kwh),
                               account))

    def topup_sequence(self, account: str) -> tuple[int, frozenset[int]]:
        """The last top-up sequence number applied without a gap, and those received beyond
        a gap."""
        row = self.conn.execute("SELECT topup_seq, topup_ahead FROM accounts WHERE id=?",
                                (account,)).fetchone()
        if row is None:
            return 0, frozenset()
        return int(row[0]), frozenset(json.loads(row[1]))

    def set_topup_sequence(self, account: str, last: int, ahead: frozenset[int]) -> None:
        self.ensure_account(account)
        self.conn.execute("UPDATE accounts SET topup_seq=?, topup_ahead=? WHERE id=?",
                          (last, json.dumps(sorted(ahead)), account))
