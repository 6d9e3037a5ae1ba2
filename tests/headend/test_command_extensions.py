"""The head-end side of issue 14: policy classes, numbered top-ups and forced trips go
through the one command table (a real agent, real SQLite, meters on a pty)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.headend.handler import CommandHandler
from edge_agent.headend.keys import KeyRing, create_pair, load_private
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from tests.headend.test_command_parsing import METERS, Rig
from tests.helpers import agent_config

POLICY = '[policy.classes.hospital]\ntrips_need_force = true\n'


class ClassRig(Rig):
    """The parsing tests' rig, with a hospital policy class in the configuration."""

    def __init__(self, tmp: Path, sim: SimBus) -> None:
        create_pair(tmp / "keys", "headend-1")
        KeyRing(tmp / "headend-keys").install("headend-1", tmp / "keys" / "headend-1.pub")
        extra = f'[keys]\ndirectory = "{tmp / "keys"}"\nheadend_keys = "{tmp / "headend-keys"}"\n'
        self.agent = Agent(load_config(agent_config(tmp, sim.port, METERS, extra=extra,
                                                    poll_interval=3600, policy=POLICY)))
        self.handler = CommandHandler(self.agent, KeyRing(tmp / "headend-keys"), queue.Queue())
        self.key = load_private(tmp / "keys" / "headend-1.key")
        self.n = 0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    sim = SimBus(make_meters(2), baud=9600).start()
    r = ClassRig(tmp_path, sim)
    r.agent.start()
    yield r
    r.agent.shutdown()
    sim.stop()


def test_set_account_class_assigns_and_refuses_an_unknown_class(rig: Rig) -> None:
    ok = rig.send("set_account_class", {"account": "A1", "policy_class": "hospital"})
    assert ok["status"] == "ok", ok
    assert rig.agent.store.account_settings()["A1"][0] == "hospital"
    bad = rig.send("set_account_class", {"account": "A1", "policy_class": "hospitl"})
    assert bad["status"] in ("rejected", "failed") and "hospitl" in bad["reason"]
    assert rig.agent.store.account_settings()["A1"][0] == "hospital"
    back = rig.send("set_account_class", {"account": "A1", "policy_class": None})
    assert back["status"] == "ok" and rig.agent.store.account_settings()["A1"][0] is None


def test_numbered_topups_raise_a_gap_and_a_repeat_changes_nothing(rig: Rig) -> None:
    first = rig.send("topup", {"account": "A1", "amount": "5.00", "txn_id": "p1", "seq": 1})
    third = rig.send("topup", {"account": "A1", "amount": "5.00", "txn_id": "p3", "seq": 3})
    assert first["status"] == third["status"] == "ok"
    gaps = rig.agent.store.events(types=["topup_gap"])
    assert len(gaps) == 1 and gaps[0]["detail"]["missing"] == [2]
    again = rig.send("topup", {"account": "A1", "amount": "5.00", "txn_id": "p3", "seq": 3})
    assert again["status"] == "ok" and again["result"]["applied"] is False
    assert rig.agent.store.balance("A1") == D("10.00")
    bad = rig.send("topup", {"account": "A1", "amount": "5.00", "txn_id": "p4", "seq": 0})
    assert bad["status"] == "rejected"


def test_a_hospital_trip_needs_force(rig: Rig) -> None:
    rig.send("set_account_class", {"account": "A1", "policy_class": "hospital"})
    refused = rig.send("relay", {"meter": METERS[0], "action": "trip"})
    assert refused["status"] in ("rejected", "failed"), refused
    forced = rig.send("relay", {"meter": METERS[0], "action": "trip", "force": True})
    assert forced["status"] == "ok", forced
    assert forced["result"]["relay"] == "open"


def test_a_command_valid_for_longer_than_its_id_is_remembered_is_refused(rig: Rig) -> None:
    """Ids are forgotten after [retention] commands_seen_days; a command valid for longer
    could be replayed after that, so the lifetime is bounded (7 days)."""
    cmd = rig.cmd("ping", {})
    cmd["expires_at"] = "2099-01-01T00:00:00Z"
    answer = rig.handler.handle(rig.signed(cmd))
    assert answer["status"] == "rejected" and "longer than 7 days" in answer["reason"]
    assert rig.send("ping", {})["status"] == "ok"
