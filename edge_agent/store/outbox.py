"""Store and forward: what the head end must hear of, queued in the transaction that made it.

The outbox row id is the message's `seq`: strictly increasing, never reused (AUTOINCREMENT).
Rows reference the ledger, event and reading rows instead of copying them; `headend/messages.py`
turns a row into the message body when it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from edge_agent.store.database import Database
from edge_agent.store.ledger import LEDGER_MESSAGE_COLUMNS, ledger_row
from edge_agent.store.readings import TELEMETRY_VALUES

PER_MESSAGE = 500  # rows one message refers to at most


class Outbox(Database):
    values_per_row = 1  # (Readings) values in a reading row at most
    """Store and forward: what the head end must hear of, queued in the transaction that made it."""

    def high_water_seq(self) -> int:
        """The last seq given to a queued message (the retained status carries it)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return int(row[0]) if row else 0

    def requeue_ledger(self, since_seq: int, account: str | None = None) -> int:
        """Queue the ledger again from `since_seq` on (head-end `sync`); returns the count."""
        with self.transaction():
            if account:
                ids = [r["id"] for r in sorted(self.ledger_select(  # type: ignore[attr-defined]
                    "SELECT seq, id FROM {t} WHERE seq > ? AND account=? AND origin != 'carry'",
                    (since_seq, account)), key=lambda r: r["seq"])]
                return self.requeue_ledger_ids(ids)
            last = self.ledger_top_seq()  # type: ignore[attr-defined]
            count = sum(int(r[0]) for r in self.ledger_select(  # type: ignore[attr-defined]
                "SELECT COUNT(*) FROM {t} WHERE seq > ?", (since_seq,)))
            if last > since_seq:
                self.enqueue_range("ledger", since_seq + 1, last)
            return int(count)

    def requeue_ledger_ids(self, ids: list[str]) -> int:
        """Queue chosen ledger entries again (those that exist); returns the count."""
        with self.transaction():
            known = [r["id"] for r in self.ledger_entries_by_id(ids)]
            for start in range(0, len(known), PER_MESSAGE):
                self.enqueue("ledger", {"ids": known[start:start + PER_MESSAGE]})
            return len(known)

    def enqueue_range(self, kind: str, first: int, last: int,
                      per_message: int = PER_MESSAGE) -> int:
        """Queue messages made of rows `first..last` of the kind's table, at most
        `per_message` rows each (rendered when sent: the data is stored once, the outbox row
        only points at it).  Returns the last seq queued."""
        if kind == "telemetry":  # a row holds a whole poll: keep messages within the schema
            per_message = max(1, min(per_message, TELEMETRY_VALUES // self.values_per_row))
            spans = self.reading_spans(first, last)  # type: ignore[attr-defined]
            if spans != [(first, last)]:  # rows in two day tables (a cycle at midnight)
                seq = 0
                for low, high in spans:
                    seq = self.enqueue_range(kind, low, high, per_message)
                return seq
        seq = 0
        for start in range(first, last + 1, per_message):
            end = min(start + per_message - 1, last)
            seq = self.enqueue_encoded(kind, f'{{"ref":[{start},{end}]}}')
        return seq

    def ledger_range(self, first: int, last: int) -> list[dict[str, Any]]:
        """Ledger entries `first..last` (by ledger seq), by name.  Carried-forward entries
        (retention) are left out: the head end acknowledged the entries they sum up."""
        rows = self.ledger_select(  # type: ignore[attr-defined]
            f"{LEDGER_MESSAGE_COLUMNS} WHERE seq BETWEEN ? AND ? AND origin != 'carry'",
            (first, last))
        return [ledger_row(r) for r in sorted(rows, key=lambda r: r["seq"])]

    def event(self, seq: int) -> dict[str, Any] | None:
        """One stored event by its seq, by name (`detail` decoded)."""
        row = self.conn.execute("SELECT ts, meter, account, type, severity, detail FROM "
                                "events WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "detail": json.loads(row["detail"] or "{}")}

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

    def outbox_oldest(self) -> datetime | None:
        """When the oldest message still waiting was queued (None: the outbox is empty)."""
        row = self.conn.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return datetime.fromisoformat(row[0]) if row else None

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
