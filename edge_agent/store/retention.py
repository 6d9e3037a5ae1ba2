"""Bounded storage: months on an SD card without filling it (docs/storage.md).

Per kind of data, by age:
- readings: every reading for `readings_days`, then the last of each UTC day per meter and
  quantity (the daily figure) until `daily_days`, then the last of each month until
  `monthly_months`, then nothing;
- events after `events_days`; command ids seen after `commands_seen_days`;
- the ledger: entries older than `ledger_detail_days` fold into one carried-forward entry per
  account, month and kind (same sum, so balance = sum of entries stays exact); the ids of
  entries that came from outside the gateway (top-ups, adjustments) stay resolvable as a
  64-bit hash in `ledger_gone` for `ledger_ids_days`, so a resent one is still a no-op.  The
  gateway's own entries of a UTC day are a table of their own (store/ledger.py), folded and
  dropped whole.

Nothing the head end has not acknowledged is ever removed: a row an outbox message still
refers to (and every later one) stays until that message is acknowledged.  Each call does a
bounded amount of work (a day of readings, a chunk of ledger), so it can run between polls.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from edge_agent.errors import StorageError
from edge_agent.prepaid.money import format_money, from_micro
from edge_agent.store.database import Database
from edge_agent.store.ledger import decode_detail, id_hash, ledger_day_table
from edge_agent.store.readings import day_table

log = logging.getLogger("edge_agent")
EXPECTED_ERRORS = (sqlite3.Error, StorageError)
FREE_RESERVE_PAGES = 16_384  # free pages kept for reuse (64 MiB): a day's inserts fill
# what retention freed, so giving them back and growing again would only add writes
LEDGER_CHUNK = 200_000  # ledger rows looked at per call
FOLD_CACHE_KIB = 32_768  # page cache while folding entries kept in `ledger` (those stored
# before schema 9: a day of them is ~3,600 pages with 1,024 accounts): rewritten once at commit
# instead of spilling into the WAL and again at commit (day tables are dropped, not deleted)
GRID_CHUNK = 20_000  # rows removed per call at most by each rule (table; line-loss period)
USAGE_DAYS_KEPT = 92  # `ledger_days` rows kept: the usage window is at most 90 days
CARRY_ORIGIN = "carry"  # `origin` of a carried-forward ledger entry (never sent: already acked)
_NEVER = 1 << 62


class RetentionPolicy(Protocol):
    """What `config.RetentionConfig` provides."""

    readings_days: int
    daily_days: int
    monthly_months: int
    events_days: int
    ledger_detail_days: int
    ledger_ids_days: int
    commands_seen_days: int
    grid_quarter_days: int
    grid_daily_days: int
    grid_monthly_months: int


@dataclass
class Pruned:
    """What one retention pass removed (for the log and the tests)."""

    readings: int = 0
    events: int = 0
    commands: int = 0
    ledger_folded: int = 0
    ids_forgotten: int = 0
    grid: int = 0  # rows of the concentrator's tables
    pages_freed: int = 0
    held: list[str] = field(default_factory=list)  # kinds an unacknowledged message held back

    def __bool__(self) -> bool:
        return any((self.readings, self.events, self.commands, self.ledger_folded,
                    self.ids_forgotten, self.grid))


def _day_start(ts: int) -> int:
    return ts - ts % 86400


def _month_start(ts: int) -> int:
    moment = datetime.fromtimestamp(ts, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())


def _next_month(ts: int) -> int:
    moment = datetime.fromtimestamp(ts, UTC)
    year, month = divmod(moment.year * 12 + moment.month, 12)
    return int(datetime(year, month + 1, 1, tzinfo=UTC).timestamp())


class Retention(Database):
    """Bounded storage: pruning and compaction that never touch unacknowledged rows."""

    # -- what the outbox still needs --------------------------------------------------------
    def outbox_floor(self, kind: str) -> int:
        """The lowest row (rowid/seq of the kind's table) an outbox message still refers to;
        rows from there on must stay.  `_NEVER` when nothing is referenced."""
        row = self.conn.execute("SELECT MIN(json_extract(payload, '$.ref[0]')) FROM outbox "
                                "WHERE kind=?", (kind,)).fetchone()
        floor = _NEVER if row[0] is None else int(row[0])
        if kind == "ledger":  # `sync` by id queues {"ids": [...]}
            asked = self.conn.execute("SELECT 1 FROM outbox WHERE kind='ledger' AND "
                                      "json_type(payload, '$.ids') IS NOT NULL LIMIT 1")
            if asked.fetchone() is not None:
                ids = [r[0] for r in self.conn.execute(
                    "SELECT j.value FROM outbox o, json_each(o.payload, '$.ids') j "
                    "WHERE o.kind='ledger' AND j.type='text'")]
                for (low,) in self.ledger_select_ids(  # type: ignore[attr-defined]
                        "MIN(seq)", ids):
                    if low is not None:
                        floor = min(floor, int(low))
        return floor

    # -- the pass ---------------------------------------------------------------------------
    def apply_retention(self, policy: RetentionPolicy, now: datetime) -> Pruned:
        """One bounded pass of every rule, each in its own short transaction, then give
        free pages back to the file system (incremental vacuum)."""
        pruned = Pruned()
        now = now.astimezone(UTC)  # stored times are UTC ISO text, compared as text
        stamp = int(now.timestamp())
        self._prune_readings(policy, stamp, pruned)
        self._prune_events(policy, now, pruned)
        with self.transaction():
            pruned.commands = self.conn.execute(
                "DELETE FROM commands_seen WHERE ts < ?",
                ((now - timedelta(days=policy.commands_seen_days)).isoformat(),)).rowcount
            # Spending per day serves the policy's usage window (at most 90 days).
            self.conn.execute("DELETE FROM ledger_days WHERE day < ?",
                              ((now - timedelta(days=USAGE_DAYS_KEPT)).date().isoformat(),))
            pruned.ids_forgotten = self.conn.execute(
                "DELETE FROM ledger_gone WHERE ts < ?",
                (stamp - policy.ledger_ids_days * 86400,)).rowcount
        self._compact_ledger(policy, now, pruned)
        self._prune_grid(policy, now, pruned)
        if pruned:
            pruned.pages_freed = self.vacuum_free_pages(FREE_RESERVE_PAGES)
        return pruned

    def vacuum_free_pages(self, keep: int = 0) -> int:
        """Return free pages beyond `keep` to the file system (`auto_vacuum=INCREMENTAL`)."""
        excess = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0]) - keep
        if excess > 0:
            self.conn.execute(f"PRAGMA incremental_vacuum({excess})").fetchall()
            return excess
        return 0

    # -- readings ---------------------------------------------------------------------------
    def _prune_readings(self, policy: RetentionPolicy, now: int, pruned: Pruned) -> None:
        floor = self.outbox_floor("telemetry")
        days = self._keep_daily_figures(now - policy.readings_days * 86400, floor, pruned)
        first = self.conn.execute("SELECT ts FROM readings ORDER BY rowid LIMIT 1").fetchone()
        if first is None:
            return
        oldest = int(first[0])
        months = policy.monthly_months
        gone_before = _month_start(now)
        for _ in range(months):
            gone_before = _month_start(gone_before - 1)
        with self.transaction():  # older than the monthly figures: gone
            pruned.readings += self.conn.execute(
                "DELETE FROM readings WHERE ts < ? AND rowid < ?", (gone_before, floor)).rowcount
        # The last reading per meter and quantity of each month older than `daily_days`,
        # then of each day older than `readings_days`: one period per call at most each.
        # (a month is thinned once its days' tables are gone: its daily figures are all in)
        self._thin("retention.readings_monthly", _month_start, _next_month,
                   min([now - policy.daily_days * 86400] + [d * 86400 for d in days[:1]]),
                   max(oldest, gone_before), floor, pruned)
        self._thin("retention.readings_daily", _day_start, lambda t: _day_start(t) + 86400,
                   now - policy.readings_days * 86400, oldest, floor, pruned)

    def _keep_daily_figures(self, before: int, floor: int, pruned: Pruned) -> list[int]:
        """The oldest day table, if the day ended before `before` and the head end has
        acknowledged all of it: its last reading per meter and quantity set (the daily
        figures) go to `readings`, with their rowids, and the table is dropped whole (its
        pages are freed without being written).  Returns the days still in tables."""
        days = self.reading_days()
        if not days or (days[0] + 1) * 86400 > before:
            return days
        table = day_table(days[0])
        last = self.conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0]
        if last is not None and last >= floor:
            pruned.held.append("readings")
            return days
        with self.transaction():
            # The last row per meter and quantity, found here in rowid order rather than by
            # GROUP BY (SQLite would sort a day of rows in a temporary file: megabytes).
            newest: dict[tuple[str, str], int] = {}
            rows = 0
            for rowid, meter, name in self.conn.execute(
                    f"SELECT rowid, meter, name FROM {table} ORDER BY rowid"):
                newest[(meter, name)] = rowid
                rows += 1
            self.conn.executemany(
                f"INSERT INTO readings (rowid, ts, meter, name, value) SELECT rowid, ts, meter, "
                f"name, value FROM {table} WHERE rowid=?", [(r,) for r in sorted(newest.values())])
            self.conn.execute(f"DROP TABLE {table}")
            pruned.readings += rows - len(newest)
        return days[1:]

    def _thin(self, mark: str, start_of: Any, end_of: Any, before: int, oldest: int,
              floor: int, pruned: Pruned) -> None:
        """Keep the last reading per meter and quantity in the next period not yet thinned
        (if it ended before `before`); the period is remembered in `kv` under `mark`."""
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (mark,)).fetchone()
        done = start_of(oldest) if row is None else int(row[0])
        period = max(start_of(done), start_of(oldest))
        end = end_of(period)
        if end > before:
            return
        last = self.conn.execute("SELECT MAX(rowid) FROM readings WHERE ts >= ? AND ts < ?",
                                 (period, end)).fetchone()[0]
        if last is not None and last >= floor:
            return  # the head end has not acknowledged these yet
        with self.transaction():
            pruned.readings += self.conn.execute(
                "DELETE FROM readings WHERE ts >= ? AND ts < ? AND rowid NOT IN "
                "(SELECT MAX(rowid) FROM readings WHERE ts >= ? AND ts < ? "
                "GROUP BY meter, name)", (period, end, period, end)).rowcount
            self.conn.execute("INSERT INTO kv (key, value) VALUES (?,?) ON CONFLICT(key) DO "
                              "UPDATE SET value=excluded.value", (mark, str(end)))

    # -- the concentrator's tables ---------------------------------------------------------
    def _prune_grid(self, policy: RetentionPolicy, now: datetime, pruned: Pruned) -> None:
        """The concentrator's figures by age: 15-minute ones after `grid_quarter_days`,
        daily ones after `grid_daily_days`, monthly line loss after `grid_monthly_months`;
        at most `GRID_CHUNK` rows of each table (of each line-loss period) per pass.  Nothing
        waits on these rows: a `lineloss` or `usage` message carries a copy of its body
        (`GridRecords.save_*`)."""
        quarter = (now - timedelta(days=policy.grid_quarter_days)).isoformat()
        day = (now - timedelta(days=policy.grid_daily_days)).date().isoformat()
        month = _month_start(int(now.timestamp()))
        for _ in range(policy.grid_monthly_months):
            month = _month_start(month - 1)
        first_month = datetime.fromtimestamp(month, UTC).strftime("%Y-%m")
        rules = (  # table, key columns, condition (times are ISO text, days local dates)
            ("quarter_readings", "meter, quarter", "quarter < ?", quarter),
            ("line_loss", "area, period, start", "period = '15min' AND start < ?", quarter),
            ("line_loss", "area, period, start", "period = 'day' AND substr(start, 1, 10) < ?",
             day),
            ("line_loss", "area, period, start",
             "period = 'month' AND substr(start, 1, 7) < ?", first_month),
            ("frozen_days", "meter, day", "day < ?", day),
            ("daily_usage", "account, day", "day < ?", day),
            ("meter_clocks", "meter", "read_at < ?", (now - timedelta(
                days=policy.grid_daily_days)).isoformat()),  # meters no longer read
        )
        today = now.date().isoformat()
        done = self.conn.execute("SELECT value FROM kv WHERE key='retention.grid_day'"
                                 ).fetchone()
        if done is not None and done[0] == today:
            return  # once a day is enough (the tables have no index on time: each look scans)
        with self.transaction():
            full = False
            for table, key, condition, bound in rules:
                removed = self.conn.execute(
                    f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE "
                    f"{condition} LIMIT {GRID_CHUNK})", (bound,)).rowcount
                pruned.grid += removed
                full = full or removed == GRID_CHUNK
            if not full:  # all caught up for today; else the next pass goes on
                self.conn.execute("INSERT INTO kv (key, value) VALUES ('retention.grid_day', ?) "
                                  "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (today,))

    # -- events -----------------------------------------------------------------------------
    def _prune_events(self, policy: RetentionPolicy, now: datetime, pruned: Pruned) -> None:
        floor = self.outbox_floor("events")
        cutoff = (now - timedelta(days=policy.events_days)).isoformat()
        with self.transaction():
            pruned.events = self.conn.execute("DELETE FROM events WHERE seq < ? AND ts < ?",
                                              (floor, cutoff)).rowcount

    # -- ledger -----------------------------------------------------------------------------
    def _compact_ledger(self, policy: RetentionPolicy, now: datetime, pruned: Pruned) -> None:
        """Fold acknowledged entries older than the detail window into one carried-forward
        entry per account, month and kind; the sum (so every balance) is unchanged."""
        self._fold_day(policy, now, pruned)
        size = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        self.conn.execute(f"PRAGMA cache_size=-{FOLD_CACHE_KIB}")
        try:
            self._fold(policy, now, pruned)
        finally:
            self.conn.execute(f"PRAGMA cache_size={int(size)}")

    def _fold_day(self, policy: RetentionPolicy, now: datetime, pruned: Pruned) -> None:
        """Fold the oldest table of the gateway's entries, if its whole UTC day is older
        than the detail window and acknowledged, then drop it (one table a pass)."""
        edge = now - timedelta(days=policy.ledger_detail_days)
        days = [d for d in self.ledger_day_tables()  # type: ignore[attr-defined]
                if d < int(edge.timestamp()) // 86400]
        if not days:
            return
        conn = self.conn
        with self.transaction():
            floor = self.outbox_floor("ledger")
            for day in days:  # the oldest whose entries are all acknowledged (a late entry
                table = ledger_day_table(day)  # may hold an old day back, not the others)
                top = conn.execute(f"SELECT MAX(seq) FROM {table}").fetchone()[0]
                if top is None or top < floor:
                    break
            else:
                pruned.held.append("ledger")
                return
            # Summed here, in seq order, not by GROUP BY: SQLite would sort a day of rows in
            # a temporary file (megabytes written) or in as much memory.
            groups: dict[tuple[str, str, str], dict[str, Any]] = {}
            for account, kind, ts, micro, seq, balance_after in conn.execute(
                    "SELECT account, kind, ts, amount_micro, seq, balance_after FROM "
                    f"{table} ORDER BY seq"):
                group = groups.setdefault((account, kind, ts[:7]), {
                    "account": account, "kind": kind, "month": ts[:7], "n": 0, "micro": 0})
                group["n"] += 1
                group["micro"] += micro
                group.update(last=seq, ts=ts, balance_after=balance_after)
            conn.execute(f"DROP TABLE {table}")  # frees its pages without writing them
            for group in groups.values():
                self._carry(group, kept=False)
            pruned.ledger_folded += sum(g["n"] for g in groups.values())

    def _fold(self, policy: RetentionPolicy, now: datetime, pruned: Pruned) -> None:
        floor = self.outbox_floor("ledger")
        # Whole UTC days only: a day's entries fold at once, so each carried entry is
        # rewritten once a day, not once per pass (SD card writes).
        edge = now - timedelta(days=policy.ledger_detail_days)
        cutoff = edge.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        conn = self.conn
        with self.transaction():
            row = conn.execute("SELECT value FROM kv WHERE key='retention.ledger_seq'").fetchone()
            low = int(row[0]) if row else 0
            top = conn.execute("SELECT MIN(seq) FROM ledger WHERE seq > ? AND ts >= ? AND "
                               "origin != ?", (low, cutoff, CARRY_ORIGIN)).fetchone()[0]
            last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]
            high = min(low + LEDGER_CHUNK, floor - 1, last if top is None else top - 1)
            if high <= low:
                if floor - 1 <= low and floor != _NEVER:
                    pruned.held.append("ledger")
                return
            where = "seq > ? AND seq <= ? AND origin != ?"
            span = (low, high, CARRY_ORIGIN)
            conn.executemany("INSERT OR IGNORE INTO ledger_gone (hash, ts) VALUES (?,?)", [
                (id_hash(i), int(datetime.fromisoformat(ts).timestamp()))
                for i, ts in conn.execute(f"SELECT id, ts FROM ledger WHERE {where} AND "
                                          "origin != 'gateway'", span)])
            groups = conn.execute(
                "SELECT account, kind, substr(ts, 1, 7) AS month, COUNT(*) AS n, "
                f"SUM(amount_micro) AS micro, MAX(seq) AS last FROM ledger WHERE {where} "
                "GROUP BY account, kind, month", span).fetchall()
            pruned.ledger_folded += conn.execute(f"DELETE FROM ledger WHERE {where} AND seq NOT "
                                                f"IN (SELECT MAX(seq) FROM ledger WHERE {where} "
                                                "GROUP BY account, kind, substr(ts, 1, 7))",
                                                span + span).rowcount
            for group in groups:
                self._carry(group, kept=True)
            conn.execute("INSERT INTO kv (key, value) VALUES ('retention.ledger_seq', ?) ON "
                         "CONFLICT(key) DO UPDATE SET value=excluded.value", (str(high),))

    def _carry(self, group: Any, kept: bool) -> None:
        """Sum the group into the carried-forward entry of its account, month and kind, at
        the higher seq of the group's last entry and an earlier carried entry of the same
        month.  `kept`: the group's last entry is a row of `ledger`, turned into the carried
        entry; else the group's rows are gone (a day's table dropped) and it is inserted."""
        conn = self.conn
        carry_id = f"carry:{group['account']}:{group['month']}:{group['kind']}"
        micro, count = int(group["micro"]), int(group["n"])
        target = int(group["last"])
        earlier = conn.execute("SELECT seq, amount_micro, detail FROM ledger WHERE id=? AND "
                               "origin != 'gateway'", (carry_id,)).fetchone()  # (the index)
        if earlier is not None:
            micro += int(earlier["amount_micro"])
            count += int(decode_detail(earlier["detail"]).get("entries", 1))
            if int(earlier["seq"]) > target:  # (a day folded after later outside entries)
                if kept:
                    conn.execute("DELETE FROM ledger WHERE seq=?", (target,))
                target, kept = int(earlier["seq"]), True
            else:
                conn.execute("DELETE FROM ledger WHERE seq=?", (earlier["seq"],))
        values = (carry_id, format_money(from_micro(micro)), micro,
                  f'{{"carried":true,"entries":{count}}}', CARRY_ORIGIN)
        if kept:
            conn.execute("UPDATE ledger SET id=?, amount=?, amount_micro=?, meter=NULL, "
                         "detail=?, origin=? WHERE seq=?", (*values, target))
        else:
            conn.execute("INSERT INTO ledger (id, amount, amount_micro, detail, origin, seq, "
                         "account, kind, ts, balance_after) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (*values, target, group["account"], group["kind"], group["ts"],
                          group["balance_after"]))


class RetentionSchedule:
    """Runs a retention pass every `interval_minutes` on the daemon's single writer thread,
    broker or no broker (an outage is when data piles up).  `tick()` is cheap: the daemon's
    loop calls it every turn."""

    def __init__(self, store: Retention, policy: Callable[[], Any], now: Callable[[], datetime],
                 monotonic: Callable[[], float], submit: Callable[..., Future[Any]]) -> None:
        self.store, self.policy, self.now, self.monotonic = store, policy, now, monotonic
        self.submit = submit
        self._due = monotonic() + 60.0  # not in the middle of start-up
        self._running: Future[Any] | None = None

    def tick(self) -> None:
        if self.monotonic() < self._due or (self._running and not self._running.done()):
            return
        policy = self.policy()
        self._due = self.monotonic() + 60.0 * policy.interval_minutes
        self._running = self.submit(self._pass, policy)

    def _pass(self, policy: Any) -> Pruned:
        try:
            pruned = self.store.apply_retention(policy, self.now())
        except EXPECTED_ERRORS as exc:
            log.warning("retention pass failed: %s", exc)
            return Pruned()
        except Exception:  # a bug: nobody reads this future's result, so say it here
            log.exception("retention pass failed")
            return Pruned()
        if pruned:
            log.info("retention: removed %d readings, %d events, %d command ids, %d rows of "
                     "the concentrator's tables; folded %d ledger entries; freed %d pages",
                     pruned.readings, pruned.events, pruned.commands, pruned.grid,
                     pruned.ledger_folded, pruned.pages_freed)
        return pruned
