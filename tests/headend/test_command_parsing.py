"""Every malformed or hostile command is answered `rejected`, changes nothing, does not use
up its id, and the handler answers the next command (issue 11, point 1).

A real agent (real SQLite, real simulated meters on a pty) with its real command handler; the
commands are signed with a real head-end key.  Payloads go straight to `handler.handle` (the
MQTT path is covered by tests/system/test_mqtt.py).
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_config
from edge_agent.headend.commands import COMMANDS, MAX_DEPTH, Malformed, parse_json
from edge_agent.headend.handler import CommandHandler
from edge_agent.headend.keys import KeyRing, create_pair, load_private, sign
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus
from tests.helpers import agent_config

METERS = ["000000000001", "000000000002"]
TOTAL = "000000000099"  # the area's total meter (role = "total"): not billed


class Rig:
    def __init__(self, tmp: Path, sim: SimBus) -> None:
        create_pair(tmp / "keys", "headend-1")
        KeyRing(tmp / "headend-keys").install("headend-1", tmp / "keys" / "headend-1.pub")
        extra = f'[keys]\ndirectory = "{tmp / "keys"}"\nheadend_keys = "{tmp / "headend-keys"}"\n'
        extra += f'\n[[meter]]\naddress = "{TOTAL}"\nbus = "bus1"\nrole = "total"\n'
        self.agent = Agent(load_config(agent_config(tmp, sim.port, METERS, extra=extra,
                                                    poll_interval=3600)))
        self.agent.config.meters[0]  # the file seeds both meters
        self.handler = CommandHandler(self.agent, KeyRing(tmp / "headend-keys"), queue.Queue())
        self.key = load_private(tmp / "keys" / "headend-1.key")
        self.n = 0

    def cmd(self, kind: str, args: dict[str, Any], **over: Any) -> dict[str, Any]:
        self.n += 1
        now = datetime.now(UTC).replace(microsecond=0)
        cmd = {"id": f"c-{self.n}", "type": kind, "gw": "gw1",
               "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "expires_at": (now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "args": args, **over}
        return cmd

    def signed(self, cmd: dict[str, Any]) -> bytes:
        return json.dumps({"cmd": cmd, "kid": "headend-1", "sig": sign(cmd, self.key)}).encode()

    def send(self, kind: str, args: dict[str, Any], **over: Any) -> dict[str, Any]:
        return self.handler.handle(self.signed(self.cmd(kind, args, **over)))

    def state(self) -> Any:
        store = self.agent.store
        return (store.balances(), len(store.ledger(limit=10000)),
                [(m.address, m.tariff, m.keep_power, m.active) for m in store.meters(False)],
                store.setting("policy_override"), sorted(store.tariffs()),
                store.meter_locations())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    sim = SimBus(__import__("firmware_sim.bus", fromlist=["make_meters"]).make_meters(2),
                 baud=9600).start()
    r = Rig(tmp_path, sim)
    r.agent.start()
    yield r
    r.agent.shutdown()
    sim.stop()


TOPUP = {"account": "A1", "amount": "10.00", "txn_id": "pay-1"}
# (name, command type, args) whose signed command must be refused as malformed
BAD_ARGS = [
    ("exponent amount", "topup", {**TOPUP, "amount": "1e9999"}),
    ("overflowing amount", "topup", {**TOPUP, "amount": "12345678901234567890"}),
    ("amount over the ledger's range", "topup", {**TOPUP, "amount": "9999999999999.00"}),
    ("arabic-indic digits", "topup", {**TOPUP, "amount": "١٠"}),
    ("underscore in number", "topup", {**TOPUP, "amount": "1_0.00"}),
    ("trailing newline amount", "topup", {**TOPUP, "amount": "10.00\n"}),
    ("leading plus", "topup", {**TOPUP, "amount": "+10"}),
    ("spaces around amount", "topup", {**TOPUP, "amount": " 10 "}),
    ("five decimals", "topup", {**TOPUP, "amount": "1.00001"}),
    ("float amount", "topup", {**TOPUP, "amount": 10.5}),
    ("integer amount", "topup", {**TOPUP, "amount": 10}),
    ("NaN amount", "topup", {**TOPUP, "amount": "NaN"}),
    ("Infinity amount", "topup", {**TOPUP, "amount": "Infinity"}),
    ("zero top-up", "topup", {**TOPUP, "amount": "0.00"}),
    ("negative top-up", "topup", {**TOPUP, "amount": "-5"}),
    ("txn id with trailing newline", "topup", {**TOPUP, "txn_id": "pay-1\n"}),
    ("txn id with a space", "topup", {**TOPUP, "txn_id": "pay 1"}),
    ("txn id not ASCII", "topup", {**TOPUP, "txn_id": "pay-١"}),
    ("txn id too long", "topup", {**TOPUP, "txn_id": "x" * 65}),
    ("account with a tab", "topup", {**TOPUP, "account": "A\t1"}),
    ("missing txn id", "topup", {"account": "A1", "amount": "1"}),
    ("unknown argument", "topup", {**TOPUP, "bonus": "1"}),
    ("adjust reason too long", "adjust", {**TOPUP, "amount": "-1", "reason": "r" * 501}),
    ("relay unknown action", "relay", {"meter": METERS[0], "action": "open"}),
    ("force with close", "relay", {"meter": METERS[0], "action": "close", "force": True}),
    ("force not a boolean", "relay", {"meter": METERS[0], "action": "trip", "force": 1}),
    ("meter with newline", "relay", {"meter": METERS[0] + "\n", "action": "trip"}),
    ("read no quantities", "read", {"meter": METERS[0], "quantities": []}),
    ("read too many quantities", "read", {"meter": METERS[0], "quantities": ["energy"] * 33}),
    ("read quantity not a name", "read", {"meter": METERS[0], "quantities": ["a b"]}),
    ("sync ids and since", "sync", {"ids": ["x"], "since_seq": 1}),
    ("sync negative since", "sync", {"since_seq": -1}),
    ("set_policy empty", "set_policy", {"policy": {}}),
    ("set_policy unknown key", "set_policy", {"policy": {"no_cutof": True}}),
    ("set_policy float backoff", "set_policy", {"policy": {"relay_backoff_seconds": 0.5}}),
    ("set_policy float money", "set_policy", {"policy": {"overdraft": 5.0}}),
    ("set_tariff bad id", "set_tariff", {"tariff_id": "a b", "body": "x"}),
    ("set_tariff invalid body", "set_tariff", {"tariff_id": "t2", "body": "not toml ["}),
    ("add_meter negative kwh", "add_meter", {"meter": "000000000009", "bus": "bus1",
                                             "account": "A9", "tariff": "flat",
                                             "initial_kwh": "-1"}),
    ("add_meter multiplier 0", "add_meter", {"meter": "000000000009", "bus": "bus1",
                                             "account": "A9", "tariff": "flat",
                                             "initial_kwh": "0", "multiplier": 0}),
    ("add_meter short address", "add_meter", {"meter": "9", "bus": "bus1",
                                              "account": "A9", "tariff": "flat",
                                              "initial_kwh": "0"}),
    ("ping with an argument", "ping", {"x": 1}),
]
ADD = {"meter": "000000000009", "bus": "bus1", "account": "A9", "tariff": "flat",
       "initial_kwh": "0"}
WHERE = {"lat": 30.2743, "lon": 120.1556}
# field data of add_meter: the rules of the [[meter]] keys (config.field_value_problem)
BAD_LOCATIONS = [
    ("lat out of range", {**WHERE, "lat": 95}),
    ("lat below -90", {**WHERE, "lat": -90.5}),
    ("lon out of range", {**WHERE, "lon": 180.01}),
    ("lat as a string", {**WHERE, "lat": "30.2743"}),
    ("lat a boolean", {**WHERE, "lat": True}),
    ("lat null", {**WHERE, "lat": None}),
    ("lat huge", {**WHERE, "lat": 1e308}),
    ("lat without lon", {"lat": 30.2743}),
    ("lon without lat", {"lon": 120.1556}),
    ("phase D", {**WHERE, "phase": "D"}),
    ("phase lower case", {**WHERE, "phase": "b"}),
    ("phase a number", {**WHERE, "phase": 1}),
    ("pole empty", {**WHERE, "pole": ""}),
    ("pole too long", {**WHERE, "pole": "P" * 65}),
    ("pole with newline", {**WHERE, "pole": "P-17\n"}),
    ("pole with terminal escape", {**WHERE, "pole": "\x1b[2J"}),
    ("customer class a number", {**WHERE, "customer_class": 5}),
    ("customer class too long", {**WHERE, "customer_class": "c" * 65}),
    ("unknown location key", {**WHERE, "altitude": 12}),
]
BAD_ARGS += [(f"add_meter {name}", "add_meter", {**ADD, **extra})
             for name, extra in BAD_LOCATIONS]
# `behind`: a meter id (printable ASCII, no whitespace, 1-64), never null
BAD_BEHIND = [
    ("behind a number", {"behind": 99}),
    ("behind null", {"behind": None}),
    ("behind empty", {"behind": ""}),
    ("behind with a space", {"behind": "000000 000099"}),
    ("behind with a newline", {"behind": TOTAL + "\n"}),
    ("behind too long", {"behind": "9" * 65}),
    ("behind a list", {"behind": [TOTAL]}),
]
BAD_ARGS += [(f"add_meter {name}", "add_meter", {**ADD, **extra})
             for name, extra in BAD_BEHIND]


@pytest.mark.parametrize(("name", "kind", "args"), BAD_ARGS, ids=[b[0] for b in BAD_ARGS])
def test_malformed_arguments_are_rejected_and_change_nothing(rig: Rig, name: str, kind: str,
                                                             args: dict[str, Any]) -> None:
    before = rig.state()
    cmd = rig.cmd(kind, args)
    answer = rig.handler.handle(rig.signed(cmd))
    assert answer["status"] == "rejected", (name, answer)
    assert answer["cmd_id"] == cmd["id"] and answer["type"] == kind
    assert answer["reason"].startswith("malformed"), answer["reason"]
    assert rig.state() == before
    assert not rig.agent.store.command_seen(cmd["id"])  # the id is not used up
    ok = rig.send("ping", {})  # the handler still answers the next command
    assert ok["status"] == "ok"


REFUSED_NOT_MALFORMED = [
    ("unknown account", "topup", {**TOPUP, "account": "Z"}, "unknown account"),
    ("unknown meter", "relay", {"meter": "000000000099", "action": "trip"}, "unknown meter"),
    ("keep-power meter tripped without force", "relay",
     {"meter": METERS[1], "action": "trip"}, "keep-power"),
    ("unknown tariff", "assign_tariff", {"meter": METERS[0], "tariff_id": "nope"},
     "unknown tariff"),
    ("unknown bus", "add_meter", {"meter": "000000000009", "bus": "bus9", "account": "A9",
                                  "tariff": "flat", "initial_kwh": "0"}, "unknown bus"),
    ("meter already there", "add_meter", {"meter": METERS[0], "bus": "bus1", "account": "A9",
                                          "tariff": "flat", "initial_kwh": "0"}, "already"),
    ("behind an unknown meter", "add_meter", {**ADD, "behind": "000000000077"},
     "behind '000000000077' is not a total meter"),
    ("behind a customer meter", "add_meter", {**ADD, "behind": METERS[0]},
     f"behind '{METERS[0]}' is not a total meter"),
    ("behind itself", "add_meter", {**ADD, "behind": ADD["meter"]}, "is not a total meter"),
]


@pytest.mark.parametrize(("name", "kind", "args", "reason"), REFUSED_NOT_MALFORMED,
                         ids=[r[0] for r in REFUSED_NOT_MALFORMED])
def test_refused_commands_keep_their_id(rig: Rig, name: str, kind: str, args: dict[str, Any],
                                        reason: str) -> None:
    rig.agent.store.set_keep_power(METERS[1], True)
    rig.agent.processor.reload()
    before = rig.state()
    cmd = rig.cmd(kind, args)
    answer = rig.handler.handle(rig.signed(cmd))
    assert answer["status"] == "rejected" and reason in answer["reason"], answer
    assert rig.state() == before
    assert not rig.agent.store.command_seen(cmd["id"])


def _raw_cases(rig: Rig) -> list[tuple[str, bytes, bool]]:
    """(name, payload, whether the cmd_id can be read)"""
    good = rig.cmd("topup", TOPUP)
    env = json.loads(rig.signed(good))
    text = rig.signed(good).decode()
    dup_amount = text.replace('"amount": "10.00"', '"amount": "10.00", "amount": "10000.00"')
    assert dup_amount != text
    return [
        ("not JSON", b"{not json", False),
        ("not UTF-8", b"\xff\xfe{}", False),
        ("deeply nested", b"[" * 100000 + b"]" * 100000, False),
        ("nested args", rig.signed(rig.cmd("ping", {"x": json.loads("[" * 40 + "]" * 40)})),
         False),
        ("over the size limit", json.dumps({**env, "pad": "x" * 70000}).encode(), False),
        ("10 MB", b'{"cmd": "' + b"x" * 10_000_000 + b'"}', False),
        ("duplicate amount", dup_amount.encode(), True),
        ("duplicate cmd", text.replace('{"cmd": ', '{"cmd": {"id": "x"}, "cmd": ', 1).encode(),
         True),
        ("NaN constant", text.replace('"10.00"', "NaN").encode(), True),
        ("unknown envelope key", json.dumps({**env, "extra": 1}).encode(), True),
        ("version 2", rig.signed(rig.cmd("ping", {}, v=2)), True),
        ("offset time", rig.signed(rig.cmd("ping", {},
                                           issued_at="2026-11-22T10:00:00+00:00")), True),
        ("fractional time", rig.signed(rig.cmd("ping", {},
                                               expires_at="2099-11-22T10:00:00.5Z")), True),
        ("unknown key in cmd", rig.signed(rig.cmd("ping", {}, extra=1)), True),
        ("1 MB id", rig.signed(rig.cmd("ping", {}, id="i" * 1_000_000))[:60000], False),
        ("id with newline", rig.signed(rig.cmd("ping", {}, id="c-x\n")), False),
    ]


def test_raw_malformed_payloads_are_rejected(rig: Rig) -> None:
    before = rig.state()
    for name, payload, readable in _raw_cases(rig):
        answer = rig.handler.handle(payload)
        assert answer["status"] == "rejected", (name, answer)
        assert (answer["cmd_id"] is not None) == readable, (name, answer)
        assert len(json.dumps(answer)) < 2000, name
        assert rig.send("ping", {})["status"] == "ok", name
    assert rig.state() == before
    for event in rig.agent.store.events(types=["command_rejected"], limit=100):
        assert len(json.dumps(event, default=str)) < 2000


def test_parse_json_limits() -> None:
    with pytest.raises(Malformed):
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse_json(b'{"a": "[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 20}
    with pytest.raises(Malformed):
        parse_json(b'{"a": 1, "a": 1}')
    with pytest.raises(Malformed):
        parse_json(b"x" * 11, max_payload=10)


def test_topup_once_and_redelivery_answers_again(rig: Rig) -> None:
    cmd = rig.cmd("topup", TOPUP)
    first = rig.handler.handle(rig.signed(cmd))
    assert first["status"] == "ok" and first["result"]["applied"] is True
    again = rig.handler.handle(rig.signed(cmd))  # the broker delivers it again
    assert again == first
    assert rig.agent.store.balance("A1") == D("10.00") + D(0)
    # the same id for another command is a replay
    other = rig.handler.handle(rig.signed({**cmd, "args": {**TOPUP, "amount": "99"}}))
    assert other["status"] == "rejected" and "replayed" in other["reason"]
    # a txn id with a trailing newline is refused, not a second payment
    assert rig.send("topup", {**TOPUP, "txn_id": "pay-1\n"})["status"] == "rejected"
    assert rig.agent.store.balance("A1") == D("10.00")


def test_redelivery_after_the_command_expired_answers_what_was_done(rig: Rig) -> None:
    """The gateway carried out a top-up and crashed before the broker's ack; it is back
    after the command's expiry and the broker delivers it again.  The answer is what was
    done ("ok"), not "rejected: expired" (the head end would take the payment as not made
    and issue it again)."""
    from edge_agent.clock import Clock

    cmd = rig.cmd("topup", TOPUP)
    first = rig.handler.handle(rig.signed(cmd))
    assert first["status"] == "ok"

    class Later(Clock):
        def now(self) -> datetime:
            return datetime.now(UTC) + timedelta(hours=1)

    rig.agent.clock = Later()
    assert rig.handler.handle(rig.signed(cmd)) == first
    assert rig.agent.store.events(types=["command_rejected"]) == []
    # an expired command never carried out is still refused
    late = rig.handler.handle(rig.signed(rig.cmd("topup", {**TOPUP, "txn_id": "pay-2"})))
    assert late["status"] == "rejected" and "expired" in late["reason"]
    assert rig.agent.store.balance("A1") == D("10.00")


def test_refused_set_tariff_and_policy_keep_their_id(rig: Rig) -> None:
    bad = rig.cmd("set_policy", {"policy": {"overdraft": "-5", "restore_level": "x"}})
    assert rig.handler.handle(rig.signed(bad))["status"] == "rejected"
    assert not rig.agent.store.command_seen(bad["id"])
    fixed = {**bad, "args": {"policy": {"overdraft": "5"}}}
    answer = rig.handler.handle(rig.signed(fixed))
    assert answer["status"] == "ok", answer  # the corrected resend with the same id works


def test_keep_power_meter_trips_only_with_force(rig: Rig, tmp_path: Path) -> None:
    meter = METERS[1]
    assert rig.send("relay", {"meter": meter, "action": "keep_power_on"})["status"] == "ok"
    refused = rig.send("relay", {"meter": meter, "action": "trip"})
    assert refused["status"] == "rejected" and "keep-power" in refused["reason"]
    forced = rig.send("relay", {"meter": meter, "action": "trip", "force": True})
    assert forced["status"] == "ok" and forced["result"]["forced"] is True, forced
    trips = rig.agent.store.events(types=["relay_tripped"], limit=10)
    assert any("forced" in json.dumps(e, default=str) for e in trips)


def test_bad_signatures_make_one_event_per_hour(rig: Rig) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forger = Ed25519PrivateKey.generate()
    for _ in range(50):
        cmd = rig.cmd("topup", TOPUP)
        payload = json.dumps({"cmd": cmd, "kid": "headend-1", "sig": sign(cmd, forger)})
        answer = rig.handler.handle(payload.encode())
        assert answer["status"] == "rejected" and answer["reason"] == "bad signature"
    assert rig.send("topup", TOPUP)["status"] == "ok"  # the real head end is not locked out
    events = rig.agent.store.events(types=["command_auth_failures"], limit=10)
    assert len(events) == 1
    assert rig.agent.store.events(types=["command_rejected"], limit=10) == []
    # an hour later the next failure reports the count of the hour
    rig.handler._auth_since -= timedelta(hours=1, seconds=1)
    cmd = rig.cmd("ping", {})
    rig.handler.handle(json.dumps({"cmd": cmd, "kid": "headend-1",
                                   "sig": sign(cmd, forger)}).encode())
    events = rig.agent.store.events(types=["command_auth_failures"], limit=10)
    assert len(events) == 2
    counts = sorted(json.loads(json.dumps(e, default=str))["detail"]["count"] for e in events)
    assert counts == [1, 50]


def test_command_table_covers_the_contract() -> None:
    schemas = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "args"
    for name, kind in COMMANDS.items():
        schema = json.loads((schemas / f"{name}.json").read_text())
        assert {a.name for a in kind.args.fields} == set(schema.get("properties", {})), name
        assert {a.name for a in kind.args.fields if a.required} == set(
            schema.get("required", [])), name


def test_read_answers_unknown_quantities_and_hex_status_words(rig: Rig) -> None:
    unknown = rig.send("read", {"meter": METERS[0], "quantities": ["no_such_quantity"]})
    assert unknown["status"] in ("rejected", "failed") and unknown["reason"], unknown
    assert "internal error" not in unknown["reason"]
    assert not rig.agent.store.command_seen(unknown["cmd_id"])
    read = rig.send("read", {"meter": METERS[0], "quantities": ["status_word_3", "energy"]})
    assert read["status"] == "ok", read
    status = read["result"]["values"][0]
    assert status["name"] == "status_word_3" and len(status["value"]) == 4
    int(status["value"], 16)


GOOD_LOCATIONS = [
    ("all fields", {**WHERE, "pole": "P-17", "phase": "B", "customer_class": "residential"}),
    ("bounds, whole degrees", {"lat": -90, "lon": 180, "phase": "ABC"}),
    ("pole without coordinates", {"pole": "杆-17 北", "customer_class": "commercial"}),
]


@pytest.mark.parametrize(("name", "extra"), GOOD_LOCATIONS, ids=[g[0] for g in GOOD_LOCATIONS])
def test_add_meter_keeps_its_field_data(rig: Rig, name: str, extra: dict[str, Any]) -> None:
    answer = rig.send("add_meter", {**ADD, **extra})
    assert answer["status"] == "ok", answer
    assert answer["result"] == {"meter": ADD["meter"], "location": extra}
    kept = rig.agent.store.meter_locations()[ADD["meter"]]
    assert {k: v for k, v in kept.items() if v is not None} == {**extra, "source": "headend"}
    rig.agent.register_meters()  # a SIGHUP: the file does not list it, its data stays
    assert rig.agent.store.meter_locations()[ADD["meter"]] == kept


def test_add_meter_without_field_data_stores_none(rig: Rig) -> None:
    assert rig.send("add_meter", ADD)["status"] == "ok"
    assert rig.agent.store.meter_locations() == {}


def test_field_data_of_a_head_end_meter_shows_in_meters_and_status(rig: Rig) -> None:
    from click.testing import CliRunner

    from edge_agent.cli import main

    where = {**WHERE, "pole": "P-17", "phase": "B", "customer_class": "residential"}
    assert rig.send("add_meter", {**ADD, **where, "behind": TOTAL})["status"] == "ok"
    db = str(rig.agent.store.path)

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(main, [*args, "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    (listed,) = [m for m in cli("meters") if m["meter"] == ADD["meter"]]
    assert listed["location"] == {**where, "source": "headend"}
    (shown,) = [m for m in cli("status")["meters"] if m["meter"] == ADD["meter"]]
    assert shown["location"] == listed["location"]
    (feature,) = cli("meters", "--geojson")["features"]
    assert feature["properties"]["pole"] == "P-17"
    assert feature["properties"]["behind"] == TOTAL  # its area, as line loss counts it
    assert feature["geometry"]["coordinates"] == [WHERE["lon"], WHERE["lat"]]


def test_out_of_range_lat_is_rejected_by_name_and_changes_nothing(rig: Rig) -> None:
    before = rig.state()
    answer = rig.send("add_meter", {**ADD, "lat": 95, "lon": 120.1, "pole": "P-1"})
    assert answer["status"] == "rejected"
    assert answer["reason"] == ("malformed: args.lat: 95 is not a latitude (a number from -90 "
                                "to 90)")
    assert rig.state() == before and rig.agent.store.meter(ADD["meter"]) is None


def test_add_meter_behind_a_total_meter_is_kept_with_the_meter(rig: Rig) -> None:
    """`behind` names the area's total meter: kept with the meter (the concentrator's line
    loss reads the stored meters), across a SIGHUP, and kept by an add again without it."""
    answer = rig.send("add_meter", {**ADD, "behind": TOTAL})
    assert answer["status"] == "ok", answer
    assert answer["result"] == {"meter": ADD["meter"], "behind": TOTAL}
    assert rig.agent.store.meter(ADD["meter"]).behind == TOTAL
    rig.agent.register_meters()  # a SIGHUP: the file does not list it, it stays behind
    assert rig.agent.store.meter(ADD["meter"]).behind == TOTAL
    assert rig.send("remove_meter", {"meter": ADD["meter"]})["status"] == "ok"
    again = rig.send("add_meter", {**ADD, "account": "A10"})  # a new customer, same place
    assert again["status"] == "ok" and again["result"]["behind"] == TOTAL
    assert rig.agent.store.meter(ADD["meter"]).behind == TOTAL
    plain = rig.send("add_meter", {**ADD, "meter": "000000000010"})
    assert plain["result"] == {"meter": "000000000010"}  # no area
    assert rig.agent.store.meter("000000000010").behind is None
