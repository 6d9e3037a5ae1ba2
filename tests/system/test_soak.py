"""Soak: the daemon on simulators for about a minute with faults injected on a schedule, then
the invariants (issue 12: "every fault visible", "no wrongful trip", "balance = ledger sum").

The faults, in order: a meter that answers late; a meter that never answers; the serial port
vanishing and coming back (a symlink to the simulator's pty, as udev gives /dev/ttyRS485);
a reload with an invalid file, then the good one; a broker outage.  The head end tops up
accounts by signed commands throughout and watches every message.
"""

from __future__ import annotations

import os
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

RICH, LATE, SILENT, POOR = (f"{n:012d}" for n in range(1, 5))


def relink(link: Path, target: str) -> None:
    tmp = link.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def test_soak_with_faults_keeps_every_invariant(tmp_path: Path, broker: Broker) -> None:
    meters = make_meters(4, load_kw=D("3600"))  # 1 kWh a second: money moves visibly
    meters[2].fault = "silent"
    sim = SimBus(meters, baud=9600).start()
    port = tmp_path / "ttyRS485"
    relink(port, sim.port)
    config = agent_config(tmp_path, str(port), [RICH, LATE, SILENT, POOR], poll_interval=0.5,
                          policy="alarm_grace_minutes = 0\nrestore_holdoff_minutes = 0",
                          extra=mqtt_extra(tmp_path, broker.port))
    good = config.read_text()
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"],
                                  env={**os.environ, "EDGE_AGENT_CONFIG": str(config)},
                                  stdout=out, stderr=subprocess.STDOUT)
    head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp_path / "keys" / "headend-1.key").start()
    answers: list[dict | None] = []
    try:
        assert head.wait_for(lambda: bool(head.status and head.status["online"]), 30)
        answers.append(head.call("topup", {"account": "A1", "amount": "100000.00",
                                           "txn_id": "rich-1"}))
        answers.append(head.call("topup", {"account": "A4", "amount": "2.00",
                                           "txn_id": "poor-1"}))
        meters[1].fault, meters[1].late_by = "late", 0.6  # longer than the agent waits
        time.sleep(5)

        sim.stop()  # the port vanishes ...
        port.unlink()
        time.sleep(4)
        meters[1].fault = "none"
        sim = SimBus(meters, baud=9600).start()  # ... and comes back (another pty behind it)
        relink(port, sim.port)
        time.sleep(5)

        config.write_text(good + "\n[[bus]]\nname = \n")  # an invalid file on SIGHUP
        daemon.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert daemon.poll() is None, "a bad reload took the daemon down"
        config.write_text(good)
        daemon.send_signal(signal.SIGHUP)
        time.sleep(2)

        broker.stop()  # the head end is unreachable for a while
        time.sleep(6)
        broker.start()
        deadline = time.monotonic() + 30
        while not head.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.1)
        answers.append(head.call("topup", {"account": "A1", "amount": "1.00",
                                           "txn_id": "rich-2"}, timeout=60))
        time.sleep(5)
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        head.wait_for(lambda: False, 2.0)  # the last messages drain to the head end
    finally:
        if daemon.poll() is None:
            daemon.kill()
        head.stop()
        sim.stop()

    journal = log.read_text(errors="replace")
    store = Store(tmp_path / "agent.db")
    events = store.events(limit=100_000)
    # Every command was answered, and the money is exact.
    assert all(a is not None and a["status"] == "ok" for a in answers), answers
    for account in ("A1", "A2", "A3", "A4"):
        assert store.balance(account) == store.ledger_sum(account), account
    # No wrongful trip: neither the customer in credit nor the meter that never answered.
    tripped = {e["meter"] for e in events if e["type"] == "relay_tripped"}
    assert RICH not in tripped and SILENT not in tripped, tripped
    assert POOR in tripped, "the customer out of credit was never cut off"
    # Every fault is visible, in the journal (with its priority prefix) and in the events.
    assert any(e["type"] == "meter_offline" and e["meter"] == SILENT for e in events)
    assert "<3>" in journal or "<4>" in journal
    assert "reload refused" in journal, journal[-3000:]
    assert "ttyRS485" in journal, "the vanished port is not named in the journal"
    assert "broker" in journal.lower()
    # The head end heard everything, in order, without a gap, every message to the contract.
    report = head.seq_report()
    assert report["gaps"] == [], report
    assert contract_problems(head.messages) == []
    # Nothing grew without bound in a minute of polling four meters.
    assert (tmp_path / "agent.db").stat().st_size < 8 * 1024 * 1024
    store.close()
