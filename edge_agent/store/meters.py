"""Meters and their per-meter state: registration, settings, presence, relay, health.

The `meters` table is what a meter *is* (bus, account, tariff, keep-power...); `meter_state`
is what the agent last saw of it (register, phase, relay, online, poll counts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from edge_agent.errors import UnknownMeter
from edge_agent.prepaid.money import format_money, from_micro
from edge_agent.store.database import Database, epoch_micro, to_iso


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
    behind: str | None = None  # the total meter (line-loss area) it sits behind


class Meters(Database):
    """Meters and their per-meter state: registration, settings, presence, relay, health."""

    def add_meter(self, meter: MeterRecord, initial_kwh: Decimal | None = None,
                  at: datetime | None = None) -> None:
        """Register (or update) a meter; an initial reading makes it the billing baseline."""
        row = meter.__dict__ | {"keep_power": int(meter.keep_power),
                                "allowance": int(meter.allowance), "active": 1}
        existing = self.meter(meter.address)
        with self.transaction():
            if existing is None or initial_kwh is not None:
                row["commissioned_at"] = to_iso(at)
                row["commission_kwh"] = None if initial_kwh is None else str(initial_kwh)
            else:
                row["commissioned_at"] = existing.commissioned_at
                row["commission_kwh"] = existing.commission_kwh
            self.upsert("meters", row, pk="address")
            self.ensure_account(meter.account)
            if existing is None or initial_kwh is not None:
                # The billing sequence goes on: charge ids (gw:charge:<meter>:<seq>) of a
                # meter commissioned again must not repeat those of its former life, nor
                # its fixed daily charges (gw:daily:<meter>:<day>) be charged twice.
                former = self.conn.execute(
                    "SELECT charge_seq, last_daily FROM meter_state WHERE address=?",
                    (meter.address,)).fetchone()
                self.conn.execute("DELETE FROM meter_state WHERE address=?", (meter.address,))
                self.conn.execute(
                    "INSERT INTO meter_state (address, last_kwh, ts_us, charge_seq, phase, "
                    "online, polls, replies, cwt, last_daily) "
                    "VALUES (?,?,?,?,'normal',1,0,0,0,?)",
                    (meter.address, None if initial_kwh is None else str(initial_kwh),
                     epoch_micro(at) if initial_kwh is not None else None,
                     (former[0] or 0) if former else 0, former[1] if former else None))

    def reactivate_meter(self, meter: MeterRecord, at: datetime) -> str | None:
        """A meter deactivated earlier (dropped from the file) and listed again: active, its
        record as given, commissioned again at `at`, and its next reading a new baseline:
        what it counted while nobody polled it is not billed (it may have been in another
        house, or the account may be another's now), nor are fixed charges for those days.
        Returns the register last billed (for the event that tells the head end)."""
        with self.transaction():
            row = self.conn.execute("SELECT last_kwh FROM meter_state WHERE address=?",
                                    (meter.address,)).fetchone()
            self.add_meter(meter)
            self.conn.execute("UPDATE meters SET commissioned_at=?, commission_kwh=NULL "
                              "WHERE address=?", (to_iso(at), meter.address))
            self.conn.execute("UPDATE meter_state SET last_kwh=NULL, last_rates=NULL, "
                              "ts_us=NULL WHERE address=?", (meter.address,))
        return None if row is None else row["last_kwh"]

    def replace_meter(self, old: str, new: MeterRecord, old_final_kwh: Decimal,
                      new_initial_kwh: Decimal, at: datetime) -> None:
        """Swap a meter: bill nothing across the swap; the old one keeps its history."""
        with self.transaction():
            if self.meter(old) is None:
                raise UnknownMeter(f"unknown meter {old}")
            self.conn.execute("UPDATE meters SET active=0, replaced_by=? WHERE address=?",
                              (new.address, old))
            self.conn.execute("UPDATE meter_state SET last_kwh=? WHERE address=?",
                              (str(old_final_kwh), old))
            self.add_meter(new, new_initial_kwh, at)

    def set_meter_tariff(self, address: str, tariff: str) -> None:
        with self.transaction():
            if self.meter(address) is None:
                raise UnknownMeter(f"unknown meter {address}")
            self.conn.execute("UPDATE meters SET tariff=? WHERE address=?", (tariff, address))

    def set_keep_power(self, address: str, keep_power: bool) -> None:
        with self.transaction():
            self.conn.execute("UPDATE meters SET keep_power=? WHERE address=?",
                              (int(keep_power), address))

    def remove_meter(self, address: str) -> None:
        with self.transaction():
            if self.meter(address) is None:
                raise UnknownMeter(f"unknown meter {address}")
            self.conn.execute("UPDATE meters SET active=0 WHERE address=?", (address,))

    def meter(self, address: str) -> MeterRecord | None:
        row = self.conn.execute(
            f"SELECT {_METER_COLUMNS} FROM meters WHERE address=?", (address,)).fetchone()
        return None if row is None else _meter(row)

    def meters(self, active_only: bool = True) -> list[MeterRecord]:
        rows = self.conn.execute(
            f"SELECT {_METER_COLUMNS} FROM meters "
            + ("WHERE active=1 " if active_only else "") + "ORDER BY address").fetchall()
        return [_meter(r) for r in rows]

    def swapped_out(self, since: datetime, until: datetime) -> dict[str, str]:
        """Meters of a line-loss area replaced (`commission replace`) within (since, until):
        old address -> the total meter it was behind.  Part of such a period's energy went
        through the old meter, which is out of the area now."""
        rows = self.conn.execute(
            "SELECT o.address, o.behind FROM meters o JOIN meters n ON n.address=o.replaced_by "
            "WHERE o.active=0 AND o.behind IS NOT NULL AND n.commissioned_at > ? "
            "AND n.commissioned_at < ?", (to_iso(since), to_iso(until)))
        return {r["address"]: r["behind"] for r in rows}

    def set_relay(self, address: str, relay: str) -> None:
        self.conn.execute("UPDATE meter_state SET relay=? WHERE address=?", (relay, address))

    def record_poll(self, results: Iterable[tuple[str, bool, datetime]],
                    day_counts: dict[str, tuple[int, int]] | None = None) -> None:
        """Count one poll per meter, and whether it answered."""
        days = day_counts or {}
        self.conn.executemany(
            "UPDATE meter_state SET polls=polls+1, replies=replies+?, online=?, "
            "seen_us=CASE WHEN ? THEN ? ELSE seen_us END, "
            "day_polls=COALESCE(?, day_polls), day_replies=COALESCE(?, day_replies) "
            "WHERE address=?",
            [(int(ok), int(ok), int(ok), epoch_micro(ts), *days.get(a, (None, None)), a)
             for a, ok, ts in results])

    def meter_status(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT m.address, m.bus, m.protocol, m.account, m.tariff, s.last_kwh, s.last_seen, "
            "s.relay, s.phase, s.online, s.day_polls, s.day_replies, a.balance_micro, "
            "m.keep_power "
            "FROM meters m JOIN meter_state s ON s.address=m.address "
            "JOIN accounts a ON a.id=m.account WHERE m.active=1 ORDER BY m.bus, m.address")
        return [{"meter": r["address"], "bus": r["bus"], "protocol": r["protocol"],
                 "account": r["account"], "tariff": r["tariff"], "kwh": r["last_kwh"],
                 "last_reading": r["last_seen"], "relay": r["relay"] or "unknown",
                 "phase": r["phase"], "online": bool(r["online"]),
                 "polls": r["day_polls"] or 0, "replies": r["day_replies"] or 0,
                 "success_rate": None if not r["day_polls"]
                 else round((r["day_replies"] or 0) / r["day_polls"], 4),
                 "balance": format_money(from_micro(r["balance_micro"])),
                 "keep_power": bool(r["keep_power"])}
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

    def is_online(self, address: str) -> bool:
        """Whether the meter answered its last poll (unknown meters are not)."""
        row = self.conn.execute("SELECT online FROM meter_state WHERE address=?",
                                (address,)).fetchone()
        return bool(row and row["online"])

    # -- field data (location, pole, phase, customer class) -----------------------------------
    def set_meter_location(self, address: str, fields: dict[str, Any], source: str,
                           at: datetime) -> None:
        """A meter's field data as the head end (or a technician) gives it: replaces what was
        kept (a field not given is none)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO meter_locations (address, lat, lon, pole, phase, "
            "customer_class, source, at) VALUES (?,?,?,?,?,?,?,?)",
            (address, *(fields.get(k) for k in LOCATION_FIELDS), source, to_iso(at)))

    def seed_meter_locations(self, rows: Iterable[tuple[str, dict[str, Any]]],
                             at: datetime) -> None:
        """Field data from agent.toml: the fields the file sets win, the ones it leaves out
        keep what is kept (e.g. the head end's); a meter the file gives none is untouched."""
        self.conn.executemany(
            "INSERT INTO meter_locations (address, lat, lon, pole, phase, customer_class, "
            "source, at) VALUES (?,?,?,?,?,?,'file',?) ON CONFLICT(address) DO UPDATE SET "
            + ", ".join(f"{k}=COALESCE(excluded.{k}, {k})" for k in LOCATION_FIELDS)
            + ", source='file', at=excluded.at WHERE "
            + " OR ".join(f"(excluded.{k} IS NOT NULL AND excluded.{k} IS NOT {k})"
                          for k in LOCATION_FIELDS),
            [(address, *(fields.get(k) for k in LOCATION_FIELDS), to_iso(at))
             for address, fields in rows
             if any(fields.get(k) is not None for k in LOCATION_FIELDS)])

    def meter_locations(self) -> dict[str, dict[str, Any]]:
        """meter -> {lat, lon, pole, phase, customer_class, source} of the meters with any."""
        return {r["address"]: {k: r[k] for k in (*LOCATION_FIELDS, "source")}
                for r in self.conn.execute(
                    f"SELECT address, {', '.join(LOCATION_FIELDS)}, source "
                    "FROM meter_locations")}

    def online_states(self) -> dict[str, bool]:
        return {a: bool(o) for a, o in
                self.conn.execute("SELECT address, online FROM meter_state")}


#: a meter's field data (the `[[meter]]` keys of the same names)
LOCATION_FIELDS = ("lat", "lon", "pole", "phase", "customer_class")

_METER_COLUMNS = ("address, bus, account, tariff, protocol, multiplier, keep_power, allowance, "
                  "unit, model, commissioned_at, commission_kwh, active, behind")


def _meter(row: sqlite3.Row) -> MeterRecord:
    return MeterRecord(address=row["address"], bus=row["bus"], account=row["account"],
                       tariff=row["tariff"], protocol=row["protocol"],
                       multiplier=row["multiplier"] or 1, keep_power=bool(row["keep_power"]),
                       allowance=bool(row["allowance"]), unit=row["unit"], model=row["model"],
                       commissioned_at=row["commissioned_at"],
                       commission_kwh=row["commission_kwh"], active=bool(row["active"]),
                       behind=row["behind"])
