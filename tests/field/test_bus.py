"""The serial transport: noise, retries, timing, a port that goes away and comes back, TCP."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from edge_agent.errors import BusError, FrameError, MeterTimeout
from edge_agent.field.dlt645 import Dlt645Client
from edge_agent.field.transport import Bus, LineSettings
from firmware_sim.bus import SimBus, make_meters


def test_garbage_before_reply_is_skipped(sim_bus: SimBus, client: Dlt645Client) -> None:
    sim_bus.meter("000000000001").fault = "garbage"
    assert client.read("000000000001", "energy").value == Decimal("0.00")


def test_corrupt_checksum_retries_then_names_fault(sim_bus: SimBus,
                                                   client: Dlt645Client) -> None:
    sim_bus.meter("000000000002").fault = "corrupt_checksum"
    seen = sim_bus.requests_seen
    with pytest.raises(FrameError, match="garbled"):
        client.read("000000000002", "energy")
    assert sim_bus.requests_seen - seen == 3  # first try + 2 retries


def test_late_reply_times_out_then_succeeds_with_patience(sim_bus: SimBus) -> None:
    meter = sim_bus.meter("000000000003")
    meter.fault, meter.late_by = "late", 0.3
    impatient = Dlt645Client(Bus(LineSettings(sim_bus.port, 9600, response_timeout=0.05,
                                              retries=0)))
    with pytest.raises(MeterTimeout):
        impatient.read("000000000003", "energy")
    impatient.bus.close()
    patient = Dlt645Client(Bus(LineSettings(sim_bus.port, 9600, response_timeout=1.0)))
    assert patient.read("000000000003", "energy").name == "forward_active_total"
    patient.bus.close()


def test_timeout_derived_from_baud() -> None:
    slow, fast = LineSettings("x", baud=1200), LineSettings("x", baud=9600)
    assert slow.wire_time(20) == pytest.approx(20 * 11 / 1200)
    assert slow.wire_time(20) == 8 * fast.wire_time(20)
    assert LineSettings("x", parity="N").char_time() == 10 / 2400


def test_port_unplugged_and_back(tmp_path) -> None:
    link = tmp_path / "ttyUSB0"
    first = SimBus(make_meters(1), baud=9600).start()
    os.symlink(first.port, link)
    bus = Bus(LineSettings(str(link), 9600, response_timeout=0.1, retries=0))
    client = Dlt645Client(bus)
    assert client.read("000000000001", "energy").unit == "kWh"
    first.stop()
    link.unlink()  # the USB adapter is pulled out
    with pytest.raises(BusError):
        for _ in range(3):
            client.read("000000000001", "energy")
    with pytest.raises(BusError, match="cannot open port"):
        client.read("000000000001", "energy")
    second = SimBus(make_meters(1), baud=9600).start()
    os.symlink(second.port, link)  # ... and plugged in again
    assert client.read("000000000001", "energy").unit == "kWh"
    bus.close()
    second.stop()


def test_tcp_serial_server() -> None:
    with SimBus(make_meters(2), baud=9600, tcp_port=0) as sim:
        assert sim.port.startswith("socket://127.0.0.1:")
        with Bus(LineSettings(sim.port, 9600, response_timeout=0.2)) as bus:
            assert Dlt645Client(bus).read("000000000002", "energy").unit == "kWh"


def test_only_one_transaction_at_a_time(sim_bus: SimBus, client: Dlt645Client) -> None:
    import threading

    results: list[str] = []

    def worker(address: str) -> None:
        for _ in range(5):
            results.append(client.read(address, "energy").meter)

    threads = [threading.Thread(target=worker, args=(f"{n:012d}",)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"{n:012d}" for n in range(1, 5) for _ in range(5))


def test_energy_grows_only_while_relay_closed(sim_bus: SimBus, client: Dlt645Client) -> None:
    meter = sim_bus.meter("000000000007")
    meter.load_kw, meter.time_scale = Decimal("3600"), 10.0  # 10 kWh per real second
    import time

    client.relay("000000000007", "trip")
    before = client.read("000000000007", "energy").value
    time.sleep(0.2)
    assert client.read("000000000007", "energy").value == before
    client.relay("000000000007", "direct_close")
    time.sleep(0.2)
    assert client.read("000000000007", "energy").value > before
