"""Modbus RTU: golden registers per map, pymodbus client against pymodbus's own server on a
pty (through the simulated null-modem cable), faults, relay readback, scan, CLI."""

from __future__ import annotations

import json
import time
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.errors import MeterAbnormalReply, MeterError, MeterTimeout
from edge_agent.field.modbus import ModbusMeterClient
from edge_agent.field.transport import LineSettings
from firmware_sim.modbus_meter import ModbusSimBus, SimModbusMeter, make_modbus_meters
from protocols.modbus import MAPS, decode, encode, load_map

GOLDEN = [
    # (map, register, value, words as they travel)
    ("eastron-sdm120", "voltage", D("230.0"), [0x4366, 0x0000]),
    ("eastron-sdm120", "import_active_energy", D("1.50"), [0x3FC0, 0x0000]),
    ("eastron-sdm630", "total_power", D("-1500.0"), [0xC4BB, 0x8000]),
    ("chint-ddsu666", "current", D("5.000"), [0x40A0, 0x0000]),
    ("chint-ddsu666", "meter_address", D("7"), [0x0007]),
    ("chint-dtsu666", "import_active_energy", D("12345.67"), [0xD687, 0x0012]),  # low word first
]


@pytest.mark.parametrize("model,name,value,words", GOLDEN)
def test_golden_registers(model: str, name: str, value: D, words: list[int]) -> None:
    register = load_map(model).register(name)
    assert encode(register, value) == words
    assert decode(register, words) == value


def test_maps_ship_and_say_where_things_are() -> None:
    assert set(MAPS) >= {"eastron-sdm120", "eastron-sdm630", "chint-ddsu666", "chint-dtsu666"}
    sdm = load_map("eastron-sdm120")
    assert sdm.register("import_active_energy").address == 0x0048 and sdm.relay is None
    ddsu = load_map("chint-ddsu666")
    assert ddsu.register("voltage").address == 0x2000 and ddsu.relay.kind == "coil"
    assert load_map("chint-dtsu666").relay.kind == "register"


def test_float_energy_becomes_exact_decimal() -> None:
    register = load_map("eastron-sdm120").register("import_active_energy")
    # 12.34 is not exact in float32 (12.3400001526...): it comes back as exactly 12.34.
    assert decode(register, encode(register, D("12.34"))) == D("12.34")


@pytest.fixture
def modbus_sim():
    meters = [*make_modbus_meters(2, "chint-ddsu666"), SimModbusMeter(3, "eastron-sdm120"),
              SimModbusMeter(4, "chint-dtsu666")]
    meters[0].core.add_energy(D("123.45"))
    bus = ModbusSimBus(meters, baud=9600).start()
    yield bus
    bus.stop()


@pytest.fixture
def modbus_client(modbus_sim):
    client = ModbusMeterClient(LineSettings(modbus_sim.port, baud=9600, parity="N",
                                            response_timeout=0.2, retries=0))
    yield client
    client.close()


def test_read_quantities(modbus_sim, modbus_client) -> None:
    ddsu = load_map("chint-ddsu666")
    assert modbus_client.energy(1, ddsu) == D("123.45")
    assert modbus_client.read(1, ddsu, "voltage").value == D("229.8")
    assert modbus_client.read(3, load_map("eastron-sdm120"), "frequency").value == D("50.00")


@pytest.mark.parametrize("unit,model", [(1, "chint-ddsu666"), (4, "chint-dtsu666")])
def test_relay_trip_and_close_with_readback(modbus_sim, modbus_client, unit, model) -> None:
    mapping = load_map(model)
    assert modbus_client.relay(unit, mapping, "trip") == "open"
    assert modbus_sim.meter(unit).relay_open
    assert modbus_client.relay_state(unit, mapping) == "open"
    assert modbus_client.relay(unit, mapping, "close") == "closed"
    assert not modbus_sim.meter(unit).relay_open


def test_energy_stops_while_tripped(modbus_sim, modbus_client) -> None:
    meter = modbus_sim.meter(2)
    meter.core.load_kw, meter.core.time_scale = D("3600"), 10.0
    ddsu = load_map("chint-ddsu666")
    modbus_client.relay(2, ddsu, "trip")
    before = modbus_client.energy(2, ddsu)
    time.sleep(0.2)
    assert modbus_client.energy(2, ddsu) == before
    modbus_client.relay(2, ddsu, "close")
    time.sleep(0.2)
    assert modbus_client.energy(2, ddsu) > before


def test_no_relay_on_sdm120(modbus_client) -> None:
    with pytest.raises(MeterError, match="has no relay"):
        modbus_client.relay(3, load_map("eastron-sdm120"), "trip")


@pytest.mark.parametrize("fault,error", [("silent", MeterTimeout),
                                         ("abnormal", MeterAbnormalReply),
                                         ("corrupt_checksum", MeterError)])
def test_faults(modbus_sim, modbus_client, fault, error) -> None:
    modbus_sim.meter(2).fault = fault
    started = time.monotonic()
    with pytest.raises(error):
        modbus_client.read(2, load_map("chint-ddsu666"), "voltage")
    assert time.monotonic() - started < 2


def test_scan_by_unit_range(modbus_client) -> None:
    assert modbus_client.scan(load_map("chint-ddsu666"), range(1, 7)) == [1, 2]
    assert modbus_client.scan(load_map("eastron-sdm120"), range(1, 7)) == [3]


def test_cli_read_relay_scan(modbus_sim) -> None:
    line = ["-p", modbus_sim.port, "--baud", "9600", "--parity", "N", "--timeout", "0.2",
            "--protocol", "modbus"]
    runner = CliRunner()
    out = runner.invoke(main, ["read", *line, "--unit", "1", "--model", "chint-ddsu666",
                               "energy", "voltage", "--json"])
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows[0]["name"] == "import_active_energy" and rows[0]["value"] == "123.45"
    out = runner.invoke(main, ["relay", *line, "--unit", "1", "--model", "chint-ddsu666",
                               "trip", "--json"])
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["relay"] == "open" and modbus_sim.meter(1).relay_open
    out = runner.invoke(main, ["scan", *line, "--model", "chint-ddsu666", "--units", "1-5",
                               "--json"])
    assert json.loads(out.stdout)["meters"] == ["unit:1", "unit:2"]
    out = runner.invoke(main, ["read", *line, "--unit", "1", "energy"])
    assert out.exit_code == 2 and "needs --model" in out.stderr
