"""Replies are correlated with requests (issue 10 point 4) and the DL/T 645 client fixes.

Real pseudo-terminals and the simulator throughout: the simulator's `late` fault writes a
meter's reply after the master has given up, in the middle of the next exchange, exactly as a
real line does.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from edge_agent.errors import MeterTimeout
from edge_agent.field.dlt645 import Dlt645Client, address_matches, answers
from edge_agent.field.transport import Bus, LineSettings
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.dlt645_meter import SimMeter
from protocols.dlt645 import messages
from protocols.dlt645.frame import Control, Frame
from protocols.errors import RequestError


def open_client(sim: SimBus, timeout: float = 0.1, retries: int = 0,
                version: str = "2007") -> Dlt645Client:
    return Dlt645Client(Bus(LineSettings(sim.port, baud=9600, response_timeout=timeout,
                                         gap=0, retries=retries)), version=version)


@pytest.fixture
def late_bus() -> Iterator[SimBus]:
    """Meter 1 answers 0.35 s late (after the master's 0.2 s + wire time, about 0.25 s, has
    run out); meter 2 is healthy but takes 0.15 s, so the late reply lands in the middle of
    its exchange."""
    meters = make_meters(2)
    meters[0].fault, meters[0].late_by = "late", 0.35
    meters[1].reply_delay = 0.15
    bus = SimBus(meters, baud=9600).start()
    yield bus
    bus.stop()


def test_a_late_reply_never_fails_the_next_meters_read(late_bus: SimBus) -> None:
    client = open_client(late_bus, timeout=0.2)
    try:
        for _ in range(4):
            with pytest.raises(MeterTimeout):
                client.read("000000000001", "forward_active_total")
            reading = client.read("000000000002", "forward_active_total")
            assert reading.meter == "000000000002"
            assert reading.name == "forward_active_total"
        assert late_bus.late_replies >= 1
        # Every late reply was dropped, during an exchange or flushed before the next request.
        assert client.bus.stray + (client.bus.flushed > 0) >= 1
    finally:
        client.bus.close()


def test_a_reply_to_another_di_is_not_the_answer(late_bus: SimBus) -> None:
    """Meter 2 is asked two different DIs in a row; the late reply of meter 1 (a DI the
    second read did not ask for) is dropped, never decoded as the second read's value."""
    client = open_client(late_bus, timeout=0.2)
    try:
        with pytest.raises(MeterTimeout):
            client.read("000000000001", "voltage_a")
        assert client.read("000000000002", "forward_active_total").di == "00010000"
        assert client.read("000000000002", "voltage_a").meter == "000000000002"
    finally:
        client.bus.close()


def test_answers_checks_address_function_and_di() -> None:
    request = messages.read("000000000001", 0x00010000)
    good = Frame("000000000001", Control(0x11, reply=True), bytes.fromhex("00000100") + b"\0" * 4)
    assert answers(request, good)
    assert not answers(request, Frame("000000000002", good.control, good.data))
    assert not answers(request, Frame("000000000001", good.control,
                                      bytes.fromhex("00000200") + b"\0" * 2))
    assert not answers(request, request)  # the adapter's echo
    refused = Frame("000000000001", Control(0x11, reply=True, abnormal=True), b"\x02")
    assert answers(request, refused)  # an abnormal reply carries no DI, it is the answer
    assert address_matches("AAAAAAAAAA07", "000000000007")
    assert not address_matches("AAAAAAAAAA07", "000000000008")
    assert not address_matches("AAAAAAAAAAAA", "AAAAAAAAAAAA")
    assert not address_matches("AAAAAAAAAAAA", "999999999999")


class WildcardEcho(SimMeter):
    """A meter that answers with the address it was asked with instead of its own."""

    def handle(self, request: Frame) -> Frame | None:
        reply = super().handle(request)
        if reply is None:
            return None
        return Frame(request.address, reply.control, reply.data)


def test_scan_never_reports_a_wildcard_echo() -> None:
    sim = SimBus([WildcardEcho(address="000000000001")], baud=9600).start()
    client = open_client(sim, timeout=0.05)
    try:
        assert client.scan(timeout=0.05) == []
        assert client.bus.stray >= 1
    finally:
        client.bus.close()
        sim.stop()


def test_read_address_uses_the_reply_address() -> None:
    sim = SimBus(make_meters(1), baud=9600).start()
    client = open_client(sim)
    try:
        assert client.read_address() == "000000000001"
    finally:
        client.bus.close()
        sim.stop()
    echo = SimBus([WildcardEcho(address="000000000001")], baud=9600).start()
    client = open_client(echo)
    try:
        with pytest.raises(MeterTimeout):  # the echo is dropped: no meter said who it is
            client.read_address()
    finally:
        client.bus.close()
        echo.stop()


def test_1997_scan_reads_c032() -> None:
    """DL/T 645-1997 table: C032 is the meter address, C033 the user number; a 1997 meter
    without C033 must still be found."""
    sim = SimBus(make_meters(2, version="1997"), baud=9600).start()
    client = open_client(sim, timeout=0.05, version="1997")
    try:
        assert client.scan(timeout=0.05) == ["000000000001", "000000000002"]
    finally:
        client.bus.close()
        sim.stop()


def test_relay_validity_counts_from_the_injected_clock(client: Dlt645Client) -> None:
    with pytest.raises(RequestError):
        client.relay("000000000001", "trip", valid_for=timedelta(0))
    with pytest.raises(RequestError):
        client.relay("000000000001", "trip", valid_for=timedelta(minutes=-1))
    word = client.relay("000000000001", "trip", valid_for=timedelta(minutes=5),
                        now=datetime.now)
    assert word & 0x0010


def test_read_accepts_a_raw_di_outside_the_catalogue(client: Dlt645Client) -> None:
    """The contract says `read` reads DIs: one the catalogue does not name is read and its
    value shown as raw hex (here the simulator answers with an abnormal reply, or a value)."""
    from edge_agent.errors import MeterAbnormalReply

    try:
        reading = client.read("000000000001", "0400FFFE")
    except MeterAbnormalReply:
        return  # the meter refused: the request was sent, which is what the contract asks
    assert reading.di == "0400FFFE"


def test_drivers_take_meter_time_from_the_injected_clock(tmp_path) -> None:
    """A relay command's validity is written in the meter's local time, from the agent's
    `Clock` (tests and replays drive it), never from `datetime.now`."""
    from datetime import UTC

    from edge_agent.clock import Clock
    from edge_agent.config import load_config
    from edge_agent.field.dlt645 import meter_time
    from edge_agent.field.drivers import make_driver
    from tests.helpers import agent_config

    class Fixed(Clock):
        def now(self) -> datetime:
            return datetime(2026, 11, 22, 2, 0, tzinfo=UTC)

    config = load_config(agent_config(tmp_path, "/dev/null", ["000000000001"]))
    assert meter_time(Fixed(), config.tz)() == datetime(2026, 11, 22, 10, 0)  # +08:00
    driver = make_driver(config.buses[0], config, clock=Fixed())
    assert driver._now() == datetime(2026, 11, 22, 10, 0)
