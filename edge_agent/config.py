"""Agent configuration: TOML (standard library), validated before anything starts.

Every problem is reported with its key path and, where the key is written in the file, its
line: `agent.toml:14: [[bus]][0].baud: 2401 is not a standard baud rate`.  Defaults are
embedded, so `edge-agent demo` needs no file at all.  config/agent.toml is the annotated
example and the reference of every key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.errors import ConfigError
from edge_agent.prepaid.policy import Policy, parse_policy

BAUDS = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
PROTOCOLS = ("dlt645-2007", "dlt645-1997", "modbus")
ADDRESS = re.compile(r"^\d{12}$")
#: a meter's field data for technicians (`[[meter]]` and the head end's `add_meter`)
FIELD_DATA = ("lat", "lon", "pole", "phase", "customer_class")
PHASES = ("A", "B", "C", "ABC")
LABEL_MAX = 64  # characters of a pole or customer class


def _shown(value: Any, limit: int = 24) -> str:
    """A value as a message quotes it: repr (control characters escaped), at most `limit`."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def field_value_problem(key: str, value: Any) -> str | None:
    """What is wrong with one field-data value (None: nothing).  The one rule for agent.toml
    and the head end: lat -90..90 and lon -180..180 as numbers, phase A, B, C or ABC, pole
    and customer class 1-64 printable characters."""
    if key in ("lat", "lon"):
        limit = 90 if key == "lat" else 180
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not -limit <= value <= limit):
            return (f"{_shown(value)} is not a {'latitude' if key == 'lat' else 'longitude'} "
                    f"(a number from -{limit} to {limit})")
    elif key == "phase":
        if value not in PHASES or not isinstance(value, str):
            return f"{_shown(value)} is not A, B, C or ABC"
    elif key in ("pole", "customer_class"):
        if (not isinstance(value, str) or not 1 <= len(value) <= LABEL_MAX
                or not value.isprintable()):
            return f"{_shown(value)} is not 1-{LABEL_MAX} printable characters"
    return None


def field_data_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for every bad field-data value given (None values are not given);
    lat and lon go together."""
    given = {k: v for k, v in values.items() if k in FIELD_DATA and v is not None}
    out = [(k, why) for k, v in given.items() if (why := field_value_problem(k, v))]
    for key, other in (("lat", "lon"), ("lon", "lat")):
        if key in given and other not in given:
            out.append((key, f"{key} without {other}: give both or neither"))
    return out


@dataclass(frozen=True)
class BusConfig:
    name: str
    port: str
    protocol: str = "dlt645-2007"
    baud: int = 2400
    parity: str = "E"
    stopbits: int = 1
    response_timeout: float = 0.5
    gap: float = 0.02
    retries: int = 2
    poll_interval: float = 900.0
    quantities: tuple[str, ...] = ("voltage_a", "current_a", "active_power_total",
                                   "cover_open_count")


@dataclass(frozen=True, slots=True)
class MeterConfig:
    address: str
    bus: str
    account: str
    tariff: str
    multiplier: int = 1
    keep_power: bool = False
    allowance: bool = False
    initial_kwh: Decimal | None = None
    unit: int | None = None  # Modbus unit id
    model: str | None = None  # Modbus register map
    # -- field data and line loss (issue 13); all optional -----------------------------------
    lat: float | None = None
    lon: float | None = None
    pole: str | None = None
    phase: str | None = None  # A | B | C | ABC
    customer_class: str | None = None
    role: str = "customer"  # or "total": a transformer area's total meter (总表), not billed
    behind: str | None = None  # the total meter this customer meter is behind
    ct_ratio: int = 1  # total meters: CT and PT ratios (primary energy = register x CT x PT)
    pt_ratio: int = 1

    register_max: Decimal = Decimal("999999.99")  # the energy register wraps past this, kWh


@dataclass(frozen=True)
class ConcentratorConfig:
    """`[concentrator]`: frozen data, backfill, meter clocks, anomalies, line loss."""

    enabled: bool = False
    frozen_read_at: str = "00:05"
    backfill_at: str = "00:15"
    backfill_days: int = 3  # 1..7
    clock_read_interval: float = 3600.0  # seconds
    broadcast_at: str = "14:20"  # away from the hour and midnight
    clock_threshold: int = 60  # seconds
    clock_trust: str = "auto"  # auto (NTP state) | trust | distrust
    loss_threshold: Decimal = Decimal("0.08")
    fast_factor: Decimal = Decimal(10)
    stopped_kwh: Decimal = Decimal("0.1")
    failure_streak: int = 3
    publish: bool = True  # queue `lineloss` and `usage` messages for the head end
    settlement_day: int = 1  # the meters' settlement day and hour (04000B01), for 0001FFNN
    settlement_hour: int = 0
    quarter_skew: int = 60  # seconds a 15-minute read may be from its boundary (else incomplete)


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = False
    urls: tuple[str, ...] = ("mqtt://127.0.0.1:1883",)
    prefix: str = "edge"
    protocol: str = "3.1.1"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 60
    batch_size: int = 200
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    status_interval: float = 60.0
    max_payload: int = 64 * 1024  # bytes of one command, checked before parsing


@dataclass(frozen=True)
class KeysConfig:
    directory: str = "/var/lib/edge-agent/keys"
    headend_keys: str = "/etc/edge-agent/headend-keys"
    clock_skew: int = 120


@dataclass(frozen=True)
class RetentionConfig:
    """How long each kind of data is kept (docs/storage.md); nothing the head end has not
    acknowledged is ever removed, whatever these say."""

    outbox_max_messages: int = 2_000_000
    outbox_max_age_days: int = 30
    readings_days: int = 31       # every 15-minute reading
    daily_days: int = 62          # then the day's last reading per meter and quantity
    monthly_months: int = 24      # then the month's last reading per meter and quantity
    events_days: int = 90
    ledger_detail_days: int = 14  # then acknowledged entries fold into one per account/month/kind
    ledger_ids_days: int = 400    # compacted entries' ids stay resolvable (a repeat is a no-op)
    commands_seen_days: int = 35  # the head end's longest command lifetime plus a margin
    interval_minutes: int = 10    # how often the daemon applies retention
    # The concentrator's tables (store/grid.py): its 15-minute figures (quarter-hour register
    # values, 15-minute line loss), daily figures (frozen days, daily line loss, daily usage,
    # clocks of meters not read since) and monthly line loss.
    grid_quarter_days: int = 31
    grid_daily_days: int = 62     # at least 32: a month's line loss opens on the last freeze
    grid_monthly_months: int = 24  # of the month before; backfill reads at most 7 days back


@dataclass(frozen=True)
class AccountConfig:
    """`[accounts.NAME]`: what the gateway knows of a customer beyond its meters."""

    name: str
    policy_class: str | None = None  # a [policy.classes.NAME]; None: the default policy
    tier_bonus_kwh: Decimal = Decimal(0)  # household bonus on every tier threshold


@dataclass(frozen=True)
class Config:
    gateway_id: str = "gw1"
    database: str = "/var/lib/edge-agent/agent.db"
    timezone: str = "Asia/Shanghai"
    tariff_dir: str = "/etc/edge-agent/tariffs"
    control_socket: str = "/run/edge-agent/control.sock"
    control_group: str | None = None
    log_level: str = "info"
    metrics_port: int | None = None
    buses: tuple[BusConfig, ...] = ()
    meters: tuple[MeterConfig, ...] = ()
    policy: Policy = field(default_factory=Policy)
    policy_raw: dict[str, Any] = field(default_factory=dict)
    accounts: tuple[AccountConfig, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    concentrator: ConcentratorConfig = field(default_factory=ConcentratorConfig)
    total_meters: tuple[MeterConfig, ...] = ()  # role = "total": read, never billed
    source: str = "<defaults>"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def bus(self, name: str) -> BusConfig:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise ConfigError(f"no bus named {name!r} in {self.source}")


_AGENT_KEYS = {"gateway_id": str, "database": str, "timezone": str, "tariff_dir": str,
               "control_socket": str, "control_group": str, "log_level": str,
               "metrics_port": int}
_BUS_KEYS = {"name": str, "port": str, "protocol": str, "baud": int, "parity": str,
             "stopbits": int, "response_timeout": (int, float), "gap": (int, float),
             "retries": int, "poll_interval": (int, float), "quantities": list}
_METER_KEYS = {"address": str, "bus": str, "account": str, "tariff": str, "multiplier": int,
               "keep_power": bool, "allowance": bool, "initial_kwh": str, "unit": int,
               "model": str, "lat": (int, float), "lon": (int, float), "pole": str,
               "phase": str, "customer_class": str, "role": str, "behind": str,
               "ct_ratio": int, "pt_ratio": int,
               "register_max": str}
_CONCENTRATOR_KEYS = {"enabled": bool, "frozen_read_at": str, "backfill_at": str,
                      "backfill_days": int, "clock_read_interval": (int, float),
                      "broadcast_at": str, "clock_threshold": int, "clock_trust": str,
                      "loss_threshold": str, "fast_factor": str, "stopped_kwh": str,
                      "failure_streak": int, "publish": bool, "settlement_day": int,
                      "settlement_hour": int, "quarter_skew": int}
_MQTT_KEYS = {"enabled": bool, "urls": list, "prefix": str, "protocol": str, "username": str,
              "password": str, "ca_file": str, "cert_file": str, "key_file": str,
              "keepalive": int, "batch_size": int, "reconnect_min": (int, float),
              "reconnect_max": (int, float), "status_interval": (int, float),
              "max_payload": int}
_KEYS_KEYS = {"directory": str, "headend_keys": str, "clock_skew": int}
_RETENTION_KEYS = {"outbox_max_messages": int, "outbox_max_age_days": int,
                   "readings_days": int, "daily_days": int, "monthly_months": int,
                   "events_days": int, "ledger_detail_days": int, "ledger_ids_days": int,
                   "commands_seen_days": int, "interval_minutes": int,
                   "grid_quarter_days": int, "grid_daily_days": int,
                   "grid_monthly_months": int}
# Retention shorter than what the concentrator still reads: a month's line loss opens on the
# last freeze of the month before (up to 32 days back); backfill asks for 7 days at most.
_RETENTION_MINIMUM = {"grid_daily_days": 32}
_TOP = {"agent", "bus", "meter", "policy", "mqtt", "keys", "retention", "accounts",
        "concentrator"}
_ACCOUNT_KEYS = {"policy_class": str, "tier_bonus_kwh": str}


class _Locator:
    """Finds the line where a key of a table (the nth `[[bus]]`, `[mqtt]`...) is written."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line(self, table: str, index: int | None, key: str | None) -> int | None:
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        seen = -1
        start = None
        for number, line in enumerate(self.lines, start=1):
            if header.match(line):
                seen += 1
                if index is None or seen == index:
                    start = number
                    break
        if start is None:
            return None
        if key is None:
            return start
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if line.lstrip().startswith("["):
                break
            if pattern.match(line):
                return number + 1
        return start


class _Checker:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.locate = _Locator(text)
        self.problems: list[str] = []

    def add(self, table: str, index: int | None, key: str | None, message: str) -> None:
        line = self.locate.line(table, index, key)
        where = f"[[{table}]][{index}]" if index is not None else f"[{table}]"
        if key:
            where += f".{key}"
        prefix = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{prefix}: {where}: {message}")

    def table(self, raw: Any, schema: dict[str, Any], table: str,
              index: int | None = None) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.add(table, index, None, "must be a table")
            return {}
        out = {}
        for key, value in raw.items():
            if key not in schema:
                self.add(table, index, key, f"unknown key {key!r} (known: "
                         f"{', '.join(sorted(schema))})")
                continue
            wanted = schema[key]
            ok = isinstance(value, wanted) and not (
                isinstance(value, bool) and wanted in (int, (int, float)))
            if not ok:
                names = wanted.__name__ if isinstance(wanted, type) else "number"
                self.add(table, index, key, f"{value!r} is a {type(value).__name__}, "
                         f"expected {names}")
                continue
            out[key] = value
        return out


def parse_config(text: str, source: str = "agent.toml", quantities: bool = True) -> Config:
    """Validate a configuration document; `ConfigError` lists every problem with its place.

    `quantities=False` skips checking the buses' quantity names against the DL/T 645
    catalogue (which loads the frame codec): for CLI verbs that only read the database."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    check = _Checker(source, text)
    for key in data:
        if key not in _TOP:
            check.add(key, None, None, f"unknown table (known: {', '.join(sorted(_TOP))})")
    agent = check.table(data.get("agent", {}), _AGENT_KEYS, "agent")
    values: dict[str, Any] = dict(agent)
    if "timezone" in agent:
        try:
            ZoneInfo(agent["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            check.add("agent", None, "timezone", f"unknown time zone {agent['timezone']!r}")
    if "log_level" in agent and agent["log_level"] not in ("debug", "info", "warning",
                                                           "error"):
        check.add("agent", None, "log_level", f"{agent['log_level']!r} is not one of debug, "
                  "info, warning, error")
    if "gateway_id" in agent and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", agent["gateway_id"]):
        check.add("agent", None, "gateway_id", "use 1-64 letters, digits, '.', '_' or '-' "
                  "(it is part of MQTT topics and ledger ids)")
    if "metrics_port" in agent and not 1 <= agent["metrics_port"] <= 65535:
        check.add("agent", None, "metrics_port", f"{agent['metrics_port']} is not a TCP port "
                  "(1-65535)")
    buses = _buses(check, data.get("bus", []), quantities)
    values["buses"] = tuple(buses)
    every = _meters(check, data.get("meter", []), {b.name: b for b in buses})
    values["meters"] = tuple(m for m in every if m.role != "total")
    values["total_meters"] = tuple(m for m in every if m.role == "total")
    _areas(check, every)
    if "concentrator" in data:
        values["concentrator"] = _concentrator(check, data["concentrator"])
    if "policy" in data:
        try:
            values["policy"] = parse_policy(data["policy"], "[policy]")
            values["policy_raw"] = data["policy"]
        except ConfigError as exc:
            for part in str(exc).split("; "):
                key = part.split(":")[0].removeprefix("[policy].").removeprefix("[policy]")
                line = check.locate.line("policy", None, key or None)
                check.problems.append(f"{source}:{line}: {part}" if line else f"{source}: {part}")
    values["accounts"] = _accounts(check, data.get("accounts", {}),
                                   values.get("policy", Policy()))
    mqtt = check.table(data.get("mqtt", {}), _MQTT_KEYS, "mqtt")
    if mqtt:
        if "protocol" in mqtt and mqtt["protocol"] not in ("3.1.1", "5"):
            check.add("mqtt", None, "protocol", f"{mqtt['protocol']!r} is not 3.1.1 or 5")
        for index, url in enumerate(mqtt.get("urls", [])):
            if not re.fullmatch(r"mqtts?://[^/:]+(:\d+)?/?", str(url)):
                check.add("mqtt", None, "urls", f"urls[{index}] {url!r} is not "
                          "mqtt://host[:port] or mqtts://host[:port]")
        if "urls" in mqtt:
            mqtt["urls"] = tuple(mqtt["urls"])
        values["mqtt"] = MqttConfig(**mqtt)
    keys = check.table(data.get("keys", {}), _KEYS_KEYS, "keys")
    if keys:
        values["keys"] = KeysConfig(**keys)
    retention = check.table(data.get("retention", {}), _RETENTION_KEYS, "retention")
    for key, value in retention.items():
        if value <= 0:
            check.add("retention", None, key, f"{value} must be positive")
        elif value < _RETENTION_MINIMUM.get(key, 0):
            check.add("retention", None, key, f"{value} is below {_RETENTION_MINIMUM[key]}: a "
                      "month's line loss needs the last freeze of the month before")
    if retention:
        values["retention"] = RetentionConfig(**retention)
    if check.problems:
        raise ConfigError("\n".join(check.problems))
    return Config(**values, source=source)


def _buses(check: _Checker, raw: Any, check_quantities: bool = True) -> list[BusConfig]:
    buses: list[BusConfig] = []
    names: set[str] = set()
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        bus = check.table(entry, _BUS_KEYS, "bus", index)
        for key in ("name", "port"):
            if key not in bus:
                check.add("bus", index, None, f"{key} is missing")
        if bus.get("name") in names:
            check.add("bus", index, "name", f"bus {bus['name']!r} is defined twice")
        names.add(bus.get("name", ""))
        if "baud" in bus and bus["baud"] not in BAUDS:
            check.add("bus", index, "baud", f"{bus['baud']} is not a standard baud rate "
                      f"({', '.join(map(str, BAUDS))})")
        if "parity" in bus and bus["parity"] not in ("N", "E", "O"):
            check.add("bus", index, "parity", f"{bus['parity']!r} is not N, E or O")
        if "protocol" in bus and bus["protocol"] not in PROTOCOLS:
            check.add("bus", index, "protocol", f"{bus['protocol']!r} is not one of "
                      f"{', '.join(PROTOCOLS)}")
        for key, low, high in (("response_timeout", 0.01, 30), ("gap", 0, 5),
                               ("poll_interval", 0.1, 86400), ("retries", 0, 10),
                               ("stopbits", 1, 2)):
            if key in bus and not low <= bus[key] <= high:
                check.add("bus", index, key, f"{bus[key]} must be between {low} and {high}")
        if "quantities" in bus and check_quantities:
            from protocols.dlt645 import catalogue

            for q in bus["quantities"]:
                try:
                    item = catalogue.lookup(str(q))
                except KeyError:
                    if bus.get("protocol") != "modbus":
                        check.add("bus", index, "quantities", f"unknown quantity {q!r}")
                    continue
                if item.kind == "block":  # a reading is one value under one name (contract)
                    check.add("bus", index, "quantities", f"{q!r} is a block of several "
                              "values: name each (e.g. voltage_a, voltage_b, voltage_c)")
        if "quantities" in bus:
            bus["quantities"] = tuple(bus["quantities"])
        if "name" in bus and "port" in bus:
            buses.append(BusConfig(**bus))
    return buses


def _meters(check: _Checker, raw: Any, buses: dict[str, BusConfig]) -> list[MeterConfig]:
    meters: list[MeterConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        meter = check.table(entry, _METER_KEYS, "meter", index)
        required = ("address", "bus") if meter.get("role") == "total" else (
            "address", "bus", "account", "tariff")
        missing = [k for k in required if k not in meter]
        for key in missing:
            check.add("meter", index, None, f"{key} is missing")
        address = meter.get("address", "")
        bus = buses.get(meter.get("bus", ""))
        if "bus" in meter and bus is None:
            check.add("meter", index, "bus", f"no bus named {meter['bus']!r}")
        if address and (bus is None or bus.protocol != "modbus") and not ADDRESS.match(address):
            check.add("meter", index, "address", f"{address!r} is not 12 digits")
        if bus is not None and bus.protocol == "modbus":
            if not 1 <= meter.get("unit", 0) <= 247:
                check.add("meter", index, "unit", "a Modbus meter needs unit = 1..247")
            if "model" not in meter:
                check.add("meter", index, "model", "a Modbus meter needs its register map")
        if address in seen:
            check.add("meter", index, "address", f"meter {address} is defined twice")
        seen.add(address)
        if "multiplier" in meter and meter["multiplier"] < 1:
            check.add("meter", index, "multiplier", "must be a whole number >= 1")
        if "initial_kwh" in meter:
            try:
                meter["initial_kwh"] = Decimal(meter["initial_kwh"])
                if meter["initial_kwh"] < 0:
                    raise ValueError
            except (ArithmeticError, ValueError):
                check.add("meter", index, "initial_kwh",
                          f"{entry['initial_kwh']!r} is not a reading in kWh")
                meter.pop("initial_kwh")
        if "register_max" in meter:
            try:
                meter["register_max"] = Decimal(meter["register_max"])
                if not meter["register_max"] > 0 or not meter["register_max"].is_finite():
                    raise ValueError
            except (ArithmeticError, ValueError):
                check.add("meter", index, "register_max",
                          f"{entry['register_max']!r} is not a register maximum in kWh "
                          "(e.g. \"999999.99\")")
                meter.pop("register_max")
        if not missing:
            meter.setdefault("account", "")
            meter.setdefault("tariff", "")
            meters.append(MeterConfig(**meter))
    return meters


def _accounts(check: _Checker, raw: Any, policy: Policy) -> tuple[AccountConfig, ...]:
    """`[accounts.NAME]` tables: policy class (must exist) and household tier bonus."""
    if not isinstance(raw, dict):
        check.add("accounts", None, None, "must be [accounts.NAME] tables")
        return ()
    out = []
    for name, entry in raw.items():
        table = f"accounts.{name}"
        values = check.table(entry, _ACCOUNT_KEYS, table)
        policy_class = values.get("policy_class")
        if policy_class is not None and policy_class not in policy.class_names:
            check.add(table, None, "policy_class", f"no [policy.classes.{policy_class}] "
                      f"(known: {', '.join(policy.class_names) or 'none'})")
        bonus = Decimal(0)
        if "tier_bonus_kwh" in values:
            try:
                bonus = Decimal(values["tier_bonus_kwh"])
                if bonus < 0 or bonus != bonus.quantize(Decimal("0.01")):
                    raise ValueError
            except (ArithmeticError, ValueError):
                check.add(table, None, "tier_bonus_kwh",
                          f"{values['tier_bonus_kwh']!r} is not kWh >= 0 (2 decimals at most)")
                bonus = Decimal(0)
        out.append(AccountConfig(str(name), policy_class, bonus))
    return tuple(out)


def _areas(check: _Checker, meters: list[MeterConfig]) -> None:
    """Field data and line-loss areas: roles, phases, coordinates, `behind` a total meter."""
    totals = {m.address for m in meters if m.role == "total"}
    for index, m in enumerate(meters):
        if m.role not in ("customer", "total"):
            check.add("meter", index, "role", f"{m.role!r} is not customer or total")
        for key, message in field_data_problems({k: getattr(m, k) for k in FIELD_DATA}):
            check.add("meter", index, key, message)
        if m.behind is not None and m.behind not in totals:
            check.add("meter", index, "behind", f"{m.behind} is not a meter with role = total")
        for key in ("ct_ratio", "pt_ratio"):
            if getattr(m, key) < 1:
                check.add("meter", index, key, "must be a whole number >= 1")


def _concentrator(check: _Checker, raw: Any) -> ConcentratorConfig:
    values = check.table(raw, _CONCENTRATOR_KEYS, "concentrator")
    for key in ("frozen_read_at", "backfill_at", "broadcast_at"):
        if key in values and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", values[key]):
            check.add("concentrator", None, key, f"{values[key]!r} is not HH:MM")
            values.pop(key)
    if "broadcast_at" in values:
        from edge_agent.grid.clocksync import away_from_hour

        hour, minute = map(int, values["broadcast_at"].split(":"))
        from datetime import time

        if not away_from_hour(time(hour, minute)):
            check.add("concentrator", None, "broadcast_at", "must be more than 5 minutes from "
                      "any hour and 30 minutes from midnight")
    if not 1 <= values.get("settlement_day", 1) <= 28:
        check.add("concentrator", None, "settlement_day", "must be 1..28")
    if not 0 <= values.get("settlement_hour", 0) <= 23:
        check.add("concentrator", None, "settlement_hour", "must be 0..23")
    if not 1 <= values.get("quarter_skew", 60) <= 450:
        check.add("concentrator", None, "quarter_skew", "must be 1..450 seconds")
    if not 1 <= values.get("backfill_days", 3) <= 7:
        check.add("concentrator", None, "backfill_days", "must be 1..7")
    if values.get("clock_trust", "auto") not in ("auto", "trust", "distrust"):
        check.add("concentrator", None, "clock_trust", "is not auto, trust or distrust")
    for key in ("loss_threshold", "fast_factor", "stopped_kwh"):
        if key in values:
            try:
                values[key] = Decimal(values[key])
            except ArithmeticError:
                check.add("concentrator", None, key, f"{values[key]!r} is not a number")
                values.pop(key)
    return ConcentratorConfig(**values)


def load_config(path: str | Path, quantities: bool = True) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (give --config or set "
                          "EDGE_AGENT_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, str(path), quantities)
