"""Simulated meters' clock, frozen data, total meter and line faults, over a real pty."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest

from edge_agent.errors import MeterAbnormalReply, MeterTimeout
from edge_agent.field.dlt645 import Dlt645Client
from edge_agent.field.transport import Bus, LineSettings
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.clock import SimClock
from firmware_sim.total_meter import make_total_meter
from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import find_frame

START = datetime(2026, 3, 30, 12, 0)  # a Monday noon; settlement day is the 1st
A1, A2 = "000000000001", "000000000002"


def serve(meters: list, **kw: object) -> tuple[SimBus, Dlt645Client]:
    sim = SimBus(meters, baud=9600, **kw).start()
    bus = Bus(LineSettings(sim.port, baud=9600, response_timeout=0.15, gap=0))
    return sim, Dlt645Client(bus)


@pytest.fixture
def pair() -> Iterator[tuple[SimBus, Dlt645Client]]:
    sim, client = serve(make_meters(2, clock=SimClock(START, speed=0), load_kw=D("1")))
    yield sim, client
    client.bus.close()
    sim.stop()


def value(client: Dlt645Client, address: str, key: str | int) -> object:
    return client.read(address, key).value


def test_daily_freezes_hold_registers_at_each_midnight(pair) -> None:
    sim, client = pair
    sim.advance(timedelta(days=3))  # 12:00 + 72 h: midnights of 31 Mar, 1 and 2 Apr
    assert value(client, A1, 0x05060001) == datetime(2026, 4, 2, 0, 0)
    assert value(client, A1, 0x05060003) == datetime(2026, 3, 31, 0, 0)
    # 1 kW: 12 h to the first midnight, then 24 h more to each next one
    assert value(client, A1, 0x05060103)[0] == D("12.00")
    assert value(client, A1, 0x05060101)[0] == D("60.00")
    block = value(client, A1, 0x05060101)
    assert sum(block[1:]) == block[0]  # the rates add up to the total
    assert value(client, A1, "energy") == D("72.00")
    assert value(client, A1, 0x05060201) == [D(0)] * 5
    with pytest.raises(MeterAbnormalReply):  # no 4th freeze yet: no requested data
        client.read(A1, 0x05060004)


def test_settlement_day_freeze(pair) -> None:
    sim, client = pair
    sim.advance_to(datetime(2026, 5, 15))
    first, second = value(client, A1, 0x0001FF01), value(client, A1, 0x0001FF02)
    assert first[0] == D("36.00") + 30 * 24  # 1 May 00:00
    assert second[0] == D("36.00")  # 1 Apr 00:00
    with pytest.raises(MeterAbnormalReply):
        client.read(A1, 0x0001FF03)


def test_freezes_consistent_when_stepping_in_many_small_steps(pair) -> None:
    sim, client = pair
    for _ in range(40):
        sim.advance(timedelta(minutes=47))
        client.read(A2, "energy")
    sim.advance(timedelta(minutes=30))
    assert value(client, A2, 0x05060101)[0] == D("12.00")


def test_clock_drift_write_and_refusal(pair) -> None:
    sim, client = pair
    meter = sim.meter(A1)
    meter.set_time(START)
    meter.drift_ppm = 100.0  # gains 8.64 s a day
    sim.advance(timedelta(days=10))
    shown = datetime.combine(value(client, A1, "date"), value(client, A1, "time"))
    assert shown - (START + timedelta(days=10)) == timedelta(seconds=86)  # 86.4 s, truncated
    target = datetime(2026, 4, 9, 8, 30, 5)
    item = catalogue.lookup("time")
    client.transact(messages.write(A1, item.di, catalogue.encode_value(item, target.time())))
    assert value(client, A1, "time").replace(second=0) == target.time().replace(second=0)
    meter.accept_time_set = False
    with pytest.raises(MeterAbnormalReply):
        client.transact(messages.write(A1, item.di, catalogue.encode_value(item, target.time())))
    with pytest.raises(MeterAbnormalReply):  # a wrong password is refused too
        client.transact(messages.write(A2, item.di, b"\x00\x00\x00", password="02111111"))


def test_broadcast_time_sets_every_clock(pair) -> None:
    sim, client = pair
    for meter in sim.meters:
        meter.clock_offset = timedelta(minutes=-3)
    sim.meter(A2).broadcast_max_shift = timedelta(minutes=1)
    moment = START + timedelta(hours=1)
    client.bus.transact(messages.broadcast_time(moment).encode(), find_frame,
                        expect_reply=False)
    assert value(client, A1, "time").replace(second=0) == moment.time()
    assert value(client, A2, "time").minute == 57  # beyond its limit: ignored


def test_total_meter_sees_loss_theft_and_multiplier() -> None:
    clock = SimClock(START, speed=0)
    customers = make_meters(3, clock=clock, load_kw=D("2"))
    total = make_total_meter("000000000099", customers, loss_rate=D("0.05"),
                             theft_kw=D("1"), ct_ratio=5, pt_ratio=2)
    sim, client = serve([*customers, total])
    try:
        client.read(A1, "energy")
        sim.advance(timedelta(hours=30))  # crosses one midnight
        used = sum((value(client, c.address, "energy") for c in customers), D(0))
        assert used == 3 * D("60.00")
        # (180 kWh x 1.05 + 30 kWh of theft) / 10 = 21.90
        assert value(client, total.address, "energy") == D("21.90")
        frozen = value(client, total.address, 0x05060101)[0]
        assert frozen == ((3 * 24 * D("1.05") + 12) / 10).quantize(D("0.01"))
        assert value(client, total.address, "power") == D("0.7300")
    finally:
        client.bus.close()
        sim.stop()


def test_total_meter_freeze_right_when_customers_are_read_first() -> None:
    clock = SimClock(START, speed=0)
    customers = make_meters(2, clock=clock, load_kw=D("1"))
    total = make_total_meter("000000000099", customers)
    clock.advance(timedelta(days=2, hours=1))
    for c in customers:
        c.advance()  # customers catch up before the total meter is asked
    total.advance()
    assert total.daily[0].forward[0] == D("72.00")  # 2 x 36 kWh at the 2nd midnight
    assert total.daily[1].forward[0] == D("24.00")


def test_frame_loss_is_seeded_and_counted() -> None:
    def run() -> tuple[list[bool], int, int]:
        sim, client = serve(make_meters(1), request_loss=0.2, reply_loss=0.2, seed=7)
        client.bus.settings = LineSettings(sim.port, baud=9600, response_timeout=0.05,
                                           retries=0, gap=0)
        outcomes = []
        for _ in range(30):
            try:
                client.read(A1, "energy")
                outcomes.append(True)
            except MeterTimeout:
                outcomes.append(False)
        client.bus.close()
        sim.stop()
        return outcomes, sim.requests_lost, sim.replies_lost

    first, second = run(), run()
    assert first == second
    assert 0 < first[0].count(False) == first[1] + first[2]


def test_late_reply_arrives_while_the_master_asks_the_next_meter() -> None:
    """The stale frame a late meter sends lands inside the next meter's transaction."""
    import serial

    meters = make_meters(2)
    meters[0].fault, meters[0].late_by = "late", 0.3
    meters[1].reply_delay = 0.35
    sim = SimBus(meters, baud=9600).start()
    try:
        with serial.Serial(sim.port, 9600, timeout=0.05) as port:
            item = catalogue.lookup("energy")
            port.write(messages.read(A1, item).encode())
            assert port.read(64) == b""  # A1 keeps quiet past the master's timeout ...
            port.write(messages.read(A2, item).encode())  # ... so the master moves on
            port.timeout = 0.6
            data = bytearray(port.read(200))
        frames = []
        while (found := find_frame(data))[0] is not None:
            frames.append(found[0].address)
            del data[:found[1]]
        assert frames == [A1, A2]  # A1's stale reply first, then A2's own answer
        assert sim.late_replies == 2
    finally:
        sim.stop()


def test_1997_meter_has_no_frozen_data() -> None:
    meters = make_meters(1, clock=SimClock(START, speed=0), version="1997")
    meters[0].advance(timedelta(days=2))
    assert not meters[0].daily and not meters[0].monthly


def test_modbus_late_reply_does_not_hold_up_the_line() -> None:
    """A late Modbus meter answers from a timer; the next unit still answers in time."""
    import time

    from edge_agent.field.modbus import ModbusMeterClient
    from firmware_sim.modbus_meter import ModbusSimBus, make_modbus_meters
    from protocols.modbus import load_map

    meters = make_modbus_meters(2, "chint-ddsu666")
    meters[0].fault, meters[0].late_by = "late", 0.5
    sim = ModbusSimBus(meters, baud=9600).start()
    client = ModbusMeterClient(LineSettings(sim.port, baud=9600, parity="N",
                                            response_timeout=0.2, retries=0))
    try:
        ddsu = load_map("chint-ddsu666")
        with pytest.raises(MeterTimeout):
            client.read(1, ddsu, "voltage")
        begun = time.monotonic()
        client.read(2, ddsu, "voltage")
        assert time.monotonic() - begun < 0.3  # not held up behind unit 1's late answer
    finally:
        client.close()
        sim.stop()
