"""A relay order the bus could not carry out in time is not carried out later unrecorded
(a real agent, real SQLite, meters on a pty)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.field.worker import POLL
from edge_agent.runtime import daemon
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config


def test_a_relay_order_that_timed_out_is_not_carried_out_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head end's trip waited longer than OPERATION_WAIT for a busy bus and was answered
    `failed`; the head end may send it again, or decide otherwise.  The order left behind in
    the bus queue must not trip the meter later with nothing recorded."""
    meters = make_meters(1)
    sim = SimBus(meters, baud=9600).start()
    agent = Agent(load_config(agent_config(tmp_path, sim.port, [meters[0].address],
                                           poll_interval=3600)))
    agent.start()
    busy, release = threading.Event(), threading.Event()
    try:
        monkeypatch.setattr(daemon, "OPERATION_WAIT", 0.3)

        def long_job(_driver: object) -> None:  # a job that holds the bus
            busy.set()
            release.wait(10)

        held = agent.workers["bus1"].submit(long_job, POLL)
        assert busy.wait(5)
        with pytest.raises(TimeoutError):
            agent.operator_relay(meters[0].address, "trip", "headend:headend-1")
        release.set()
        held.result(10)
        agent.workers["bus1"].submit(lambda _d: None, POLL).result(10)  # the queue drained
        tripped = [e for e in agent.store.events(limit=100) if e["type"] == "relay_tripped"]
        assert not meters[0].relay_open or tripped, "tripped later, nothing recorded"
        assert not meters[0].relay_open
        (failed,) = agent.store.events(types=["relay_failed"])  # visible, with who asked
        assert "bus busy" in failed["detail"]["error"]
        assert failed["detail"]["by"] == "headend:headend-1"
    finally:
        release.set()
        agent.shutdown()
        sim.stop()


def test_a_technicians_relay_on_an_unbilled_meter_that_timed_out_is_not_done_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the daemon, a technician trips a meter the agent does not bill (a total
    meter); the bus stays busy past the wait, the CLI reports an error.  The order must not
    be carried out later with no `technician_relay` event saying who did it."""
    from edge_agent.runtime import operations

    meters = make_meters(1)
    sim = SimBus(meters, baud=9600).start()
    agent = Agent(load_config(agent_config(tmp_path, sim.port, [], poll_interval=3600)))
    agent.start()
    busy, release = threading.Event(), threading.Event()
    try:
        monkeypatch.setattr(operations, "TECHNICIAN_WAIT", 0.3)
        worker = agent.workers["bus1"]

        def long_job(_driver: object) -> None:
            busy.set()
            release.wait(10)

        held = worker.submit(long_job, POLL)
        assert busy.wait(5)
        with pytest.raises(TimeoutError):
            operations.technician_relay(agent, worker, meters[0].address, "trip",
                                        "technician:t")
        release.set()
        held.result(10)
        worker.submit(lambda _d: None, POLL).result(10)
        agent.on_processor(lambda: None)
        assert not meters[0].relay_open, "tripped later, nothing recorded"
    finally:
        release.set()
        agent.shutdown()
        sim.stop()
