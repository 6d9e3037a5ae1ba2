"""Readings (append-only, in time order) and events.

Each cycle appends to the end of the readings table instead of touching one page per meter,
which is faster and kinder to an SD card; `latest` keeps the newest values per meter.

One row holds one poll of one meter (schema 2): `name` is `#<shape>`, the id of the list of
quantity names in `shapes`, and `value` the values joined by US (0x1f) in that order.  That is
a third of the bytes of one row per value, and one `latest` row per meter instead of ten
(docs/storage.md).  Rows of schema 1 (one quantity each, `name` the quantity) still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_agent.store.database import Database, to_iso

SEPARATOR = "\x1f"  # between the values of one row (never in a value: those are kept apart)
TELEMETRY_VALUES = 500  # readings (values) one telemetry message carries at most (schema)

if TYPE_CHECKING:
    from edge_agent.prepaid.records import Event


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
        self.conn.executemany("INSERT INTO readings (ts, meter, name, value) VALUES (?,?,?,?)",
                              params)
        last = self._last_rowid()
        written = (last - len(params) + 1, last)
        newest: dict[str, int] = {}
        for rowid, (_, meter, _, _) in enumerate(params, start=written[0]):
            newest[meter] = rowid
        # The same pages as this cycle's billing update: no extra page written.
        self.conn.executemany("UPDATE meter_state SET last_reading=? WHERE address=?",
                              [(rowid, meter) for meter, rowid in newest.items()])
        return written

    def readings(self, meter: str, limit: int = 100,
                 since: datetime | None = None) -> list[dict[str, Any]]:
        """Readings of one meter, newest first (a time window keeps the scan short)."""
        start = 0 if since is None else int(since.timestamp())
        out: list[dict[str, Any]] = []
        for t, name, value in self.conn.execute(
                "SELECT ts, name, value FROM readings WHERE ts >= ? AND meter=? "
                "ORDER BY ts DESC, rowid DESC", (start, meter)):
            when = datetime.fromtimestamp(t, UTC).isoformat()
            out += [{"meter": meter, "ts": when, "name": n, "value": v}
                    for n, v in self._unpack(name, value)]
            if len(out) >= limit:
                break
        return out[:limit]

    def readings_range(self, first: int, last: int) -> list[dict[str, Any]]:
        """Readings of rows `first..last` (by rowid), by name, `ts` as a datetime."""
        rows = self.conn.execute(
            "SELECT meter, ts, name, value FROM readings WHERE rowid BETWEEN ? AND ? "
            "ORDER BY rowid", (first, last)).fetchall()
        return [{"meter": r["meter"], "ts": datetime.fromtimestamp(r["ts"], UTC), "name": n,
                 "value": v} for r in rows for n, v in self._unpack(r["name"], r["value"])]

    def readings_count(self) -> int:
        """Stored values (a poll row counts each of its values)."""
        return sum(rows * len(self._unpack(name, SEPARATOR * 999)) if name.startswith("#")
                   else rows for name, rows in self.conn.execute(
                       "SELECT name, COUNT(*) FROM readings GROUP BY name"))

    def latest_reading(self, meter: str, name: str) -> str | None:
        """The newest stored value of one quantity of a meter (its newest row, else what
        schema 1 kept in `latest`)."""
        rows = self.conn.execute(
            "SELECT r.name, r.value FROM meter_state s JOIN readings r "
            "ON r.rowid = s.last_reading WHERE s.address=?", (meter,)).fetchall()
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
