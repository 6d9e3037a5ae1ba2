"""A relay order on a busy bus waits for one transaction, not a bus cycle (issue 10 point 1).

Eight simulated meters on one 2400-baud pty with wire timing, polled continuously by the
in-process Agent: a whole cycle takes several seconds, a relay order about half a second.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D

from edge_agent.config import load_config
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config


def test_relay_order_goes_ahead_of_the_polling_cycle(tmp_path) -> None:
    meters = [f"{n:012d}" for n in range(1, 9)]
    sim = SimBus(make_meters(8), baud=2400, wire_timing=True).start()
    try:
        path = agent_config(tmp_path, sim.port, meters, baud=2400, poll_interval=0.1)
        path.write_text(path.read_text().replace("response_timeout = 0.1",
                                                 "response_timeout = 0.3"))
        agent = Agent(load_config(path))
        agent.apply_entries([LedgerEntry(f"open-{i}", f"A{i}", "opening", D("100"),
                                         agent.clock.now()) for i in range(1, 9)])
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            time.sleep(1.0)  # polling is under way
            assert agent.workers["bus1"].pending() > 0 or agent.workers["bus1"].busy.is_set()
            waits = []
            for order in ("trip", "close", "trip", "close"):
                started = time.monotonic()
                result = agent.operator_relay("000000000005", order, "technician:test")
                waits.append(time.monotonic() - started)
                assert result["relay"] == ("open" if order == "trip" else "closed")
            cycle_started = time.monotonic()
            agent.poll_now()[0].result(60)
            cycle = time.monotonic() - cycle_started
            # A cycle of 8 meters is several seconds at 2400 baud; an order is ~0.5 s
            # (relay frame, status word, energy register) plus the poll in progress.
            assert max(waits) < 2.0, waits
            assert max(waits) < cycle / 2, (waits, cycle)
            assert agent.cycles >= 1
            kinds = [e["type"] for e in agent.store.events(limit=100)]
            assert kinds.count("relay_tripped") == 2 and kinds.count("relay_closed") == 2
        finally:
            agent.stop()
            runner.join(20)
        assert not runner.is_alive()
    finally:
        sim.stop()
