"""A meter that answers late never fails the next meter's poll in the daemon (issue 10)."""

from __future__ import annotations

from decimal import Decimal as D

from edge_agent.config import load_config
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config


def test_late_meter_does_not_cascade(tmp_path) -> None:
    meters = make_meters(3)
    # The agent waits 0.1 s + wire time (and retries once): the late reply arrives during the
    # exchanges that follow, with the next meter.
    meters[0].fault, meters[0].late_by = "late", 0.4
    sim = SimBus(meters, baud=9600).start()
    try:
        addresses = [m.address for m in meters]
        agent = Agent(load_config(agent_config(tmp_path, sim.port, addresses)))
        agent.apply_entries([LedgerEntry(f"open-{i}", f"A{i}", "opening", D("100"),
                                         agent.clock.now()) for i in range(1, 4)])
        agent.start()
        try:
            for _ in range(4):
                for future in agent.poll_now():
                    future.result(30)
            offline = [e["meter"] for e in agent.store.events(types=["meter_offline"])]
            assert offline == ["000000000001"]  # only the late meter, never the next ones
            assert sim.late_replies >= 1
            [bus] = agent.status()["buses"]
            assert bus["stray_replies"] + agent.workers["bus1"].driver.client.bus.flushed >= 1
            assert bus["failed_jobs"] == 0
        finally:
            agent.shutdown()
    finally:
        sim.stop()
