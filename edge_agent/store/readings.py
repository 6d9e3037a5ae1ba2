"""Readings (append-only, in time order) and events.

Each cycle appends to the end of the readings table instead of touching one page per meter,
which is faster and kinder to an SD card; `latest` keeps the newest values per meter.

One row holds one poll of one meter (schema 2): `name` is `#<shape>`, the id of the list of
quantity names in `shapes`, and `value` the values joined by US (0x1f) in that order.  That is
a third of the bytes of one row per value, and one `latest` row per meter instead of ten
(docs/storage.md).  Rows of schema 1 (one quantity each, `name` the quantity) still read.

Since schema 8 the 15-minute rows of each UTC day go to a table of their own,
`readings_d<N>` (N: days since 1970-01-01), with rowids `N << 32 | n`: rowids still grow with
time across tables, and a rowid names its table.  Retention copies a day's daily figures into
`readings` (same rowids) and drops the day's table whole, which frees its pages without
writing them (a DELETE of 97 % of a day rewrites every page of it, in the WAL and then in the
database).  `readings` keeps the daily and monthly figures and the rows of earlier schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_agent.store.database import Database, to_iso

DAY_SHIFT = 32  # rowid of a 15-minute reading: day << DAY_SHIFT | n (n from 1)
SEPARATOR = "\x1f"  # between the values of one row (never in a value: those are kept apart)
TELEMETRY_VALUES = 500  # readings (values) one telemetry message carries at most (schema)

if TYPE_CHECKING:
    from edge_agent.prepaid.records import Event


def day_table(day: int) -> str:
    """The table of the 15-minute readings of UTC day `day` (days since the epoch)."""
    return f"readings_d{int(day)}"


class Readings(Database):
    """Readings (append-only, in time order) and events."""

    _shapes: dict[tuple[str, ...], int]
    _names: dict[int, tuple[str, ...]]
    values_per_row = 1  # the most values one row written by this process holds

    def _shape(self, names: tuple[str, ...]) -> int:
        """The id of this list of quantity names (created on first use)."""
        if not hasattr(self, "_shapes"):
            self._load_shapes()
        shape = self._shapes.get(names)
        if shape is None:
            text = ",".join(names)
            self.conn.execute("INSERT OR IGNORE INTO shapes (names) VALUES (?)", (text,))
            shape = int(self.conn.execute("SELECT id FROM shapes WHERE names=?",
                                          (text,)).fetchone()[0])
            self._shapes[names], self._names[shape] = shape, names
        return shape

    def _load_shapes(self) -> None:
        self._shapes, self._names = {}, {}
        for shape, text in self.conn.execute("SELECT id, names FROM shapes"):
            names = tuple(text.split(","))
            self._shapes[names], self._names[shape] = shape, names

    def _unpack(self, name: str, value: str) -> list[tuple[str, str]]:
        """(quantity, value) pairs of one stored row (a poll of schema 2, or one value)."""
        if not name.startswith("#"):
            return [(name, value)]
        shape = int(name[1:])
        if not hasattr(self, "_names") or shape not in self._names:
            self._load_shapes()
        names = self._names[shape]
        return list(zip(names, value.split(SEPARATOR, len(names) - 1), strict=False))

    def record_readings(self, rows: Iterable[tuple[str, datetime, str, str]]
                        ) -> tuple[int, int] | None:
        """Append (meter, ts, name, value) readings, one row per meter and time, and keep
        the latest of each meter.  Returns the rowids written (first, last), for the telemetry
        message that reports them."""
        polls: dict[tuple[str, int], list[tuple[str, str]]] = {}
        for meter, ts, name, value in rows:
            polls.setdefault((meter, int(ts.timestamp())), []).append((name, value))
        if not polls:
            return None
        params = []
        for (meter, ts), values in polls.items():
            if len(values) == 1 or any(SEPARATOR in v or "," in n for n, v in values):
                params += [(ts, meter, n, v) for n, v in values]
                continue
            shape = self._shape(tuple(n for n, _ in values))
            params.append((ts, meter, f"#{shape}", SEPARATOR.join(v for _, v in values)))
            self.values_per_row = max(self.values_per_row, len(values))
        by_day: dict[int, list[tuple[Any, ...]]] = {}
        for row in params:
            by_day.setdefault(row[0] // 86400, []).append(row)
        newest: dict[str, int] = {}
        rowids: list[int] = []
        for day, rows in sorted(by_day.items()):
            table = self._day_table_for_writing(day)
            top = self.conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0]
            if top is None:  # a day written again after retention dropped it (the clock
                # was set back), or day 0 beside older schemas' rowids: above those
                top = self.conn.execute(
                    "SELECT MAX(rowid) FROM readings WHERE rowid BETWEEN ? AND ?",
                    (day << DAY_SHIFT, ((day + 1) << DAY_SHIFT) - 1)).fetchone()[0]
            base = (day << DAY_SHIFT) if top is None else int(top)
            numbered = [(base + n, *row) for n, row in enumerate(rows, start=1)]
            self.conn.executemany(f"INSERT INTO {table} (rowid, ts, meter, name, value) "
                                  "VALUES (?,?,?,?,?)", numbered)
            for rowid, _, meter, _, _ in numbered:
                newest[meter] = max(rowid, newest.get(meter, 0))
            rowids += (numbered[0][0], numbered[-1][0])
        written = (min(rowids), max(rowids))
        # The same pages as this cycle's billing update: no extra page written.
        self.conn.executemany("UPDATE meter_state SET last_reading=? WHERE address=?",
                              [(rowid, meter) for meter, rowid in newest.items()])
        return written

    def _day_table_for_writing(self, day: int) -> str:
        """The day's table, made when its first reading comes (no index: rowid order is time
        order, and retention keeps or drops the table whole)."""
        table = day_table(day)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (ts INTEGER NOT NULL, "
                          "meter TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL)")
        return table

    def reading_days(self) -> list[int]:
        """Days that still have a table of 15-minute readings, oldest first."""
        rows = self.conn.execute("SELECT name FROM sqlite_schema WHERE type='table' AND "
                                 "name GLOB 'readings_d[0-9]*'").fetchall()
        return sorted(int(r[0][len("readings_d"):]) for r in rows)

    def _reading_tables(self, first: int = 0, last: int = 1 << 62) -> list[str]:
        """The tables that may hold rowids `first..last`: `readings` (daily and monthly
        figures, older schemas' rows), then the day tables in that range, oldest first."""
        return ["readings"] + [day_table(d) for d in self.reading_days()
                               if first >> DAY_SHIFT <= d <= last >> DAY_SHIFT]

    def _pointed_tables(self) -> list[str]:
        """`readings` and the day tables that some meter's newest reading is in."""
        days = {int(r[0]) for r in self.conn.execute(
            "SELECT DISTINCT last_reading >> ? FROM meter_state WHERE last_reading IS NOT NULL",
            (DAY_SHIFT,))}
        return ["readings"] + [day_table(d) for d in self.reading_days() if d in days]

    def reading_spans(self, first: int, last: int) -> list[tuple[int, int]]:
        """`first..last` cut into runs of rowids that exist in one table each (a cycle whose
        polls straddle midnight wrote into two day tables)."""
        if first >> DAY_SHIFT == last >> DAY_SHIFT:
            return [(first, last)]
        spans = []
        for table in self._reading_tables(first, last):
            low, high = self.conn.execute(f"SELECT MIN(rowid), MAX(rowid) FROM {table} WHERE "
                                          "rowid BETWEEN ? AND ?", (first, last)).fetchone()
            if low is not None:
                spans.append((int(low), int(high)))
        return sorted(spans)

    def reading_rows(self) -> int:
        """Stored reading rows (one per poll of schema 2 on), in every table."""
        with self.snapshot():  # (retention may drop a day table meanwhile)
            return sum(int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                       for table in self._reading_tables())

    def _reading_at(self, rowid: int | None) -> Any:
        """The row (ts, name, value) with this rowid, wherever it is kept now."""
        if rowid is None:
            return None
        for table in (day_table(rowid >> DAY_SHIFT), "readings"):
            if table != "readings" and not self._has_table(table):
                continue
            row = self.conn.execute(f"SELECT ts, name, value FROM {table} WHERE rowid=?",
                                    (rowid,)).fetchone()
            if row is not None:
                return row
        return None

    def _has_table(self, table: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?",
                                 (table,)).fetchone() is not None

    def readings(self, meter: str, limit: int = 100,
                 since: datetime | None = None) -> list[dict[str, Any]]:
        """Readings of one meter, newest first (a time window keeps the scan short)."""
        with self.snapshot():  # (retention may drop a day table meanwhile)
            start = 0 if since is None else int(since.timestamp())
            out: list[dict[str, Any]] = []
            tables = self._reading_tables((start // 86400) << DAY_SHIFT)
            for table in tables[:0:-1] + tables[:1]:  # newest day first, the figures last
                for t, name, value in self.conn.execute(
                        f"SELECT ts, name, value FROM {table} WHERE ts >= ? AND meter=? "
                        "ORDER BY ts DESC, rowid DESC", (start, meter)):
                    when = datetime.fromtimestamp(t, UTC).isoformat()
                    out += [{"meter": meter, "ts": when, "name": n, "value": v}
                            for n, v in self._unpack(name, value)]
                    if len(out) >= limit:
                        return out[:limit]
            return out[:limit]

    def readings_range(self, first: int, last: int) -> list[dict[str, Any]]:
        """Readings of rows `first..last` (by rowid), by name, `ts` as a datetime."""
        with self.snapshot():  # (retention may drop a day table meanwhile)
            rows = [row for table in self._reading_tables(first, last)
                    for row in self.conn.execute(
                        f"SELECT rowid AS id, meter, ts, name, value FROM {table} WHERE rowid "
                        "BETWEEN ? AND ? ORDER BY rowid", (first, last)).fetchall()]
            rows.sort(key=lambda r: r["id"])
            return [{"meter": r["meter"], "ts": datetime.fromtimestamp(r["ts"], UTC), "name": n,
                     "value": v} for r in rows for n, v in self._unpack(r["name"], r["value"])]

    def readings_count(self) -> int:
        """Stored values (a poll row counts each of its values)."""
        with self.snapshot():  # (retention may drop a day table meanwhile)
            return sum(rows * len(self._unpack(name, SEPARATOR * 999)) if name.startswith("#")
                       else rows for table in self._reading_tables()
                       for name, rows in self.conn.execute(
                           f"SELECT name, COUNT(*) FROM {table} GROUP BY name"))

    def latest_reading(self, meter: str, name: str) -> str | None:
        """The newest stored value of one quantity of a meter (its newest row, else what
        schema 1 kept in `latest`)."""
        with self.snapshot():  # (retention may drop a day table meanwhile)
            state = self.conn.execute("SELECT last_reading FROM meter_state WHERE address=?",
                                      (meter,)).fetchone()
            newest = self._reading_at(state[0] if state else None)
            rows = [] if newest is None else [(newest["name"], newest["value"])]
            rows += self.conn.execute("SELECT name, value FROM latest WHERE meter=? "
                                      "ORDER BY ts DESC", (meter,)).fetchall()
            for stored, value in rows:
                for n, v in self._unpack(stored, value):
                    if n == name:
                        return v
            return None

    def record_events(self, events: Iterable[Event], outbox: bool = True) -> None:
        rows = [(to_iso(e.ts), e.meter, e.account, e.type, e.severity,
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
        return [{**dict(r), "detail": json.loads(r["detail"] or "{}")}
                for r in reversed(self.conn.execute(sql, params).fetchall())]
