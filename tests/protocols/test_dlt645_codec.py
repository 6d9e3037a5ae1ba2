"""Golden bytes for every DL/T 645-2007 function code and catalogue entry, both directions,
checked against the independent `dlt645` package as well as the standard's worked example."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest
from dlt645.protocol.protocol import DLT645Protocol as Independent

from edge_agent.errors import FrameError
from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import Control, Frame, decode, encode, find_frame
from protocols.dlt645.messages import Function, RelayAction

A = "000000000001"
T = datetime(2026, 11, 22, 10, 0, 0)

GOLDEN = {
    # The standard's classic example: read forward active total energy of meter 1.
    "read": (messages.read(A, 0x00010000), "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16"),
    "read_follow_up": (messages.read_follow_up(A, 0x00010000, 1),
                       "68 01 00 00 00 00 00 68 12 05 33 33 34 33 34 E9 16"),
    "read_address": (messages.read_address(), "68 AA AA AA AA AA AA 68 13 00 DF 16"),
    "write": (messages.write(A, 0x04000102, bytes.fromhex("000010")),
              "68 01 00 00 00 00 00 68 14 0F 35 34 33 37 35 33 33 33 33 33 33 33 33 33 43 0A 16"),
    "write_address": (messages.write_address("123456789012"),
                      "68 AA AA AA AA AA AA 68 15 06 45 C3 AB 89 67 45 CF 16"),
    "broadcast_time": (messages.broadcast_time(T),
                       "68 99 99 99 99 99 99 68 08 06 33 33 43 55 44 59 0F 16"),
    "freeze": (messages.freeze(A), "68 01 00 00 00 00 00 68 16 04 CC CC CC CC 1B 16"),
    "change_baud": (messages.change_baud(A, 9600), "68 01 00 00 00 00 00 68 17 01 53 3C 16"),
    "change_password": (messages.change_password(A, 0x04000C01, "02000000", "02123456"),
                        "68 01 00 00 00 00 00 68 18 0C 34 3F 33 37 35 33 33 33 35 45 67 89 0A 16"),
    "demand_clear": (messages.demand_clear(A),
                     "68 01 00 00 00 00 00 68 19 08 35 33 33 33 33 33 33 33 8C 16"),
    "meter_clear": (messages.meter_clear(A),
                    "68 01 00 00 00 00 00 68 1A 08 35 33 33 33 33 33 33 33 8D 16"),
    "event_clear": (messages.event_clear(A),
                    "68 01 00 00 00 00 00 68 1B 0C 35 33 33 33 33 33 33 33 32 32 32 32 5A 16"),
    "relay_trip": (messages.relay_control(A, RelayAction.TRIP, T),
                   "68 01 00 00 00 00 00 68 1C 10 35 33 33 33 33 33 33 33 4D 33 33 33 43 55 44 59 "
                   "B2 16"),
    "reply_energy": (
        Frame(A, Control(0x11, reply=True), messages.di_bytes(0x00010000) + bytes.fromhex(
            "45230100")),
        "68 01 00 00 00 00 00 68 91 08 33 33 34 33 78 56 34 33 6C 16"),
    "reply_abnormal": (Frame(A, Control(0x11, reply=True, abnormal=True), b"\x02"),
                       "68 01 00 00 00 00 00 68 D1 01 35 D8 16"),
}


def _independent_build(frame: Frame) -> bytes:
    wire_address = bytes.fromhex(frame.address)[::-1]
    return bytes(Independent.build_frame(wire_address, frame.control.byte, frame.data, 0))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_encode(name: str) -> None:
    frame, golden = GOLDEN[name]
    assert encode(frame, preamble=False) == bytes.fromhex(golden)
    assert _independent_build(frame) == bytes.fromhex(golden)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_decode_both_ways(name: str) -> None:
    frame, golden = GOLDEN[name]
    raw = bytes.fromhex(golden)
    assert decode(raw) == frame
    assert decode(b"\xfe\xfe\xfe\xfe" + raw) == frame
    theirs = Independent.deserialize(raw)
    assert theirs.ctrl_code == frame.control.byte
    assert bytes(theirs.data) == frame.data
    assert bytes(theirs.addr)[::-1].hex().upper() == frame.address


def test_every_function_code_has_a_golden_frame() -> None:
    covered = {frame.control.function for frame, _ in GOLDEN.values()}
    assert {f for f in Function if f != Function.SECURITY} <= covered


def test_relay_control_types() -> None:
    for action, code in [("trip", 0x1A), ("close_allowed", 0x1B), ("direct_close", 0x1C),
                         ("alarm", 0x2A), ("alarm_release", 0x2B), ("keep_power", 0x3A),
                         ("keep_power_release", 0x3B)]:
        frame = messages.relay_control(A, messages.RELAY_ACTIONS[action], T)
        assert frame.data[8] == code
        assert messages.describe(frame)["relay_action"] == RelayAction(code).name.lower()


@pytest.mark.parametrize(
    "fault,raw",
    [
        ("checksum", "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B4 16"),
        ("end byte", "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 17"),
        ("length", "68 01 00 00 00 00 00 68 11 05 33 33 34 33 B3 16"),
        ("length", "68 01 00 00 00"),
        ("start byte", "69 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16"),
        ("start byte", "68 01 00 00 00 00 00 69 11 04 33 33 34 33 B3 16"),
        ("BCD", "68 0F 00 00 00 00 00 68 11 04 33 33 34 33 C1 16"),
    ],
)
def test_invalid_frames_name_their_fault(fault: str, raw: str) -> None:
    with pytest.raises(FrameError) as info:
        decode(bytes.fromhex(raw))
    assert info.value.fault == fault


CATALOGUE_GOLDEN = [
    ("forward_active_total", Decimal("123456.78"), "78 56 34 12"),
    ("combined_active_total", Decimal("-12.34"), "34 12 00 80"),
    ("reverse_active_rate2", Decimal("0.01"), "01 00 00 00"),
    ("voltage_a", Decimal("220.1"), "01 22"),
    ("current_a", Decimal("-1.234"), "34 12 80"),
    ("active_power_total", Decimal("2.2000"), "00 20 02"),
    ("power_factor_total", Decimal("0.985"), "85 09"),
    ("frequency", Decimal("50.00"), "00 50"),
    ("date", date(2026, 11, 22), "00 22 11 26"),
    ("time", time(10, 5, 9), "09 05 10"),
    ("address", "123456789012", "12 90 78 56 34 12"),
    ("status_word_3", 0x0110, "10 01"),
    ("frozen_day_time", datetime(2026, 11, 22, 0, 0), "00 00 22 11 26"),
    ("cover_open_count", Decimal(3), "03 00 00"),
]


@pytest.mark.parametrize("name,value,golden", CATALOGUE_GOLDEN)
def test_catalogue_values(name: str, value: object, golden: str) -> None:
    item = catalogue.BY_NAME[name]
    raw = bytes.fromhex(golden)
    assert catalogue.encode_value(item, value) == raw
    assert catalogue.decode_value(item, raw) == value


def test_every_catalogue_entry_round_trips() -> None:
    samples = {"bcd": Decimal(1), "date": date(2026, 1, 31), "time": time(23, 59, 58),
               "address": "000000000042", "status": 0x1234,
               "datetime": datetime(2026, 3, 15, 0, 0)}
    for item in catalogue.BY_DI.values():
        if item.kind == "block":
            value: object = [Decimal(125).scaleb(-item.decimals)] * item.count
        else:
            value = samples[item.kind]
            if item.kind == "bcd":
                value = Decimal(1).scaleb(-item.decimals) * 7
        raw = catalogue.encode_value(item, value)
        assert len(raw) == item.size
        assert catalogue.decode_value(item, raw) == value


def test_read_reply_value_through_catalogue() -> None:
    _frame, golden = GOLDEN["reply_energy"]
    item, _di, _raw, value = messages.reply_value(decode(bytes.fromhex(golden)))
    assert item is not None and item.name == "forward_active_total"
    assert value == Decimal("123.45") and item.unit == "kWh"


def test_abnormal_reply_names_error_bits() -> None:
    frame = Frame(A, Control(0x1C, reply=True, abnormal=True), b"\x04")
    described = messages.describe(frame)
    assert described["errors"] == ["password error or unauthorised"]


def test_find_frame_skips_leading_garbage_and_false_starts() -> None:
    frame, golden = GOLDEN["read"]
    noise = bytes.fromhex("00 68 13 FF 68 55 68 AA 68 01 02 03 04 05 06 68 11 FF")
    found, consumed = find_frame(bytearray(noise + b"\xfe\xfe" + bytes.fromhex(golden) + b"\x01"))
    assert found == frame
    assert consumed == len(noise) + 2 + 16
