"""SIGKILL the daemon right after the broker took a top-up for it, many times: every top-up is
applied exactly once and every command gets a result after restart (issue 11, point 2).

The command is acknowledged to the broker only once its effect and its answer are committed
(manual ack), so a kill before that makes the broker deliver it again on reconnect, and a kill
after the commit but before the ack gets the stored answer again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

from edge_agent.store import Store
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.headend import HeadEnd
from tests.conftest import Broker
from tests.helpers import agent_config, contract_problems, mqtt_extra

ROUNDS = 60  # with paho's automatic ack this loses commands: 2 of 60 measured (seed 11)


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_AGENT_CONFIG": str(config)}
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_after_delivery_applies_every_topup_once(tmp_path: Path, broker: Broker) -> None:
    rnd = random.Random(11)
    sim = SimBus(make_meters(1, load_kw=D(0)), baud=9600).start()
    config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=5.0,
                          extra=mqtt_extra(tmp_path, broker.port))
    head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp_path / "keys" / "headend-1.key",
                   client_id="headend-crash").start()
    sent: list[str] = []
    delays: list[float] = []
    try:
        for n in range(ROUNDS):
            proc = _start(config)
            # Online (its persistent session subscribed), then handling commands.
            assert head.wait_for(lambda: head.status is not None and head.status["online"],
                                 timeout=30), "daemon did not come up"
            assert head.call("ping", {}, timeout=30) is not None, "daemon does not answer"
            head.send("topup", {"account": "A1", "amount": "1.00", "txn_id": f"pay-{n}"},
                      cmd_id=f"top-{n}")
            sent.append(f"top-{n}")
            delays.append(rnd.uniform(0.0, 0.025))
            time.sleep(delays[-1])
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert head.wait_for(lambda: head.status is not None and not head.status["online"])
        proc = _start(config)  # the last restart: everything pending gets answered
        try:
            def answered() -> bool:
                ids = {b["cmd_id"] for b in head.bodies("cmd/result")}
                return set(sent) <= ids

            assert head.wait_for(answered, timeout=60), sorted(
                set(sent) - {b["cmd_id"] for b in head.bodies("cmd/result")})
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    finally:
        head.stop()
        sim.stop()
    results = [b for b in head.bodies("cmd/result") if b["cmd_id"] in sent]
    assert all(b["status"] == "ok" for b in results), [b for b in results if b["status"] != "ok"]
    # Each answer says "applied": a second run of a command would say applied: false (its
    # txn_id known); a redelivery after the commit repeats the stored answer instead.
    assert all(b["result"]["applied"] is True for b in results), results
    assert {b["cmd_id"] for b in results} == set(sent)
    store = Store(tmp_path / "agent.db")
    try:
        topups = [e for e in store.ledger(limit=10000) if e["kind"] == "topup"]
        assert sorted(e["id"] for e in topups) == sorted(f"pay-{n}" for n in range(ROUNDS))
        assert store.balance("A1") == D(ROUNDS)
    finally:
        store.close()
    assert contract_problems(head.messages) == []
