"""Small builders shared by tests (not fixtures: plain functions)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.records import Poll, RegisterReading
from edge_agent.prepaid.tariff import Tariff, load_tariff
from edge_agent.store import MeterRecord, Store

TZ = ZoneInfo("Asia/Shanghai")
TARIFFS = Path(__file__).resolve().parents[1] / "config" / "tariffs"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


def tariffs() -> dict[str, Tariff]:
    return {p.stem: load_tariff(p) for p in TARIFFS.glob("*.toml")}


def processor(path: Path, policy: Policy | None = None, meters: int = 1,
              tariff: str = "flat", initial: str = "100.00", start: str = "2026-11-22 08:00",
              keep_power: bool = False, allowance: bool = False) -> Processor:
    store = Store(path)
    for n in range(1, meters + 1):
        store.add_meter(MeterRecord(f"{n:012d}", "bus1", f"A{n}", tariff,
                                    keep_power=keep_power, allowance=allowance),
                        Decimal(initial), at(start))
    return Processor(store, tariffs(), policy or Policy(), TZ, "gw1")


def energy_poll(meter: str, ts: datetime, kwh: str) -> Poll:
    return Poll(meter, ts, True, RegisterReading(meter, ts, Decimal(kwh)),
                [("forward_active_total", kwh)])


REPO = Path(__file__).resolve().parents[1]


def agent_config(tmp: Path, port: str, meters: list[str], *, tariff: str = "flat",
                 baud: int = 9600, poll_interval: float = 1.0, policy: str = "",
                 initial_kwh: str = "0.00", extra: str = "", protocol: str = "dlt645-2007",
                 gateway: str = "gw1") -> Path:
    """Write an agent.toml for tests: one bus on `port`, accounts A<n> for the meters."""
    meter_tables = "\n".join(
        f'[[meter]]\naddress = "{m}"\nbus = "bus1"\naccount = "A{i}"\ntariff = "{tariff}"\n'
        f'initial_kwh = "{initial_kwh}"\n' for i, m in enumerate(meters, start=1))
    text = f"""
[agent]
gateway_id = "{gateway}"
database = "{tmp / 'agent.db'}"
tariff_dir = "{REPO / 'config' / 'tariffs'}"
control_socket = "{tmp / 'control.sock'}"
timezone = "Asia/Shanghai"

[[bus]]
name = "bus1"
port = "{port}"
protocol = "{protocol}"
baud = {baud}
response_timeout = 0.1
gap = 0.0
retries = 1
poll_interval = {poll_interval}
quantities = ["voltage_a", "cover_open_count"]

{meter_tables}

[policy]
{policy}

{extra}
"""
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


def mqtt_extra(tmp: Path, port: int, *, scheme: str = "mqtt", tls: str = "",
               status_interval: float = 1.0, retention: str = "") -> str:
    """[mqtt] and [keys] tables for a test agent, and a head-end key pair in tmp/keys."""
    from edge_agent.headend.keys import KeyRing, create_pair

    keys = tmp / "keys"
    if not (keys / "headend-1.key").exists():
        create_pair(keys, "headend-1")
        KeyRing(tmp / "headend-keys").install("headend-1", keys / "headend-1.pub")
    return f"""
[mqtt]
enabled = true
urls = ["{scheme}://127.0.0.1:{port}"]
reconnect_min = 0.2
reconnect_max = 1.0
status_interval = {status_interval}
{tls}

[keys]
directory = "{keys}"
headend_keys = "{tmp / 'headend-keys'}"
clock_skew = 60

{retention}
"""


# -- the MQTT contract ---------------------------------------------------------------------
SCHEMAS = REPO / "docs" / "schemas"
SCHEMA_BY_TOPIC = {"telemetry": "telemetry", "events": "events", "ledger": "ledger",
                   "cmd/result": "cmd-result", "cmd": "cmd", "lineloss": "lineloss",
                   "usage": "usage"}


def _validators() -> dict[str, object]:
    import json

    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    base = "https://edge-agent.invalid/schemas/"
    files = [p for p in SCHEMAS.rglob("*.json") if "examples" not in p.parts]
    registry = Registry().with_resources(
        (base + p.relative_to(SCHEMAS).as_posix(),
         Resource.from_contents(json.loads(p.read_text()))) for p in files)
    return {p.relative_to(SCHEMAS).with_suffix("").as_posix():
            Draft202012Validator(json.loads(p.read_text()), registry=registry,
                                 format_checker=FormatChecker()) for p in files}


_VALIDATORS: dict[str, object] = {}


def contract_problems(messages: list[tuple[str, dict[str, object]]]) -> list[str]:
    """Schema errors of (topic, body) messages as a head end received them (docs/schemas)."""
    if not _VALIDATORS:
        _VALIDATORS.update(_validators())
    problems = []
    for topic, body in messages:
        name = ("status" if body.get("online") else "status-will") if topic == "status" \
            else SCHEMA_BY_TOPIC.get(topic)
        if name is None:
            problems.append(f"{topic}: no schema")
            continue
        validator = _VALIDATORS[name]
        problems += [f"{topic} seq {body.get('seq')}: {e.message}"
                     for e in validator.iter_errors(body)]  # type: ignore[attr-defined]
    return problems


def wait_for(predicate: Callable[[], object], timeout: float = 20.0,
             step: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def numbered_topup(proc: Processor, seq: int, txn: str, amount: str = "10",
                   when: str = "2026-11-22 09:00") -> list:
    """A head-end top-up of account A1 with its sequence number; the rows it added."""
    from edge_agent.prepaid.records import LedgerEntry

    added, _ = proc.apply_topup(LedgerEntry(txn, "A1", "topup", Decimal(amount), at(when)),
                                seq, at(when))
    return added
