"""A meter removed while its trip was on the wire gets no relay order afterwards (a real
agent, real SQLite, a meter on a pty)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.daemon import Agent
from edge_agent.runtime.operations import Context, remove_meter
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config, energy_poll


def test_a_meter_removed_during_its_trip_is_not_closed_by_a_later_topup(
        tmp_path: Path) -> None:
    """The policy trips A1's meter; while the trip is on the wire the head end removes the
    meter (taken out, moved to another house).  The trip's outcome is recorded; a top-up of
    A1 afterwards must not send a close to the removed meter."""
    meters = make_meters(1)
    address = meters[0].address
    sim = SimBus(meters, baud=9600).start()
    agent = Agent(load_config(agent_config(
        tmp_path, sim.port, [address], poll_interval=3600, initial_kwh="100.00",
        policy="alarm_grace_minutes = 0\nstartup_keep_power_minutes = 0\n")))
    agent.start()
    try:
        processor, now = agent.processor, agent.clock.now()
        decisions = processor.process([energy_poll(address, now, "150.00")], now)
        for d in decisions:  # the pre-trip alarm, then the trip
            processor.relay_done(d, True, now)
        later = now + timedelta(minutes=1)
        (trip,) = processor.process([energy_poll(address, later, "150.00")], later)
        assert trip.action == "trip"
        plan = remove_meter(agent, {"meter": address}, Context("headend:headend-1"))
        agent.on_processor(plan.apply)  # the head end's remove_meter, on its thread
        processor.relay_done(trip, True, later, "open")  # the trip's outcome comes in
        agent.apply_entries([LedgerEntry("pay-1", "A1", "topup", D("500"), later)])
        for worker in agent.workers.values():
            worker.submit(lambda _d: None).result(10)  # whatever was queued has run
        agent.on_processor(lambda: None)  # and its outcome was recorded
        assert agent.store.events(types=["relay_closed"]) == []
    finally:
        agent.shutdown()
        sim.stop()
