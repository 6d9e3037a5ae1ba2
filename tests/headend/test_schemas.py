"""The machine-readable MQTT contract (docs/schemas, docs/asyncapi.yaml) holds together.

Every schema is a valid draft 2020-12 schema, every example validates against its schema (the
signed command examples also verify with the published example key), and the mistakes the
contract exists to prevent — float money, a missing `v`, a local or fractional timestamp, an
unknown argument — are refused.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from edge_agent.headend.commands import COMMAND_TYPES
from edge_agent.headend.keys import canonical
from protocols.dlt645.catalogue import BY_NAME
from protocols.dlt645.v1997 import BY_NAME_1997

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "schemas"
EXAMPLES = SCHEMAS / "examples"
BASE = "https://edge-agent.invalid/schemas/"
MESSAGES = ("status", "status-will", "telemetry", "events", "ledger", "cmd", "cmd-result")


def _schema_files() -> list[Path]:
    return sorted(p for p in SCHEMAS.rglob("*.json") if "examples" not in p.parts)


def _registry() -> Registry:
    resources = [(BASE + p.relative_to(SCHEMAS).as_posix(),
                  Resource.from_contents(json.loads(p.read_text()))) for p in _schema_files()]
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=FormatChecker())


def errors(name: str, message: Any) -> list[str]:
    return [e.message for e in validator(name).iter_errors(message)]


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.relative_to(SCHEMAS).as_posix())
def test_schema_is_valid_2020_12_with_matching_id(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == BASE + path.relative_to(SCHEMAS).as_posix()


@pytest.mark.parametrize("name", MESSAGES)
def test_example_validates(name: str) -> None:
    assert errors(name, example(name)) == []


@pytest.mark.parametrize("kind", COMMAND_TYPES)
def test_every_command_type_has_args_schema_and_signed_example(kind: str) -> None:
    envelope = json.loads((EXAMPLES / "cmd" / f"{kind}.json").read_text())
    assert envelope["cmd"]["type"] == kind
    assert errors("cmd", envelope) == []
    key = Ed25519PublicKey.from_public_bytes(
        base64.b64decode((EXAMPLES / "headend-example.pub").read_text()))
    key.verify(base64.b64decode(envelope["sig"]), canonical(envelope["cmd"]))


def test_command_types_match_the_agent() -> None:
    cmd = json.loads((SCHEMAS / "cmd.json").read_text())
    assert cmd["properties"]["cmd"]["properties"]["type"]["enum"] == list(COMMAND_TYPES)
    assert sorted(p.stem for p in (SCHEMAS / "args").glob("*.json")) == sorted(COMMAND_TYPES)


def test_reading_names_are_the_catalogue() -> None:
    names = {n for n, item in {**BY_NAME, **BY_NAME_1997}.items() if item.kind != "block"}
    common = json.loads((SCHEMAS / "common.json").read_text())
    assert set(common["$defs"]["reading_name"]["enum"]) == names


# -- what must be refused ----------------------------------------------------------------
def _with(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with the value at a dotted path replaced (`...` deletes it)."""
    out = copy.deepcopy(message)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return out


WRONG = [
    ("ledger", "entries.0.amount", -0.5623, "money as a JSON number"),
    ("ledger", "entries.0.balance_after", "48.2377000", "more than 6 decimals"),
    ("ledger", "v", ..., "missing v"),
    ("ledger", "v", 2, "unknown version"),
    ("ledger", "seq", ..., "missing seq"),
    ("ledger", "entries.0.ts", "2026-11-22T10:00:00+00:00", "offset instead of Z"),
    ("ledger", "entries.0.ts", "2026-11-22T10:00:00.123Z", "fractional seconds"),
    ("ledger", "entries.0.ts", "2026-11-22 10:00:00Z", "no T"),
    ("ledger", "entries.0.kind", "daily", "unknown entry kind"),
    ("ledger", "entries.0.id", "has space", "whitespace in an id"),
    ("telemetry", "readings.0.name", "import_active_energy", "a Modbus register name"),
    ("telemetry", "readings.3.value", "0x10", "status word not 4 hex digits"),
    ("telemetry", "readings.0.value", 1234.56, "reading as a number"),
    ("telemetry", "readings", [], "empty batch"),
    ("telemetry", "gw", ..., "missing gw"),
    ("events", "detail.by", "someone", "unknown actor"),
    ("events", "type", "made_up", "unknown event type"),
    ("events", "severity", "fatal", "unknown severity"),
    ("events", "ts", "2026-11-22T18:00:00+08:00", "local time"),
    ("cmd-result", "status", "done", "unknown status"),
    ("cmd-result", "result.balance", 98.2377, "balance as a number"),
    ("cmd-result", "reason", "why not", "ok with a reason"),
    ("status", "online", False, "online status that says offline"),
    ("status", "started_at", "2026-11-22T06:00:00", "no zone"),
    ("status-will", "online", True, "will that says online"),
    ("cmd", "cmd.args.amount", 50.0, "top-up amount as a float"),
    ("cmd", "cmd.args.amount", "50.00001", "amount with 5 decimals"),
    ("cmd", "cmd.args.amount", "0.00", "zero top-up"),
    ("cmd", "cmd.args.amount", "-5", "negative top-up"),
    ("cmd", "cmd.args.bonus", "1", "unknown argument"),
    ("cmd", "cmd.args.txn_id", ..., "missing argument"),
    ("cmd", "cmd.extra", 1, "unknown key in cmd"),
    ("cmd", "cmd.v", 2, "unknown command version"),
    ("cmd", "cmd.expires_at", "2026-11-22T10:10:00.5Z", "fractional expiry"),
    ("cmd", "cmd.type", "reboot", "unknown command type"),
    ("cmd", "sig", "not-base64!", "signature not base64"),
    ("cmd", "kid", ..., "unsigned"),
]


@pytest.mark.parametrize(("name", "path", "value", "why"), WRONG, ids=[w[3] for w in WRONG])
def test_wrong_message_is_refused(name: str, path: str, value: Any, why: str) -> None:
    assert errors(name, _with(example(name), path, value)), why


def test_command_without_v_is_version_1() -> None:
    assert errors("cmd", _with(example("cmd"), "cmd.v", ...)) == []


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("relay", "cmd.args.action", "close"),  # force only with trip
    ("relay", "cmd.args.action", "open"),
    ("set_policy", "cmd.args.policy.no_cutof", True),
    ("set_policy", "cmd.args.policy", {}),
    ("add_meter", "cmd.args.multiplier", 0),
    ("add_meter", "cmd.args.initial_kwh", 12.34),
    ("add_meter", "cmd.args.lat", 95),  # out of range (and without lon)
    ("add_meter", "cmd.args.phase", "D"),
    ("add_meter", "cmd.args.pole", ""),
    ("read", "cmd.args.quantities", ["no_such_quantity"]),
    ("sync", "cmd.args.ids", ["x"]),  # with since_seq: one or the other
    ("ping", "cmd.args.x", 1),
])
def test_wrong_command_args_are_refused(kind: str, path: str, value: Any) -> None:
    envelope = json.loads((EXAMPLES / "cmd" / f"{kind}.json").read_text())
    assert errors("cmd", _with(envelope, path, value))


def test_add_meter_field_data_in_the_schema() -> None:
    envelope = json.loads((EXAMPLES / "cmd" / "add_meter.json").read_text())
    where = {"lat": 30.2743, "lon": 120.1556, "pole": "P-17", "phase": "B",
             "customer_class": "residential"}
    good = _with(envelope, "cmd.args", {**envelope["cmd"]["args"], **where})
    assert errors("cmd", good) == []
    for path, value in (("cmd.args.lat", 95), ("cmd.args.lon", -180.5), ("cmd.args.lat", "30"),
                        ("cmd.args.phase", "AB"), ("cmd.args.pole", "x" * 65),
                        ("cmd.args.customer_class", "a\nb"), ("cmd.args.lon", ...)):
        assert errors("cmd", _with(good, path, value)), (path, value)


def test_events_detail_is_checked_by_type() -> None:
    low = _with(_with(example("events"), "type", "low_balance"), "severity", "warning")
    assert errors("events", _with(low, "detail", {"balance": "1.0000"}))  # no level/days
    assert errors("events", _with(low, "detail", {"balance": "1.0000", "level": "5.0000"})) == []
    assert errors("events", _with(low, "detail", {"balance": 1.0, "level": "5.0000"}))


# -- the AsyncAPI document ----------------------------------------------------------------
def test_asyncapi_names_every_channel_and_existing_schema() -> None:
    text = (DOCS / "asyncapi.yaml").read_text()
    assert re.search(r"^asyncapi: ['\"]?3\.0\.0", text, re.M)
    for topic in ("status", "telemetry", "events", "ledger", "cmd", "cmd/result"):
        assert f"address: 'edge/{{gw}}/{topic}'" in text, topic
    refs = re.findall(r"\$ref: '\./(schemas/[^'#]+)'", text)
    assert {r.removeprefix("schemas/").removesuffix(".json") for r in refs} >= set(MESSAGES)
    for ref in refs:
        assert (DOCS / ref).is_file(), ref


# -- today's payloads ----------------------------------------------------------------------
def test_messages_rendered_by_the_store_validate(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from edge_agent.headend.messages import render
    from edge_agent.prepaid.records import Event, LedgerEntry
    from edge_agent.store import MeterRecord, Store

    store, now = Store(tmp_path / "agent.db"), datetime.now(UTC)
    with store.transaction():
        store.add_meter(MeterRecord("000000000001", "bus1", "A1", "t1"), Decimal("1.00"), now)
        store.append_ledger_entries([LedgerEntry("pay-1", "A1", "topup", Decimal("50"), now)])
        store.record_events([Event("meter_online", "info", now, "000000000001")])
        written = store.record_readings([("000000000001", now, "forward_active_total", "12.34"),
                                         ("000000000001", now, "status_word_3", "0010")])
        assert written is not None
        store.enqueue_range("telemetry", *written)
    problems = []
    for seq, kind, payload in store.pending(10):
        body = {"v": 1, "gw": "gw1", "seq": seq, **(render(store, kind, payload) or {})}
        problems += [f"{kind}: {e}" for e in errors(kind, body)]
    store.close()
    assert problems == []


@pytest.mark.parametrize("kind", COMMAND_TYPES)
def test_every_signed_example_is_accepted_by_the_gateway(kind: str, tmp_path: Path) -> None:
    """The examples are what a head-end developer copies: the gateway's own parser (not only
    the schema) must take each one, signature, arguments and all."""
    from edge_agent.headend.commands import verify
    from edge_agent.headend.keys import KeyRing

    shutil.copy(EXAMPLES / "headend-example.pub", tmp_path / "headend-example.pub")
    payload = (EXAMPLES / "cmd" / f"{kind}.json").read_bytes()
    issued = datetime.fromisoformat(json.loads(payload)["cmd"]["issued_at"])
    command = verify(payload, KeyRing(tmp_path), "gw-0042", issued, timedelta(seconds=30))
    assert command.type == kind
