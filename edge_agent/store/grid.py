"""The concentrator's book of record: daily freezes, line loss, meter clocks, daily usage.

Freezes are kept once per meter and day (a later read of the same freeze changes nothing), so
backfill can ask which days are missing; line-loss periods and daily usage are upserted per key
and, when new or changed, queued for the head end (`lineloss`, `usage`) in the same transaction
(a day closed again after a restart is not sent twice).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from edge_agent.store.database import Database, to_iso

if TYPE_CHECKING:  # loaded when used: `edge-agent status` must not load billing
    from edge_agent.grid.backfill import FrozenDay
    from edge_agent.grid.lineloss import LineLoss


def migration_grid(db: Any) -> None:
    """Tables of the concentrator (called from `database._migration_grid`)."""
    db.execute("""CREATE TABLE frozen_days (meter TEXT NOT NULL, day TEXT NOT NULL,
                  at TEXT NOT NULL, forward TEXT NOT NULL, read_at TEXT NOT NULL,
                  billed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (meter, day)) WITHOUT ROWID""")
    db.execute("""CREATE TABLE line_loss (area TEXT NOT NULL, period TEXT NOT NULL,
                  start TEXT NOT NULL, body TEXT NOT NULL, incomplete INTEGER NOT NULL,
                  PRIMARY KEY (area, period, start)) WITHOUT ROWID""")
    db.execute("""CREATE TABLE meter_clocks (meter TEXT PRIMARY KEY, read_at TEXT NOT NULL,
                  meter_time TEXT NOT NULL, deviation REAL NOT NULL, raised INTEGER NOT NULL,
                  set_at TEXT)""")
    db.execute("""CREATE TABLE quarter_readings (meter TEXT NOT NULL, quarter TEXT NOT NULL,
                  kwh TEXT NOT NULL, PRIMARY KEY (meter, quarter)) WITHOUT ROWID""")
    db.execute("""CREATE TABLE daily_usage (account TEXT NOT NULL, day TEXT NOT NULL,
                  body TEXT NOT NULL, PRIMARY KEY (account, day)) WITHOUT ROWID""")


class GridRecords(Database):
    """Daily freezes, line loss, meter clocks and daily usage."""

    # -- freezes ---------------------------------------------------------------------------
    def record_freezes(self, freezes: Iterable[FrozenDay], read_at: datetime,
                       billed: bool = False) -> None:
        self.conn.executemany(
            "INSERT INTO frozen_days (meter, day, at, forward, read_at, billed) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(meter, day) DO UPDATE SET "
            "billed=MAX(billed, excluded.billed)",
            [(f.meter, f.day.isoformat(), f.at.isoformat(),
              json.dumps([str(v) for v in f.forward]), to_iso(read_at), int(billed))
             for f in freezes])

    def freeze_days(self, meter: str, since: date) -> set[date]:
        """Days (each closed by a freeze) on record for a meter, from `since` on."""
        rows = self.conn.execute("SELECT day FROM frozen_days WHERE meter=? AND day >= ?",
                                 (meter, since.isoformat()))
        return {date.fromisoformat(r["day"]) for r in rows}

    def freezes_of_day(self, day: date) -> dict[str, FrozenDay]:
        """Every meter's freeze closing `day`, by meter."""
        rows = self.conn.execute("SELECT meter, at, forward FROM frozen_days WHERE day=?",
                                 (day.isoformat(),))
        from edge_agent.grid.backfill import FrozenDay

        return {r["meter"]: FrozenDay(r["meter"], datetime.fromisoformat(r["at"]),
                                      tuple(Decimal(v) for v in json.loads(r["forward"])))
                for r in rows}

    def freeze_count(self, day: date) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM frozen_days WHERE day=?",
                                     (day.isoformat(),)).fetchone()[0])

    # -- 15-minute registers of line-loss areas ----------------------------------------------
    def record_quarter(self, quarter: datetime, values: dict[str, Decimal],
                       read_at: dict[str, datetime] | None = None) -> None:
        """Registers read for a quarter boundary, with when each was read."""
        times = read_at or {}
        self.conn.executemany(
            "INSERT OR IGNORE INTO quarter_readings (meter, quarter, kwh, read_at) "
            "VALUES (?,?,?,?)",
            [(m, to_iso(quarter), str(v), to_iso(times.get(m))) for m, v in values.items()])

    def quarter_values(self, quarter: datetime) -> dict[str, Decimal]:
        rows = self.conn.execute("SELECT meter, kwh FROM quarter_readings WHERE quarter=?",
                                 (to_iso(quarter),))
        return {r["meter"]: Decimal(r["kwh"]) for r in rows}

    def quarter_times(self, quarter: datetime) -> dict[str, datetime]:
        """When each register of a quarter boundary was read (rows that say)."""
        rows = self.conn.execute("SELECT meter, read_at FROM quarter_readings WHERE quarter=? "
                                 "AND read_at IS NOT NULL", (to_iso(quarter),))
        return {r["meter"]: datetime.fromisoformat(r["read_at"]) for r in rows}

    # -- line loss -------------------------------------------------------------------------
    def save_line_loss(self, result: LineLoss, publish: bool = True) -> bool:
        """Keep one period's result; queue it for the head end only when it is new or differs
        from the one kept (a day closed again after a restart is not sent twice; a day a
        backfill completed is).  True when something changed."""
        body = result.as_dict()
        text = json.dumps(body)
        key = (result.area, result.period, result.start.isoformat())
        row = self.conn.execute("SELECT body FROM line_loss WHERE area=? AND period=? AND "
                                "start=?", key).fetchone()
        if row is not None and row["body"] == text:
            return False
        self.conn.execute(
            "INSERT INTO line_loss (area, period, start, body, incomplete) VALUES (?,?,?,?,?) "
            "ON CONFLICT(area, period, start) DO UPDATE SET body=excluded.body, "
            "incomplete=excluded.incomplete", (*key, text, int(result.incomplete)))
        if publish:
            self.enqueue("lineloss", body)  # type: ignore[attr-defined]
        return True

    def line_losses(self, period: str | None = None, area: str | None = None,
                    limit: int = 50) -> list[dict[str, Any]]:
        """Stored periods, newest first."""
        sql, params = "SELECT body FROM line_loss WHERE 1=1", []
        for column, value in (("period", period), ("area", area)):
            if value:
                sql += f" AND {column}=?"
                params.append(value)
        rows = self.conn.execute(sql + " ORDER BY start DESC LIMIT ?", (*params, limit))
        return [json.loads(r["body"]) for r in rows]

    # -- meter clocks ----------------------------------------------------------------------
    def clock_raised(self) -> dict[str, bool]:
        return {r["meter"]: bool(r["raised"])
                for r in self.conn.execute("SELECT meter, raised FROM meter_clocks")}

    def save_clock(self, meter: str, read_at: datetime, meter_time: datetime, deviation: float,
                   raised: bool, set_at: datetime | None = None) -> None:
        self.conn.execute(
            "INSERT INTO meter_clocks (meter, read_at, meter_time, deviation, raised, set_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(meter) DO UPDATE SET read_at=excluded.read_at, "
            "meter_time=excluded.meter_time, deviation=excluded.deviation, "
            "raised=excluded.raised, set_at=COALESCE(excluded.set_at, set_at)",
            (meter, to_iso(read_at), meter_time.isoformat(), deviation, int(raised),
             to_iso(set_at)))

    def meter_clocks(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM meter_clocks ORDER BY meter")]

    # -- problem meters (`status`, `meters --geojson`) --------------------------------------
    def save_raised(self, raised: dict[str, list[str]]) -> None:
        """The anomaly conditions the concentrator holds raised now, by meter (read-failure
        streaks, register too fast or stopped, line loss of an area): what `status` shows."""
        text = json.dumps(raised, sort_keys=True)
        if (self.setting(RAISED_KEY) or "{}") != text:  # type: ignore[attr-defined]
            self.set_setting(RAISED_KEY, text)  # type: ignore[attr-defined]

    def meter_problems(self) -> dict[str, list[str]]:
        """meter -> what is wrong with it now, from what the daemon stored: `offline` (its last
        poll went unanswered), `relay_open` (tripped), `clock_deviation` (raised, not yet
        back), and the anomaly conditions the concentrator holds raised.  Meters without a
        problem are left out.  The one rule of `status` and `meters --geojson`."""
        out: dict[str, set[str]] = {}
        for r in self.conn.execute("SELECT s.address, s.online, s.relay FROM meter_state s "
                                   "JOIN meters m ON m.address=s.address WHERE m.active=1"):
            if not r["online"]:
                out.setdefault(r["address"], set()).add("offline")
            if r["relay"] == "open":
                out.setdefault(r["address"], set()).add("relay_open")
        for r in self.conn.execute("SELECT meter FROM meter_clocks WHERE raised=1"):
            out.setdefault(r["meter"], set()).add("clock_deviation")
        raised = self.setting(RAISED_KEY)  # type: ignore[attr-defined]
        for meter, kinds in json.loads(raised or "{}").items():
            out.setdefault(meter, set()).update(kinds)
        gone = {r[0] for r in self.conn.execute("SELECT address FROM meters WHERE active=0")}
        return {m: sorted(kinds, key=_problem_order) for m, kinds in sorted(out.items())
                if m not in gone}  # removed meters are no one's problem (total meters are kept)

    # -- what the anomaly watch compares ---------------------------------------------------
    def latest_values(self, names: Iterable[str]) -> dict[str, dict[str, tuple[int, str]]]:
        """meter -> name -> (epoch seconds, value) of the newest readings of `names` (each
        meter's newest row, which holds a whole poll; else what schema 1 kept in `latest`)."""
        wanted = set(names)
        out: dict[str, dict[str, tuple[int, str]]] = {}
        rows = [row for table in self._pointed_tables()  # type: ignore[attr-defined]
                for row in self.conn.execute(
                    "SELECT s.address AS meter, r.ts, r.name, r.value FROM meter_state s "
                    f"JOIN {table} r ON r.rowid = s.last_reading").fetchall()]
        for r in rows:
            for name, value in self._unpack(r["name"], r["value"]):  # type: ignore[attr-defined]
                if name in wanted:
                    out.setdefault(r["meter"], {})[name] = (r["ts"], value)
        if wanted:
            old = self.conn.execute(f"SELECT meter, name, ts, value FROM latest WHERE name IN "
                                    f"({','.join('?' * len(wanted))})", sorted(wanted))
            for r in old:
                out.setdefault(r["meter"], {}).setdefault(r["name"], (r["ts"], r["value"]))
        return out

    def poll_counters(self) -> dict[str, tuple[int, int]]:
        """meter -> (polls, replies) since commissioning."""
        return {r["address"]: (r["polls"] or 0, r["replies"] or 0) for r in self.conn.execute(
            "SELECT address, polls, replies FROM meter_state")}

    # -- daily usage -----------------------------------------------------------------------
    def save_usage(self, account: str, day: date, body: dict[str, Any],
                   publish: bool = True) -> bool:
        """Keep an account's day (one record for all its meters); queue it for the head end
        only when it is new or the day's own figures differ from the ones kept.  `tier` and
        `allowance` (at the top and in each meter's part) are the position when the day was
        first closed (they follow the running billing state): a day closed again later with
        the same figures keeps them and is not sent again.  True when queued."""
        text = json.dumps(body, default=str)
        row = self.conn.execute("SELECT body FROM daily_usage WHERE account=? AND day=?",
                                (account, day.isoformat())).fetchone()
        if row is not None:
            kept, new = _day_figures(json.loads(row["body"])), _day_figures(json.loads(text))
            if "meters" not in kept:  # kept by an earlier version: one meter's day
                new = {k: v for k, v in new.items() if k not in USAGE_ADDED}
            if kept == new:
                return False
        self.conn.execute(
            "INSERT INTO daily_usage (account, day, body) VALUES (?,?,?) "
            "ON CONFLICT(account, day) DO UPDATE SET body=excluded.body",
            (account, day.isoformat(), text))
        if publish:
            self.enqueue("usage", body)  # type: ignore[attr-defined]
        return True

    def usage(self, account: str, limit: int = 31) -> list[dict[str, Any]]:
        """Daily usage of an account, newest first."""
        rows = self.conn.execute("SELECT body FROM daily_usage WHERE account=? ORDER BY day "
                                 "DESC LIMIT ?", (account, limit))
        return [json.loads(r["body"]) for r in rows]

    def charges_of_day(self, account: str, start: datetime, end: datetime) -> Decimal:
        """Charges (as a positive amount) of an account for the day [start, end).  An energy
        charge is stamped at the end of its interval (a freeze at midnight closes the day
        before it): those in (start, end]; a daily fixed charge is stamped when billed, on
        or after its day: those in [start, end)."""
        rows = self.ledger_select(  # type: ignore[attr-defined]
            "SELECT COALESCE(SUM(amount_micro), 0) FROM {t} WHERE account=? AND "
            "kind='charge' AND ((id NOT LIKE '%:daily:%' AND ts > ? AND ts <= ?) OR "
            "(id LIKE '%:daily:%' AND ts >= ? AND ts < ?))",
            (account, to_iso(start), to_iso(end), to_iso(start), to_iso(end)),
            int(start.timestamp()) // 86400, int(end.timestamp()) // 86400)
        return Decimal(-sum(int(r[0]) for r in rows)) / Decimal(1_000_000)


#: parts of a `usage` body that are the running position when the day was closed, not the day's
#: own figures (compared to decide whether a day closed again is a change)
USAGE_POSITION = ("tier", "allowance")


#: parts of a `usage` body added since a day could first be kept: a day kept without them and
#: closed again with the same figures (the daemon closes yesterday again after an upgrade) is
#: not a change
USAGE_ADDED = ("meters", "missing_meters")


def _day_figures(body: dict[str, Any]) -> dict[str, Any]:
    """A usage body without the running positions, at the top and in each meter's part."""
    figures = {k: v for k, v in body.items() if k not in USAGE_POSITION}
    if isinstance(figures.get("meters"), list):
        figures["meters"] = [{k: v for k, v in m.items() if k not in USAGE_POSITION}
                             for m in figures["meters"] if isinstance(m, dict)]
    return figures


RAISED_KEY = "anomalies_raised"  # kv: {meter: [condition, ...]} the concentrator holds raised
#: problems in the order a technician looks at them (others follow, by name)
PROBLEM_ORDER = ("offline", "read_failures", "relay_open", "clock_deviation")


def _problem_order(kind: str) -> tuple[int, str]:
    return (PROBLEM_ORDER.index(kind) if kind in PROBLEM_ORDER else len(PROBLEM_ORDER), kind)
