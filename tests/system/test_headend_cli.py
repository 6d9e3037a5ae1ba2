"""`edge-agent headend sign|send|watch` against a real Mosquitto and the daemon subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

from edge_agent.headend.keys import KeyRing
from edge_agent.store import Store
from firmware_sim.bus import SimBus, make_meters
from tests.conftest import Broker
from tests.helpers import agent_config, contract_problems, mqtt_extra


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_sign_send_and_watch(tmp_path: Path, broker: Broker) -> None:
    sim = SimBus(make_meters(1, load_kw=D(0)), baud=9600).start()
    config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=0.5,
                          extra=mqtt_extra(tmp_path, broker.port))
    key = str(tmp_path / "keys" / "headend-1.key")
    url = f"mqtt://127.0.0.1:{broker.port}"
    common = ["--gw", "gw1", "--key", key]
    # sign: a command the gateway's key ring verifies
    signed = cli("headend", "sign", "topup", "-a", "account=A1", "-a", "amount=5.00",
                 "-a", "txn_id=cli-0", *common)
    assert signed.returncode == 0, signed.stderr
    envelope = json.loads(signed.stdout)
    KeyRing(tmp_path / "headend-keys").verify("headend-1", envelope["cmd"], envelope["sig"])
    # arguments the gateway would refuse are refused before sending
    bad = cli("headend", "sign", "topup", "-a", "account=A1", "-j", "amount=5", "-a",
              "txn_id=x", *common)
    assert bad.returncode == 2 and bad.stderr.startswith("error:"), bad.stderr

    env = {**os.environ, "EDGE_AGENT_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = subprocess.Popen([sys.executable, "-m", "edge_agent", "headend", "watch", "--gw",
                              "gw1", "--broker", url, "--timeout", "20"],
                             stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the daemon's session subscribed to its cmd topic
            if (tmp_path / "control.sock").exists():  # started: migrations done
                probe = Store(tmp_path / "agent.db")
                state = probe.setting("broker_state") or ""
                probe.close()
                if state.startswith("connected"):
                    break
            time.sleep(0.1)
        sent = cli("headend", "send", "topup", "-a", "account=A1", "-a", "amount=5.00",
                   "-a", "txn_id=cli-1", "--id", "cli-cmd-1", *common, "--broker", url)
        assert sent.returncode == 0, sent.stderr
        result = json.loads(sent.stdout)
        assert result["status"] == "ok" and result["result"]["applied"] is True
        refused = cli("headend", "send", "relay", "-a", "meter=000000000099", "-a",
                      "action=trip", *common, "--broker", url)
        assert refused.returncode == 1 and json.loads(refused.stdout)["status"] == "rejected"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        time.sleep(1.0)
        watch.send_signal(signal.SIGINT)  # Ctrl-C: the watch ends quietly
        out, _ = watch.communicate(timeout=30)
        assert watch.returncode in (0, 130)
        sim.stop()
    lines = [json.loads(line) for line in out.splitlines()]
    topics = {m["topic"].removeprefix("edge/gw1/") for m in lines}
    assert {"status", "cmd", "cmd/result", "ledger"} <= topics, topics
    received = [(m["topic"].removeprefix("edge/gw1/"), m["body"]) for m in lines]
    assert contract_problems(received) == []  # the commands the CLI sent, too
    store = Store(tmp_path / "agent.db")
    assert store.balance("A1") == D("5.00")
    store.close()
