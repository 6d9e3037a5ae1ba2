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

    def remember_command(self, command_id: str, status: str, at: datetime) -> None:
        self.conn.execute("INSERT OR IGNORE INTO commands_seen (id, ts, status) VALUES (?,?,?)",
                          (command_id, to_iso(at), status))

    def save_tariff(self, tariff_id: str, body: str, at: datetime) -> None:
        with self.transaction():
            self.upsert("tariffs", {"id": tariff_id, "body": body, "updated_at": to_iso(at)},
                        pk="id")

    def tariffs(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, body FROM tariffs"))
