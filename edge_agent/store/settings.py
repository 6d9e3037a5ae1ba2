"""Small durable settings: key/value state, command ids seen, tariffs pushed by the head end."""

from __future__ import annotations

from datetime import datetime

from edge_agent.store.database import Database, to_iso


class Settings(Database):
    """Key/value state, command ids seen, tariffs pushed by the head end."""

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO kv (key, value) VALUES (?,?) ON CONFLICT(key) DO "
                          "UPDATE SET value=excluded.value", (key, value))

    def command_seen(self, command_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM commands_seen WHERE id=?",
                                 (command_id,)).fetchone() is not None

    def remember_command(self, command_id: str, status: str, at: datetime,
                         digest: str | None = None, result: str | None = None) -> None:
        """Remember a command id with its digest and answer (in the effect's transaction)."""
        self.conn.execute("INSERT OR IGNORE INTO commands_seen (id, ts, status, digest, result) "
                          "VALUES (?,?,?,?,?)", (command_id, to_iso(at), status, digest, result))

    def command_record(self, command_id: str) -> tuple[str | None, str | None] | None:
        """(digest, stored result JSON) of a command id already used, None if never used."""
        row = self.conn.execute("SELECT digest, result FROM commands_seen WHERE id=?",
                                (command_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    # -- who owns a meter setting ------------------------------------------------------------
    def set_meter_setting(self, address: str, name: str, value: str, source: str,
                          at: datetime, file_value: str | None) -> None:
        """A setting changed by the head end (or a technician): kept over the file's value."""
        self.conn.execute(
            "INSERT INTO meter_settings (address, name, value, source, at, file_value) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(address, name) DO UPDATE SET value=excluded.value, "
            "source=excluded.source, at=excluded.at, file_value=excluded.file_value",
            (address, name, value, source, to_iso(at), file_value))

    def clear_meter_settings(self, address: str) -> None:
        self.conn.execute("DELETE FROM meter_settings WHERE address=?", (address,))

    def meter_settings(self, address: str | None = None) -> dict[str, dict[str, dict[str, str]]]:
        """{address: {name: {value, source, at, file_value}}} of the owned settings."""
        rows = self.conn.execute(
            "SELECT address, name, value, source, at, file_value FROM meter_settings"
            + (" WHERE address=?" if address else ""), (address,) if address else ()).fetchall()
        out: dict[str, dict[str, dict[str, str]]] = {}
        for row in rows:
            out.setdefault(row[0], {})[row[1]] = {"value": row[2], "source": row[3],
                                                 "at": row[4], "file_value": row[5]}
        return out

    def save_tariff(self, tariff_id: str, body: str, at: datetime,
                    effective_from: str = "") -> None:
        """Keep a pushed tariff; a version with the same effective time replaces the old."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO tariff_versions (id, effective_from, body, updated_at) VALUES "
                "(?,?,?,?) ON CONFLICT(id, effective_from) DO UPDATE SET body=excluded.body, "
                "updated_at=excluded.updated_at", (tariff_id, effective_from, body, to_iso(at)))

    def tariffs(self) -> dict[str, str]:
        """The pushed tariffs in force from the start (one body per id)."""
        return dict(self.conn.execute(
            "SELECT id, body FROM tariff_versions WHERE effective_from='' ORDER BY id"))

    def tariff_versions(self) -> list[dict[str, str]]:
        """Every pushed tariff version: id, effective_from ('' from the start), body,
        updated_at."""
        return [dict(row) for row in self.conn.execute(
            "SELECT id, effective_from, body, updated_at FROM tariff_versions "
            "ORDER BY id, effective_from")]

    def headend_last_seen(self) -> datetime | None:
        """When the head end was last heard from (the link sets it on every message)."""
        text = self.setting("headend_last_seen")
        return None if text is None else datetime.fromisoformat(text)

    def set_headend_last_seen(self, at: datetime) -> None:
        self.set_setting("headend_last_seen", to_iso(at) or "")
