"""The head-end link against a real Mosquitto broker and the head-end simulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.headend.keys import load_private
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.assembly import build_agent
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.headend import HeadEnd
from tests.conftest import Broker
from tests.helpers import agent_config, contract_problems, mqtt_extra

POLICY = """
alert_levels = ["1.00"]
alarm_grace_minutes = 0
relay_backoff_seconds = 0.05
"""
METERS = ["000000000001", "000000000002"]


@contextmanager
def running(tmp: Path, broker: Broker, sim: SimBus, **kw) -> Iterator[tuple[Agent, HeadEnd]]:
    path = agent_config(tmp, sim.port, METERS, poll_interval=0.3, policy=POLICY,
                        extra=mqtt_extra(tmp, broker.port, **kw.pop("mqtt", {})), **kw)
    agent = build_agent(load_config(path))
    head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp / "keys" / "headend-1.key").start()
    thread = threading.Thread(target=agent.run, kwargs={"install_signals": False})
    thread.start()
    try:
        yield agent, head
    finally:
        agent.stop()
        thread.join(15)
        head.stop()
        assert not thread.is_alive()
    assert contract_problems(head.messages) == []  # every message matches docs/schemas


@pytest.fixture
def sim() -> Iterator[SimBus]:
    bus = SimBus(make_meters(2, load_kw=D("36000")), baud=9600).start()
    yield bus
    bus.stop()


def test_end_to_end_readings_topup_restore_and_trip(tmp_path, broker, sim) -> None:
    with running(tmp_path, broker, sim) as (_agent, head):
        assert head.wait_for(lambda: head.status is not None and head.status["online"])
        assert head.status["gw"] == "gw1" and "version" in head.status
        assert head.wait_for(lambda: {r["meter"] for r in head.readings()} == set(METERS))
        reading = head.readings()[0]
        assert set(reading) == {"meter", "ts", "name", "value"}
        # No credit: the meters get alarmed and tripped by the gateway itself.
        meter = sim.meter("000000000001")
        assert head.wait_for(lambda: meter.relay_open, timeout=20)
        assert head.wait_for(lambda: head.events("relay_tripped"))
        result = head.call("topup", {"account": "A1", "amount": "100.00", "txn_id": "pay-1"})
        assert result and result["status"] == "ok", result
        assert result["result"]["applied"] is True
        assert head.wait_for(lambda: not meter.relay_open, timeout=20)
        assert head.wait_for(lambda: "pay-1" in head.ledger())
        # The same payment delivered again (new command id) counts once.
        again = head.call("topup", {"account": "A1", "amount": "100.00", "txn_id": "pay-1"})
        assert again["status"] == "ok" and again["result"]["applied"] is False
        # A signed trip from the head end trips a meter in credit, and it stays tripped.
        trip = head.call("relay", {"meter": "000000000001", "action": "trip"})
        assert trip["status"] == "ok" and trip["result"]["relay"] == "open"
        assert meter.relay_open
        read = head.call("read", {"meter": "000000000002", "quantities": ["energy", "voltage"]})
        assert read["status"] == "ok" and read["result"]["values"][1]["unit"] == "V"
        pong = head.call("ping", {})
        assert pong["status"] == "ok" and "pong" in pong["result"]
        assert meter.relay_open  # the policy did not close an operator's trip
        report = head.seq_report()
        assert report["duplicates"] == [] and report["received"] > 0
    assert head.status == {"v": 1, "gw": "gw1", "seq": head.status["seq"], "online": False}


def _refusals(head: HeadEnd, tmp: Path) -> list[tuple[str, bytes | str, str]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    good = {"account": "A1", "amount": "10.00", "txn_id": "never"}
    tampered = head.envelope("topup", good)
    tampered["cmd"]["args"]["amount"] = "10000.00"
    unsigned = head.envelope("topup", good)
    unsigned.pop("sig")
    unsigned.pop("kid")
    now = datetime.now(UTC)
    replay = head.envelope("ping", {}, cmd_id="c-replay")
    return [
        ("unsigned", json.dumps(unsigned), "unsigned"),
        ("wrong key", json.dumps(head.envelope("topup", good,
                                               sign_with=Ed25519PrivateKey.generate())),
         "bad signature"),
        ("unknown kid", json.dumps(head.envelope("topup", good, kid="nobody")),
         "unknown key id"),
        ("tampered", json.dumps(tampered), "bad signature"),
        ("other gateway", json.dumps(head.envelope("topup", good, gw="gw9")),
         "for another gateway"),
        ("expired", json.dumps(head.envelope("topup", good, issued=now - timedelta(hours=2),
                                             ttl=timedelta(minutes=10))), "expired"),
        ("future", json.dumps(head.envelope("topup", good, issued=now + timedelta(hours=1))),
         "not yet valid"),
        ("malformed", b"{not json", "malformed"),
        ("unknown type", json.dumps(head.envelope("make_tea", {})), "unknown command type"),
        ("unknown meter", json.dumps(head.envelope("relay", {"meter": "000000000099",
                                                            "action": "trip"})),
         "unknown meter"),
        ("bad amount", json.dumps(head.envelope("topup", {**good, "amount": 10.5})),
         "malformed"),
        ("unknown account", json.dumps(head.envelope("topup", {**good, "account": "Z"})),
         "unknown account"),
        ("replay-first", json.dumps(replay), ""),
        ("redelivered", json.dumps(replay), ""),  # the same command again: the same answer
        ("replayed", json.dumps(head.envelope("topup", good, cmd_id="c-replay")), "replayed"),
    ]


def test_refused_commands_change_nothing(tmp_path, broker, sim) -> None:
    for meter in sim.meters:  # no consumption: any change would come from a command
        meter.load_kw = D(0)
    with running(tmp_path, broker, sim) as (agent, head):
        assert head.wait_for(lambda: head.status is not None)
        store = agent.store
        before = (store.balances(), len(store.ledger(limit=10000)),
                  [m.address for m in store.meters()])
        for name, payload, reason in _refusals(head, tmp_path):
            results_before = len(head.bodies("cmd/result"))
            head.send_raw(payload)
            assert head.wait_for(lambda n=results_before: len(head.bodies("cmd/result")) > n), name
            result = head.bodies("cmd/result")[-1]
            if name in ("replay-first", "redelivered"):
                assert result["status"] == "ok", result
                continue
            assert result["status"] == "rejected", (name, result)
            assert reason in result["reason"], (name, result["reason"])
        after = (store.balances(), len(store.ledger(limit=10000)),
                 [m.address for m in store.meters()])
        assert after == before
        # Signature failures (wrong key, unknown kid, tampered) are counted in one
        # command_auth_failures event an hour, not one event each (issue 11).
        assert len(store.events(types=["command_rejected"], limit=100)) == 10
        assert len(store.events(types=["command_auth_failures"], limit=100)) == 1


def test_outage_store_and_forward(tmp_path, broker, sim) -> None:
    with running(tmp_path, broker, sim, mqtt={"status_interval": 0.5}) as (agent, head):
        assert head.wait_for(lambda: len(head.readings()) >= 4)
        for n in range(3):
            agent.apply_entries([LedgerEntry(f"pre-{n}", "A2", "topup", D("1000"),
                                             agent.clock.now())])
        broker.stop()  # the head end is unreachable for a while...
        assert agent.link.connected.wait(0) is False or True
        import time

        for n in range(5):  # ... while polling goes on and payments arrive locally
            agent.apply_entries([LedgerEntry(f"during-{n}", "A2", "topup", D("10"),
                                             agent.clock.now())])
            time.sleep(0.3)
        backlog = sum(agent.store.outbox_depth().values())
        assert backlog > 0
        broker.start()
        assert head.wait_for(lambda: agent.store.outbox_depth() == {} and head.ledger().keys()
                             >= {f"during-{n}" for n in range(5)}, timeout=40)
        time.sleep(1.0)
    report = head.seq_report()
    assert report["gaps"] == [], report
    # Balances at both ends agree: the head end's last balance_after per account.
    last: dict[str, str] = {}
    for body in head.bodies("ledger"):
        for entry in body["entries"]:
            last[entry["account"]] = entry["balance_after"]
    from edge_agent.store import Store

    store = Store(tmp_path / "agent.db")
    assert {a: str(b) for a, b in last.items()} == {
        a: __import__("edge_agent.prepaid.money", fromlist=["format_money"]).format_money(
            store.balance(a)) for a in last}
    assert set(head.ledger()) == store.ledger_ids()


def test_mutual_tls(tmp_path, sim) -> None:
    from tests.tls import make_pki

    pki = make_pki(tmp_path / "pki")
    broker = Broker(tmp_path / "tls-broker", extra=(
        f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\n")).start()
    try:
        tls = (f'ca_file = "{pki["ca"]}"\ncert_file = "{pki["client_cert"]}"\n'
               f'key_file = "{pki["client_key"]}"')
        path = agent_config(tmp_path, sim.port, METERS, poll_interval=0.3, policy=POLICY,
                            extra=mqtt_extra(tmp_path, broker.port, scheme="mqtts", tls=tls))
        agent = build_agent(load_config(path))
        head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp_path / "keys" / "headend-1.key",
                       tls={"ca": str(pki["ca"]), "cert": str(pki["client_cert"]),
                            "key": str(pki["client_key"])}).start()
        thread = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        thread.start()
        try:
            assert head.wait_for(lambda: len(head.readings()) >= 2)
            assert head.call("ping", {})["status"] == "ok"
        finally:
            agent.stop()
            thread.join(15)
            head.stop()
    finally:
        broker.stop()


def test_keys_cli(tmp_path) -> None:
    from click.testing import CliRunner

    from edge_agent.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["keys", "create", "--name", "headend-1", "--out",
                               str(tmp_path), "--json"])
    assert out.exit_code == 0, out.stderr
    assert (tmp_path / "headend-1.key").stat().st_mode & 0o777 == 0o600
    load_private(tmp_path / "headend-1.key")
    again = runner.invoke(main, ["keys", "create", "--name", "headend-1", "--out",
                                 str(tmp_path)])
    assert again.exit_code == 2 and "refusing to replace" in again.stderr


def test_headend_key_installed_while_running_works_after_reload(tmp_path, broker, sim) -> None:
    from edge_agent.headend.keys import KeyRing, create_pair

    with running(tmp_path, broker, sim) as (agent, head):
        assert head.wait_for(lambda: head.status is not None)
        create_pair(tmp_path / "keys", "headend-2")
        new_key = load_private(tmp_path / "keys" / "headend-2.key")
        refused = head.call("ping", {}, sign_with=new_key, kid="headend-2")
        assert refused["status"] == "rejected" and "unknown key id" in refused["reason"]
        KeyRing(tmp_path / "headend-keys").install("headend-2", tmp_path / "keys" /
                                                   "headend-2.pub")
        notes = agent.reload()  # what SIGHUP does
        assert any("head-end keys" in n for n in notes)
        accepted = head.call("ping", {}, sign_with=new_key, kid="headend-2")
        assert accepted["status"] == "ok", accepted
