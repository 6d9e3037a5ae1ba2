"""Readings (append-only, in time order) and events.

Each cycle appends to the end of the readings table instead of touching one page per meter,
which is faster and kinder to an SD card; `latest` keeps the newest value per quantity.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_agent.store.database import Database, to_iso

if TYPE_CHECKING:
    from edge_agent.prepaid.records import Event


class Readings(Database):
    """Readings (append-only, in time order) and events."""

    def record_readings(self, rows: Iterable[tuple[str, datetime, str, str]]
                        ) -> tuple[int, int] | None:
        """Append (meter, ts, name, value) readings and keep the latest value of each.
        Returns the rowids written (first, last), for the telemetry message that reports them."""
        params = [(int(ts.timestamp()), m, n, v) for m, ts, n, v in rows]
        if not params:
            return None
        self.conn.executemany("INSERT INTO readings (ts, meter, name, value) VALUES (?,?,?,?)",
                              params)
        written = (self._last_rowid() - len(params) + 1, self._last_rowid())
        self.conn.executemany(
            "INSERT INTO latest (ts, meter, name, value) VALUES (?,?,?,?) "
            "ON CONFLICT(meter, name) DO UPDATE SET ts=excluded.ts, value=excluded.value "
            "WHERE excluded.ts >= latest.ts", params)
        return written

    def readings(self, meter: str, limit: int = 100,
                 since: datetime | None = None) -> list[dict[str, Any]]:
        """Readings of one meter, newest first (a time window keeps the scan short)."""
        start = 0 if since is None else int(since.timestamp())
        rows = self.conn.execute("SELECT ts, name, value FROM readings WHERE ts >= ? AND "
                                 "meter=? ORDER BY ts DESC LIMIT ?",
                                 (start, meter, limit)).fetchall()
        return [{"meter": meter, "ts": datetime.fromtimestamp(t, UTC).isoformat(), "name": n,
                 "value": v} for t, n, v in rows]

    def readings_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def latest_reading(self, meter: str, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM latest WHERE meter=? AND name=?",
                                (meter, name)).fetchone()
        return None if row is None else row[0]

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
