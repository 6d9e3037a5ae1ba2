"""DL/T 645-1997: golden bytes (both directions, against the independent codec), the
catalogue, reads over a simulated 1997 meter, and no relay."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest
from click.testing import CliRunner
from dlt645.protocol.protocol import DLT645Protocol as Independent

from edge_agent.cli import main
from edge_agent.errors import RelayUnsupported
from edge_agent.field.dlt645 import Dlt645Client
from edge_agent.field.transport import Bus, LineSettings
from firmware_sim.bus import SimBus, make_meters
from protocols.dlt645 import catalogue, messages, v1997
from protocols.dlt645.frame import Control, Frame, decode, encode

GOLDEN = {
    # The classic 1997 example: read forward active total (DI 9010) of meter 1.
    "read": (v1997.read("000000000001", 0x9010),
             "68 01 00 00 00 00 00 68 01 02 43 C3 DA 16"),
    "reply": (Frame("000000000001", Control(0x01, reply=True),
                    bytes.fromhex("1090") + bytes.fromhex("45230100")),
              "68 01 00 00 00 00 00 68 81 06 43 C3 78 56 34 33 93 16"),
    "abnormal": (Frame("000000000001", Control(0x01, reply=True, abnormal=True), b"\x02"),
                 "68 01 00 00 00 00 00 68 C1 01 35 C8 16"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_bytes(name: str) -> None:
    frame, golden = GOLDEN[name]
    raw = bytes.fromhex(golden)
    assert encode(frame, preamble=False) == raw
    assert decode(raw) == frame
    wire_address = bytes.fromhex(frame.address)[::-1]
    assert bytes(Independent.build_frame(wire_address, frame.control.byte, frame.data, 0)) == raw
    assert bytes(Independent.deserialize(raw).data) == frame.data


def test_version_is_named() -> None:
    assert messages.describe(GOLDEN["read"][0])["protocol"] == "DL/T 645-1997"
    described = messages.describe(GOLDEN["reply"][0])
    assert described["value"] == "123.45" and described["di"] == "9010"
    assert messages.describe(messages.read("000000000001", 0x00010000))["protocol"] == \
        "DL/T 645-2007"
    assert v1997.lookup_1997("energy").version == "1997"
    assert catalogue.lookup("energy").version == "2007"


def test_catalogue_1997_round_trips() -> None:
    for item in v1997.BY_DI_1997.values():
        sample = {"bcd": D(1), "block": [D("1.25")] * 5, "address": "000000000042",
                  "date": __import__("datetime").date(2026, 1, 31),
                  "time": __import__("datetime").time(23, 59, 58)}[item.kind]
        raw = catalogue.encode_value(item, sample)
        assert len(raw) == item.size and catalogue.decode_value(item, raw) == sample


def test_reads_scan_and_no_relay_over_a_simulated_1997_meter() -> None:
    sim = SimBus(make_meters(3, version="1997"), baud=9600).start()
    try:
        sim.meters[0].add_energy(D("77.77"))
        client = Dlt645Client(Bus(LineSettings(sim.port, 9600, response_timeout=0.1, gap=0)),
                              version="1997")
        assert client.read("000000000001", "energy").value == D("77.77")
        assert client.read("000000000001", "voltage").unit == "V"
        assert client.scan(timeout=0.05) == [f"{n:012d}" for n in range(1, 4)]
        with pytest.raises(RelayUnsupported, match="no remote relay"):
            client.relay("000000000001", "trip")
        client.bus.close()
        out = CliRunner().invoke(main, ["read", "-p", sim.port, "--baud", "9600",
                                        "--protocol", "dlt645-1997", "-a", "000000000001",
                                        "energy", "B611", "--json"])
        assert out.exit_code == 0, out.stderr
        assert [r["di"] for r in json.loads(out.stdout)] == ["9010", "B611"]
        out = CliRunner().invoke(main, ["frame", "decode", GOLDEN["reply"][1], "--json"])
        assert json.loads(out.stdout)["protocol"] == "DL/T 645-1997"
    finally:
        sim.stop()
