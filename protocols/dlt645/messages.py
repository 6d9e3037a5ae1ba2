"""DL/T 645-2007 application messages: request builders and reply interpretation.

Every function code of the standard is here, declared as data (`FUNCTIONS`) with a builder for
each request.  Replies are checked against the request they answer (`check_reply`) in one
place, so callers never compare control bytes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from protocols.errors import FrameError, MeterAbnormalReply, MeterError, RequestError

from .catalogue import DataItem, decode_value, lookup
from .frame import BROADCAST, WILDCARD, Control, Frame


class Function(IntEnum):
    SECURITY = 0x03
    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    DEMAND_CLEAR = 0x19
    METER_CLEAR = 0x1A
    EVENT_CLEAR = 0x1B
    RELAY = 0x1C


FUNCTION_NAMES = {
    Function.SECURITY: "security authentication",
    Function.BROADCAST_TIME: "broadcast time",
    Function.READ: "read data",
    Function.READ_FOLLOW_UP: "read follow-up data",
    Function.READ_ADDRESS: "read address",
    Function.WRITE: "write data",
    Function.WRITE_ADDRESS: "write address",
    Function.FREEZE: "freeze",
    Function.CHANGE_BAUD: "change baud rate",
    Function.CHANGE_PASSWORD: "change password",
    Function.DEMAND_CLEAR: "maximum demand clear",
    Function.METER_CLEAR: "meter clear",
    Function.EVENT_CLEAR: "event clear",
    Function.RELAY: "relay control",
}

# Abnormal-reply error status word (SERR), bit -> meaning.
ERROR_BITS = {
    0: "other error",
    1: "no requested data",
    2: "password error or unauthorised",
    3: "baud rate cannot be changed",
    4: "year time-zone count exceeded",
    5: "day time-slot count exceeded",
    6: "rate count exceeded",
}


class RelayAction(IntEnum):
    """Control type N1 of the relay-control (0x1C) command."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B
    DIRECT_CLOSE = 0x1C
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A
    KEEP_POWER_RELEASE = 0x3B


RELAY_ACTIONS = {
    "trip": RelayAction.TRIP,
    "close": RelayAction.CLOSE_ALLOWED,
    "close_allowed": RelayAction.CLOSE_ALLOWED,
    "direct_close": RelayAction.DIRECT_CLOSE,
    "alarm": RelayAction.ALARM,
    "alarm_release": RelayAction.ALARM_RELEASE,
    "keep_power": RelayAction.KEEP_POWER,
    "keep_power_on": RelayAction.KEEP_POWER,
    "keep_power_release": RelayAction.KEEP_POWER_RELEASE,
    "keep_power_off": RelayAction.KEEP_POWER_RELEASE,
}

BAUD_CODES = {600: 0x02, 1200: 0x04, 2400: 0x08, 4800: 0x10, 9600: 0x20, 19200: 0x40}

DEFAULT_PASSWORD = "02000000"  # PA (level 02) + P0..P2
DEFAULT_OPERATOR = "00000000"


def di_bytes(di: int) -> bytes:
    """A 4-byte data identifier in wire order (DI0 first)."""
    return di.to_bytes(4, "little")


def _secret(hex_text: str, size: int, what: str) -> bytes:
    """Password (PA P0 P1 P2) or operator code (C0..C3), given in wire order."""
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError as exc:
        raise FrameError("BCD", f"{what} {hex_text!r} is not hex") from exc
    if len(raw) != size:
        raise FrameError("length", f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _bcd_time(moment: datetime, fields: str) -> bytes:
    parts = {
        "s": moment.second, "m": moment.minute, "h": moment.hour,
        "D": moment.day, "M": moment.month, "Y": moment.year % 100,
    }
    return bytes(int(f"{parts[f]:02d}", 16) for f in fields)


def request(address: str, function: Function, data: bytes = b"") -> Frame:
    return Frame(address, Control(function=function), data)


def read(address: str, item: DataItem | int) -> Frame:
    di = item.di if isinstance(item, DataItem) else item
    return request(address, Function.READ, di_bytes(di))


def read_follow_up(address: str, di: int, seq: int) -> Frame:
    return request(address, Function.READ_FOLLOW_UP, di_bytes(di) + bytes([seq & 0xFF]))


def read_address() -> Frame:
    return request(WILDCARD, Function.READ_ADDRESS)


def write(
    address: str,
    di: int,
    value: bytes,
    password: str = DEFAULT_PASSWORD,
    operator: str = DEFAULT_OPERATOR,
) -> Frame:
    data = di_bytes(di) + _secret(password, 4, "password") + _secret(operator, 4, "operator")
    return request(address, Function.WRITE, data + value)


def write_address(new_address: str) -> Frame:
    """Set the address of the only meter on the bus (sent to the wildcard, as the standard says).

    A wildcard or broadcast *new* address is refused: a meter given it would answer every
    request on the bus (or none), which no technician can undo remotely.
    """
    from .frame import address_from_wire, address_to_wire

    wire = address_to_wire(new_address)
    text = address_from_wire(wire)
    if "A" in text or text == BROADCAST:
        raise RequestError("address", f"{text} is the wildcard/broadcast address, not a meter")
    return request(WILDCARD, Function.WRITE_ADDRESS, wire)


def broadcast_time(moment: datetime) -> Frame:
    return request(BROADCAST, Function.BROADCAST_TIME, _bcd_time(moment, "smhDMY"))


def freeze(address: str, moment: datetime | None = None) -> Frame:
    """Freeze now (`moment` None sends the 99999999 'immediately' pattern) or at mm hh DD MM."""
    data = b"\x99" * 4 if moment is None else _bcd_time(moment, "mhDM")
    return request(address, Function.FREEZE, data)


def change_baud(address: str, baud: int) -> Frame:
    if baud not in BAUD_CODES:
        raise FrameError("length", f"baud {baud} is not one of {sorted(BAUD_CODES)}")
    return request(address, Function.CHANGE_BAUD, bytes([BAUD_CODES[baud]]))


def change_password(address: str, di: int, old: str, new: str) -> Frame:
    data = di_bytes(di) + _secret(old, 4, "password") + _secret(new, 4, "password")
    return request(address, Function.CHANGE_PASSWORD, data)


def _authorised(
    address: str, function: Function, password: str, operator: str, tail: bytes = b""
) -> Frame:
    data = _secret(password, 4, "password") + _secret(operator, 4, "operator") + tail
    return request(address, function, data)


def demand_clear(address: str, password: str = DEFAULT_PASSWORD,
                 operator: str = DEFAULT_OPERATOR) -> Frame:
    return _authorised(address, Function.DEMAND_CLEAR, password, operator)


def meter_clear(address: str, password: str = DEFAULT_PASSWORD,
                operator: str = DEFAULT_OPERATOR) -> Frame:
    return _authorised(address, Function.METER_CLEAR, password, operator)


def event_clear(address: str, di: int = 0xFFFFFFFF, password: str = DEFAULT_PASSWORD,
                operator: str = DEFAULT_OPERATOR) -> Frame:
    return _authorised(address, Function.EVENT_CLEAR, password, operator, di_bytes(di))


def relay_control(
    address: str,
    action: RelayAction,
    valid_until: datetime | timedelta,
    password: str = DEFAULT_PASSWORD,
    operator: str = DEFAULT_OPERATOR,
    now: datetime | None = None,
) -> Frame:
    """Relay control (0x1C): N1 control type, N2 reserved, N3..N8 validity time ssmmhhDDMMYY.

    `valid_until` is the command's expiry: a moment, or a validity (`timedelta`) counted from
    `now` (default: the local clock).  A validity of zero or less, or an expiry not after
    `now` when `now` is given, is refused with `RequestError("validity")`: the meter would
    discard such a command, and the agent would wait for a relay change that never comes.
    """
    if isinstance(valid_until, timedelta):
        if valid_until <= timedelta(0):
            raise RequestError("validity", f"relay command validity {valid_until} is not "
                                           "positive")
        valid_until = (now or datetime.now()).replace(microsecond=0) + valid_until
    elif now is not None and valid_until <= now:
        raise RequestError("validity", f"relay command expiry {valid_until.isoformat()} is "
                                       f"not after {now.isoformat()}")
    tail = bytes([int(action), 0]) + _bcd_time(valid_until, "smhDMY")
    return _authorised(address, Function.RELAY, password, operator, tail)


def abnormal_errors(frame: Frame) -> list[str]:
    """The error bits of an abnormal reply, by name."""
    if not frame.data:
        return []
    word = frame.data[0]
    return [name for bit, name in ERROR_BITS.items() if word & (1 << bit)]


def check_reply(request_frame: Frame, reply: Frame) -> Frame:
    """Check a reply answers the request (direction, function, address, DI) or raise."""
    function = request_frame.control.function
    name = FUNCTION_NAMES.get(function, f"function {function:02X}")  # type: ignore[call-overload]
    if not reply.control.reply:
        raise MeterError(f"got a request frame (control {reply.control.byte:02X}), not a reply")
    if reply.control.function != function:
        raise MeterError(
            f"reply function {reply.control.function:02X} does not answer {function:02X}"
        )
    if "A" in reply.address or reply.address == BROADCAST:
        raise MeterError(f"reply carries the wildcard/broadcast address {reply.address}, "
                         "which is never a meter's own")
    wanted = request_frame.address
    if "A" not in wanted and wanted != BROADCAST and reply.address != wanted:
        raise MeterError(f"reply from {reply.address}, expected {wanted}")
    if reply.control.abnormal:
        raise MeterAbnormalReply(reply.address, name, abnormal_errors(reply))
    if function in (Function.READ, Function.READ_FOLLOW_UP):
        if reply.data[:4] != request_frame.data[:4]:
            raise MeterError(
                f"reply carries DI {reply.data[:4][::-1].hex().upper()}, "
                f"asked for {request_frame.data[:4][::-1].hex().upper()}"
            )
    return reply


@dataclass(frozen=True, slots=True)
class ReplyData:
    """A read reply split up: the catalogue item (None if unknown), DI, raw value bytes, value.

    When the value bytes do not have the catalogue's length the frame is still a valid frame:
    `value` is None and `warnings` says why, so a technician sees the raw bytes instead of a
    rejected frame.
    """

    item: DataItem | None
    di: int
    raw: bytes
    value: object = None
    warnings: list[str] = field(default_factory=list)


def length_warning(item: DataItem, raw: bytes) -> str:
    return (f"length: {item.name} ({item.di_hex}) needs {item.size} data bytes, got "
            f"{len(raw)}; value not decoded, raw bytes shown")


def read_reply(reply: Frame) -> ReplyData:
    """Split a read reply, tolerating a value length that differs from the catalogue."""
    if len(reply.data) < 4:
        raise FrameError("length", "a read reply carries at least the 4-byte DI")
    di = int.from_bytes(reply.data[:4], "little")
    raw = reply.data[4:]
    if reply.control.function == Function.READ_FOLLOW_UP and raw:
        raw = raw[:-1]
    try:
        item = lookup(di)
    except KeyError:
        return ReplyData(None, di, raw)
    if len(raw) != item.size:
        return ReplyData(item, di, raw, None, [length_warning(item, raw)])
    return ReplyData(item, di, raw, decode_value(item, raw))


def reply_value(reply: Frame) -> tuple[DataItem | None, int, bytes, object]:
    """Split a read reply into (catalogue item or None, DI, raw value bytes, decoded value).

    Strict: a value of the wrong length raises `FrameError("length")`, because a reading is
    about to be stored or billed; `read_reply` is the tolerant form for showing a frame.
    """
    data = read_reply(reply)
    if data.warnings:
        raise FrameError("length", data.warnings[0])
    return data.item, data.di, data.raw, data.value


def reply_address(reply: Frame) -> str:
    """The meter address a read-address (0x13) reply carries; never the wildcard.

    A meter (or a simulator, or a bus echo) that answers with `AAAAAAAAAAAA` has not told us
    its address; taking that as one would address every meter on the bus later.
    """
    from .frame import address_from_wire

    if len(reply.data) != 6:
        raise MeterError(f"read-address reply carries {len(reply.data)} data bytes, not 6")
    try:
        text = address_from_wire(reply.data)
    except FrameError as exc:
        raise MeterError(f"read-address reply carries no address: {exc}") from exc
    for candidate in (text, reply.address):
        if "A" in candidate or candidate == BROADCAST:
            raise MeterError(f"read-address reply carries the wildcard/broadcast address "
                             f"{candidate}, not a meter's own")
    if text != reply.address:
        raise MeterError(f"read-address reply from {reply.address} carries address {text}")
    return text


def describe(frame: Frame) -> dict[str, object]:
    """Every field of a frame, for `frame decode` (values as JSON-friendly text)."""
    from .catalogue import format_value
    from .v1997 import NAMES_1997, lookup_1997, version_of

    c = frame.control
    version = version_of(frame)
    out: dict[str, object] = {
        "protocol": version,
        "address": frame.address,
        "control": {
            "byte": f"{c.byte:02X}",
            "direction": "slave->master" if c.reply else "master->slave",
            "abnormal": c.abnormal,
            "follow_up": c.follow_up,
            "function": f"{c.function:02X}",
            "function_name": (NAMES_1997 if version == "DL/T 645-1997" else
                              FUNCTION_NAMES).get(c.function, "unknown"),  # type: ignore[attr-defined]
        },
        "length": len(frame.data),
        "data": frame.data.hex(" ").upper(),
    }
    if frame.address == BROADCAST:
        out["address_kind"] = "broadcast"
    elif "A" in frame.address:
        out["address_kind"] = "wildcard"
    if version == "DL/T 645-1997":
        if c.abnormal:
            from .v1997 import ERROR_BITS_1997

            word = frame.data[0] if frame.data else 0
            out["errors"] = [n for b, n in ERROR_BITS_1997.items() if word & (1 << b)]
            return out
        if c.function in (0x01, 0x02, 0x03) and len(frame.data) >= 2:
            di = int.from_bytes(frame.data[:2], "little")
            out["di"] = f"{di:04X}"
            try:
                item = lookup_1997(di)
            except KeyError:
                return out
            out["name"] = item.name
            if c.reply:
                raw = frame.data[2:]
                if len(raw) != item.size:
                    out["raw"] = raw.hex(" ").upper()
                    out["warnings"] = [length_warning(item, raw)]
                else:
                    out["value"] = format_value(decode_value(item, raw))
                out["unit"] = item.unit
        return out
    if c.abnormal:
        out["errors"] = abnormal_errors(frame)
        out["error_word"] = f"{frame.data[0]:02X}" if frame.data else None
        return out
    if c.function in (Function.READ, Function.READ_FOLLOW_UP, Function.WRITE) and len(
        frame.data
    ) >= 4:
        di = int.from_bytes(frame.data[:4], "little")
        out["di"] = f"{di:08X}"
        try:
            item = lookup(di)
        except KeyError:
            item = None
        if item is not None:
            out["name"] = item.name
            if c.reply and c.function != Function.WRITE:
                data = read_reply(frame)
                if data.warnings:
                    out["raw"] = data.raw.hex(" ").upper()
                    out["warnings"] = data.warnings
                else:
                    out["value"] = format_value(data.value)
                out["unit"] = item.unit
    elif c.function == Function.READ_ADDRESS and c.reply and len(frame.data) == 6:
        out["value"] = frame.data[::-1].hex().upper()
    elif c.function == Function.RELAY and not c.reply and len(frame.data) >= 10:
        try:
            out["relay_action"] = RelayAction(frame.data[8]).name.lower()
        except ValueError:
            out["relay_action"] = f"unknown {frame.data[8]:02X}"
        out["valid_until"] = frame.data[10:16][::-1].hex().upper()
    elif c.function == Function.BROADCAST_TIME and len(frame.data) == 6:
        out["time"] = frame.data[::-1].hex().upper()
    return out
