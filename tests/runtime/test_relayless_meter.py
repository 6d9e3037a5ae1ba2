"""A prepaid meter without a remote relay (DL/T 645-1997): `relay_failed` is raised once per
action, not on every poll (issue 12)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.runtime.assembly import build_agent
from edge_agent.store import Store
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config


def test_relay_failed_once_not_every_poll(tmp_path: Path) -> None:
    with SimBus(make_meters(1, version="1997"), baud=9600) as sim:
        path = agent_config(tmp_path, sim.port, ["000000000001"], protocol="dlt645-1997",
                            poll_interval=0.2, policy="alarm_grace_minutes = 0")
        agent = build_agent(load_config(path))
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            time.sleep(4)  # some twenty poll cycles with the credit exhausted
        finally:
            agent.stop()
            runner.join(20)
    store = Store(tmp_path / "agent.db")
    failed = store.events(types=["relay_failed"])
    actions = [e["detail"]["action"] for e in failed]
    assert failed, "no relay_failed at all: the test did not exercise a relay decision"
    assert len(actions) == len(set(actions)), actions  # once per action
    assert agent.cycles >= 10
