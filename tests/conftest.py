"""Shared fixtures: simulated meter buses on real pseudo-terminals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent.bus import Bus, LineSettings
from edge_agent.dlt645_client import Dlt645Client
from firmware_sim.bus import SimBus, make_meters


@pytest.fixture
def sim_bus() -> Iterator[SimBus]:
    """Eight simulated DL/T 645 meters (000000000001..8) on one pty, 9600 baud."""
    bus = SimBus(make_meters(8), baud=9600).start()
    yield bus
    bus.stop()


@pytest.fixture
def client(sim_bus: SimBus) -> Iterator[Dlt645Client]:
    bus = Bus(LineSettings(sim_bus.port, baud=9600, response_timeout=0.1, gap=0))
    yield Dlt645Client(bus)
    bus.close()
