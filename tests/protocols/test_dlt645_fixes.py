"""Golden tests of the DL/T 645 fixes of issues 10 and 13.

Sources:
- DL/T 645-1997 data identifier table: C032 表号/电表地址 (the meter's address), C033 用户号
  (user number).  Cross-checked with the public CLOU (科陆) concentrator table `DL645V07.cpp`,
  which maps 1997 `C032` to the 2007 communication address `04000401` (电表地址).
- DL/T 645-1997 error information word (异常应答 错误信息字): D0 非法数据, D1 数据标识错,
  D2 密码错, D3 reserved, D4 年时区数超, D5 日时段数超, D6 费率数超.  Cross-checked with the
  public C# driver `AC.Base.Drives.DLT645.DLT645_1997Drive.GetErrorContext` (0x01 非法数据,
  0x02 数据标识错误, 0x04 密码错, 0x10/0x20/0x40 the three "exceeded" bits).
- DL/T 645-2007 7.x read address (13H/93H) and write address (15H); frames cross-checked
  byte for byte with the independent PyPI `dlt645` 3.2.0 frame builder.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from dlt645.protocol.protocol import DLT645Protocol as Peer

from protocols.dlt645 import catalogue, messages, v1997
from protocols.dlt645.frame import BROADCAST, WILDCARD, Control, Frame, decode
from protocols.errors import FrameError, MeterAbnormalReply, MeterError, RequestError

A = "123456789012"
T = datetime(2026, 11, 22, 10, 0, 0)


def peer(address: str, control: int, data: bytes) -> bytes:
    return bytes(Peer.build_frame(bytes.fromhex(address)[::-1], control, data, 0))


# -- 1997: the address is C032 ---------------------------------------------------------------
def test_1997_read_address_reads_c032() -> None:
    frame = v1997.read_address()
    golden = "68 AA AA AA AA AA AA 68 01 02 65 F3 27 16"  # DI C032 as 32 C0 (+33: 65 F3)
    assert frame.encode(preamble=False) == bytes.fromhex(golden)
    assert frame.encode(preamble=False) == peer(WILDCARD, 0x01, bytes.fromhex("32C0"))
    assert v1997.lookup_1997("address").di == 0xC032
    assert v1997.lookup_1997("meter_number").di == 0xC032  # the old name still resolves
    assert v1997.lookup_1997("user_number").di == 0xC033


def test_1997_address_reply_and_wildcard_echo() -> None:
    data = bytes.fromhex("32C0") + bytes.fromhex(A)[::-1]
    reply = decode(peer(A, 0x81, data))
    assert v1997.reply_address(v1997.check_reply(v1997.read_address(), reply)) == A
    echo = decode(peer(WILDCARD, 0x81, bytes.fromhex("32C0") + b"\xaa" * 6))
    with pytest.raises(MeterError, match="wildcard"):
        v1997.check_reply(v1997.read_address(), echo)
    with pytest.raises(MeterError, match="wildcard"):
        v1997.reply_address(echo)
    inner = Frame(A, Control(0x01, reply=True), bytes.fromhex("32C0") + b"\xaa" * 6)
    with pytest.raises(MeterError, match="wildcard"):
        v1997.reply_address(inner)


# -- 1997 abnormal reply error bits ------------------------------------------------------------
@pytest.mark.parametrize("word,errors", [
    (0x01, ["illegal data"]),
    (0x02, ["data identifier error"]),
    (0x04, ["password error"]),
    (0x08, []),  # D3 reserved
    (0x10, ["year time-zone count exceeded"]),
    (0x20, ["day time-slot count exceeded"]),
    (0x40, ["rate count exceeded"]),
    (0x06, ["data identifier error", "password error"]),
])
def test_1997_error_bits(word: int, errors: list[str]) -> None:
    wire = peer(A, 0xC1, bytes([word]))  # reply + abnormal + function 01
    reply = decode(wire)
    with pytest.raises(MeterAbnormalReply) as caught:
        v1997.check_reply(v1997.read(A, 0x9010), reply)
    assert caught.value.errors == errors
    assert messages.describe(reply)["errors"] == errors


# -- a value of unexpected length is shown, not rejected -------------------------------------
@pytest.mark.parametrize("value_hex", ["45 23 01", "45 23 01 00 00"])
def test_wrong_value_length_is_a_warning(value_hex: str) -> None:
    data = messages.di_bytes(0x00010000) + bytes.fromhex(value_hex)
    reply = decode(peer(A, 0x91, data))  # a valid frame
    out = messages.describe(reply)
    assert out["name"] == "forward_active_total"
    assert "value" not in out
    assert out["raw"] == value_hex.upper()
    item = catalogue.lookup(0x00010000)
    assert out["warnings"] == [messages.length_warning(item, bytes.fromhex(value_hex))]
    assert "needs 4 data bytes" in out["warnings"][0]  # type: ignore[index]
    data_out = messages.read_reply(reply)
    assert (data_out.value, data_out.raw) == (None, bytes.fromhex(value_hex))
    with pytest.raises(FrameError) as caught:  # the strict path a reading is stored from
        messages.reply_value(reply)
    assert caught.value.fault == "length"


def test_wrong_value_length_1997_is_a_warning() -> None:
    reply = decode(peer(A, 0x81, bytes.fromhex("1090") + bytes.fromhex("452301")))
    out = messages.describe(reply)
    assert out["raw"] == "45 23 01" and "value" not in out
    assert "needs 4 data bytes" in out["warnings"][0]  # type: ignore[index]


# -- relay validity ----------------------------------------------------------------------------
@pytest.mark.parametrize("validity", [timedelta(0), timedelta(minutes=-5)])
def test_relay_with_no_validity_is_refused(validity: timedelta) -> None:
    with pytest.raises(RequestError) as caught:
        messages.relay_control(A, messages.RelayAction.TRIP, validity, now=T)
    assert caught.value.field == "validity"
    assert isinstance(caught.value, ValueError)


def test_relay_expiry_not_after_now_is_refused() -> None:
    for expiry in (T, T - timedelta(seconds=1)):
        with pytest.raises(RequestError) as caught:
            messages.relay_control(A, messages.RelayAction.TRIP, expiry, now=T)
        assert caught.value.field == "validity"


def test_relay_validity_counts_from_now() -> None:
    by_delta = messages.relay_control(A, messages.RelayAction.TRIP, timedelta(minutes=10), now=T)
    by_moment = messages.relay_control(A, messages.RelayAction.TRIP, T + timedelta(minutes=10))
    assert by_delta == by_moment
    # N3..N8 = ss mm hh DD MM YY of 2026-11-22 10:10:00
    assert by_delta.data[10:16] == bytes.fromhex("00 10 10 22 11 26")


# -- write address -----------------------------------------------------------------------------
@pytest.mark.parametrize("new", [WILDCARD, BROADCAST, "12345678AAAA", "aaaaaaaaaaaa"])
def test_write_address_to_wildcard_or_broadcast_is_refused(new: str) -> None:
    with pytest.raises(RequestError) as caught:
        messages.write_address(new)
    assert caught.value.field == "address"


def test_write_address_golden() -> None:
    frame = messages.write_address(A)
    assert frame.encode(preamble=False) == peer(WILDCARD, 0x15, bytes.fromhex(A)[::-1])


# -- read address: the wildcard is never a meter's address ------------------------------------
def test_read_address_reply_golden() -> None:
    wire = peer(A, 0x93, bytes.fromhex(A)[::-1])
    assert wire == bytes.fromhex("68 12 90 78 56 34 12 68 93 06 45 C3 AB 89 67 45 "
                                 f"{sum(wire[:-2]) & 0xFF:02X} 16")
    reply = messages.check_reply(messages.read_address(), decode(wire))
    assert messages.reply_address(reply) == A


def test_read_address_wildcard_echo_is_a_meter_error() -> None:
    echo = decode(peer(WILDCARD, 0x93, b"\xaa" * 6))
    with pytest.raises(MeterError, match="wildcard"):
        messages.check_reply(messages.read_address(), echo)
    with pytest.raises(MeterError, match="wildcard"):
        messages.reply_address(echo)
    data_only = Frame(A, Control(0x13, reply=True), b"\xaa" * 6)
    with pytest.raises(MeterError, match="wildcard"):
        messages.reply_address(data_only)
    with pytest.raises(MeterError):
        messages.reply_address(Frame(A, Control(0x13, reply=True), b"\x01" * 5))
