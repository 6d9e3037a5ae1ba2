"""DL/T 645-1997: reading energy and instantaneous values from older meters.

Same link layer as 2007 (see `frame.py`); the differences are the function codes (read 0x01,
read follow-up 0x02, reread 0x03, write 0x04, broadcast time 0x08, write address 0x0A,
change baud 0x0C, change password 0x0F, maximum demand clear 0x10), 2-byte data identifiers
(DI0 first on the wire) and a catalogue of its own.  `version_of` says which version a frame
is, from its function and identifier length.
"""

from __future__ import annotations

from enum import IntEnum

from protocols.errors import FrameError, MeterAbnormalReply, MeterError

from .catalogue import DataItem, decode_value
from .frame import WILDCARD, Control, Frame


class Function1997(IntEnum):
    READ = 0x01
    READ_FOLLOW_UP = 0x02
    REREAD = 0x03
    WRITE = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C
    CHANGE_PASSWORD = 0x0F
    DEMAND_CLEAR = 0x10


NAMES_1997 = {
    0x01: "read data", 0x02: "read follow-up data", 0x03: "reread data", 0x04: "write data",
    0x08: "broadcast time", 0x0A: "write address", 0x0C: "change baud rate",
    0x0F: "change password", 0x10: "maximum demand clear",
}

# Abnormal-reply error word of 1997 meters (DL/T 645-1997 error information word: D0 illegal
# data, D1 data identifier error, D2 password error, D3 reserved, D4 year time zones exceeded,
# D5 day time slots exceeded, D6 rates exceeded, D7 reserved).
ERROR_BITS_1997 = {0: "illegal data", 1: "data identifier error", 2: "password error",
                   4: "year time-zone count exceeded", 5: "day time-slot count exceeded",
                   6: "rate count exceeded"}


def _v(di: int, name: str, kind: str, length: int, decimals: int = 0, unit: str = "",
       count: int = 1) -> DataItem:
    return DataItem(di, name, kind, length, decimals, False, unit, count, "1997")


_ITEMS_1997 = [
    _v(0x9010, "forward_active_total", "bcd", 4, 2, "kWh"),
    *[_v(0x9010 + n, f"forward_active_rate{n}", "bcd", 4, 2, "kWh") for n in range(1, 5)],
    _v(0x901F, "forward_active_block", "block", 4, 2, "kWh", 5),
    _v(0x9020, "reverse_active_total", "bcd", 4, 2, "kWh"),
    _v(0xB611, "voltage_a", "bcd", 2, 0, "V"),
    _v(0xB612, "voltage_b", "bcd", 2, 0, "V"),
    _v(0xB613, "voltage_c", "bcd", 2, 0, "V"),
    _v(0xB621, "current_a", "bcd", 2, 2, "A"),
    _v(0xB622, "current_b", "bcd", 2, 2, "A"),
    _v(0xB623, "current_c", "bcd", 2, 2, "A"),
    _v(0xB630, "active_power_total", "bcd", 3, 4, "kW"),
    _v(0xB650, "power_factor_total", "bcd", 2, 3, ""),
    _v(0xC010, "date", "date", 4),
    _v(0xC011, "time", "time", 3),
    # C032 is the meter (communication) address; C033 is the user (customer) number.
    _v(0xC032, "address", "address", 6),
    _v(0xC033, "user_number", "address", 6),
]
BY_DI_1997 = {item.di: item for item in _ITEMS_1997}
BY_NAME_1997 = {item.name: item for item in _ITEMS_1997}
ALIASES_1997 = {"energy": "forward_active_total", "voltage": "voltage_a",
                "current": "current_a", "power": "active_power_total",
                "meter_number": "address"}
ADDRESS_DI = 0xC032


def lookup_1997(key: str | int) -> DataItem:
    if isinstance(key, int):
        item = BY_DI_1997.get(key)
    else:
        text = key.strip().lower()
        item = BY_NAME_1997.get(ALIASES_1997.get(text, text))
        if item is None:
            try:
                item = BY_DI_1997.get(int(text.removeprefix("0x"), 16))
            except ValueError:
                item = None
    if item is None:
        raise KeyError(f"unknown DL/T 645-1997 identifier or name {key!r}")
    return item


def read(address: str, item: DataItem | int) -> Frame:
    di = item.di if isinstance(item, DataItem) else item
    return Frame(address, Control(Function1997.READ), di.to_bytes(2, "little"))


def read_address() -> Frame:
    """1997 meters have no read-address function: read DI C032 (the address) with the wildcard."""
    return read(WILDCARD, ADDRESS_DI)


def reply_address(reply: Frame) -> str:
    """The meter address a C032 read reply carries; never the wildcard (`MeterError`)."""
    from .frame import BROADCAST, address_from_wire

    if reply.data[:2] != ADDRESS_DI.to_bytes(2, "little") or len(reply.data) != 8:
        raise MeterError("not a C032 (meter address) reply")
    try:
        text = address_from_wire(reply.data[2:])
    except FrameError as exc:
        raise MeterError(f"C032 reply carries no address: {exc}") from exc
    for candidate in (text, reply.address):
        if "A" in candidate or candidate == BROADCAST:
            raise MeterError(f"C032 reply carries the wildcard/broadcast address {candidate}, "
                             "not a meter's own")
    return text


def version_of(frame: Frame) -> str:
    """Which version a frame is: by its function (0x08 broadcast time is the same in both)."""
    function = frame.control.function
    if function == 0x08:
        return "DL/T 645-2007/1997"
    return "DL/T 645-1997" if function in NAMES_1997 else "DL/T 645-2007"


def check_reply(request: Frame, reply: Frame) -> Frame:
    if not reply.control.reply or reply.control.function != request.control.function:
        raise MeterError(f"reply control {reply.control.byte:02X} does not answer "
                         f"{request.control.byte:02X}")
    if "A" in reply.address:
        raise MeterError(f"reply carries the wildcard address {reply.address}, which is never "
                         "a meter's own")
    if "A" not in request.address and reply.address != request.address:
        raise MeterError(f"reply from {reply.address}, expected {request.address}")
    if reply.control.abnormal:
        word = reply.data[0] if reply.data else 0
        raise MeterAbnormalReply(reply.address, NAMES_1997.get(request.control.function, "?"),
                                 [n for b, n in ERROR_BITS_1997.items() if word & (1 << b)])
    if reply.data[:2] != request.data[:2]:
        raise MeterError("reply carries another data identifier")
    return reply


def reply_value(reply: Frame) -> tuple[DataItem, object]:
    if len(reply.data) < 2:
        raise FrameError("length", "a 1997 read reply carries at least the 2-byte DI")
    di = int.from_bytes(reply.data[:2], "little")
    item = lookup_1997(di)
    return item, decode_value(item, reply.data[2:])
