"""DL/T 645 link-layer frame: pure data plus a `construct` codec.

Wire layout (both 2007 and 1997)::

    [FE..]  68  A0..A5  68  C  L  DATA(+0x33)  CS  16

`A0` is the lowest BCD byte, so the nameplate address `123456789012` goes on the wire as
`12 90 78 56 34 12`; this module always speaks nameplate order.  The control byte packs the
direction (D7), the slave-abnormal flag (D6), the follow-up flag (D5) and the function (D4..D0).
The checksum is the sum modulo 256 of every byte from the first `68` up to the data.

`decode` checks the faults in the order a technician would look for them and raises `FrameError`
naming the first one found (start byte, length, checksum, end byte, BCD); `find_frame` is the
stream version used by the transport: it skips line noise and returns the first valid frame.

`FRAME` (construct) is the definition of record, used by `encode_reference`/`decode_reference`.
`encode`/`decode` are a hand-written fast path for valid frames that falls back to the
reference functions whenever it sees anything unusual, so faults are named in one place.
`construct` (and the compiled `FRAME`) load on the first use of the reference path: a daemon
that only ever sees valid frames never loads it (about 1 MB of a gateway's memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from protocols.errors import FrameError

START = 0x68
END = 0x16
PREAMBLE = b"\xfe\xfe\xfe\xfe"
MIN_FRAME = 12
BROADCAST = "999999999999"
WILDCARD = "AAAAAAAAAAAA"
OFFSET = 0x33
_ADD_OFFSET = bytes((b + OFFSET) & 0xFF for b in range(256))
_REMOVE_OFFSET = bytes((b - OFFSET) & 0xFF for b in range(256))


@cache
def _frame_definition() -> Any:
    """The `construct` definition of a frame (compiled once, on first use)."""
    from construct import BitsInteger, BitStruct, Bytes, Const, Flag, Int8ul, Struct, this

    control = BitStruct(
        "reply" / Flag,
        "abnormal" / Flag,
        "follow_up" / Flag,
        "function" / BitsInteger(5),
    )
    return Struct(
        "start" / Const(bytes([START])),
        "address" / Bytes(6),
        "start2" / Const(bytes([START])),
        "control" / control,
        "length" / Int8ul,
        "data" / Bytes(this.length),
        "checksum" / Int8ul,
        "end" / Const(bytes([END])),
    ).compile()


def __getattr__(name: str) -> Any:
    if name == "FRAME":  # the definition of record, built when first asked for
        return _frame_definition()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class Control:
    """The control byte, split into its meaning."""

    function: int
    reply: bool = False
    abnormal: bool = False
    follow_up: bool = False

    @property
    def byte(self) -> int:
        return (
            (0x80 if self.reply else 0)
            | (0x40 if self.abnormal else 0)
            | (0x20 if self.follow_up else 0)
            | (self.function & 0x1F)
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One DL/T 645 frame; `data` is the application data with the 0x33 offset removed."""

    address: str
    control: Control
    data: bytes = b""

    def encode(self, preamble: bool = True) -> bytes:
        """The bytes on the wire, with the four-byte `FE` wake-up preamble unless told not to."""
        return encode(self, preamble)


def address_to_wire(address: str) -> bytes:
    """Nameplate address (12 digits, `A` allowed as wildcard nibble) to the 6 wire bytes."""
    text = address.strip().upper()
    if len(text) < 12 and text.isdigit():
        text = text.rjust(12, "0")
    if len(text) != 12 or any(ch not in "0123456789A" for ch in text):
        raise FrameError("address", f"{address!r} is not 12 BCD digits (A for wildcard)")
    return bytes.fromhex(text)[::-1]


def address_from_wire(raw: bytes) -> str:
    """6 wire bytes to the nameplate address; a non-BCD nibble other than wildcard `A` fails."""
    text = raw[::-1].hex().upper()
    for index in range(0, 12, 2):
        pair = text[index : index + 2]
        if pair != "AA" and not pair.isdigit():
            raise FrameError("BCD", f"address byte {pair} is neither BCD nor the AA wildcard")
    return text


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def encode_reference(frame: Frame, preamble: bool = True) -> bytes:
    """Build the wire bytes through the `construct` definition (`FRAME`): the reference."""
    if len(frame.data) > 255:
        raise FrameError("length", f"data of {len(frame.data)} bytes exceeds 255")
    wire_data = bytes(frame.data).translate(_ADD_OFFSET)
    c = frame.control
    body = _frame_definition().build(
        {
            "address": address_to_wire(frame.address),
            "control": {
                "reply": c.reply,
                "abnormal": c.abnormal,
                "follow_up": c.follow_up,
                "function": c.function,
            },
            "length": len(wire_data),
            "data": wire_data,
            "checksum": 0,
        }
    )
    body = body[:-2] + bytes([checksum(body[:-2]), END])
    return (PREAMBLE if preamble else b"") + body


def decode_reference(raw: bytes) -> Frame:
    """Decode one frame through the `construct` definition, naming the first fault found."""
    start = 0
    while start < len(raw) and raw[start] == 0xFE:
        start += 1
    body = bytes(raw[start:])
    if not body:
        raise FrameError("length", "no bytes after the FE preamble")
    if body[0] != START:
        raise FrameError("start byte", f"expected 68 at offset {start}, found {body[0]:02X}")
    if len(body) < MIN_FRAME:
        raise FrameError("length", f"{len(body)} bytes is shorter than the 12-byte minimum")
    if body[7] != START:
        raise FrameError("start byte", f"expected 68 at offset {start + 7}, found {body[7]:02X}")
    expected = MIN_FRAME + body[9]
    if len(body) != expected:
        raise FrameError(
            "length",
            f"L={body[9]} requires {expected} bytes from the first 68, found {len(body)}",
        )
    wanted = checksum(body[:-2])
    if body[-2] != wanted:
        raise FrameError("checksum", f"frame says {body[-2]:02X}, bytes sum to {wanted:02X}")
    if body[-1] != END:
        raise FrameError("end byte", f"expected 16, found {body[-1]:02X}")
    parsed = _frame_definition().parse(body)
    c = parsed.control
    return Frame(
        address=address_from_wire(parsed.address),
        control=Control(
            function=c.function, reply=c.reply, abnormal=c.abnormal, follow_up=c.follow_up
        ),
        data=parsed.data.translate(_REMOVE_OFFSET),
    )


# -- the fast path ------------------------------------------------------------------------
# `encode` and `decode` below are hand-written for speed (the agent decodes every byte the
# bus delivers).  They handle valid frames only and hand anything else to the reference
# functions above, so every fault is still found and named by the `construct` path; the
# property tests check both paths agree on random valid and corrupted frames.

_CONTROLS = tuple(
    Control(function=b & 0x1F, reply=bool(b & 0x80), abnormal=bool(b & 0x40),
            follow_up=bool(b & 0x20))
    for b in range(256)
)
_ADDRESS_CACHE_MAX = 4096
_wire_by_address: dict[str, bytes] = {}
_address_by_wire: dict[bytes, str] = {}


def _wire_address(address: str) -> bytes:
    wire = _wire_by_address.get(address)
    if wire is None:
        wire = address_to_wire(address)
        if len(_wire_by_address) < _ADDRESS_CACHE_MAX:
            _wire_by_address[address] = wire
    return wire


def _text_address(wire: bytes) -> str:
    text = _address_by_wire.get(wire)
    if text is None:
        text = address_from_wire(wire)
        if len(_address_by_wire) < _ADDRESS_CACHE_MAX:
            _address_by_wire[wire] = text
    return text


def encode(frame: Frame, preamble: bool = True) -> bytes:
    """Build the wire bytes for a frame (same bytes and errors as `encode_reference`)."""
    data = frame.data
    c = frame.control
    function = c.function
    if len(data) > 255 or not isinstance(function, int) or not 0 <= function < 32:
        return encode_reference(frame, preamble)
    control = (
        (0x80 if c.reply else 0) | (0x40 if c.abnormal else 0) | (0x20 if c.follow_up else 0)
        | function
    )
    body = (
        b"\x68" + _wire_address(frame.address) + b"\x68" + bytes((control, len(data)))
        + bytes(data).translate(_ADD_OFFSET)
    )
    return (PREAMBLE if preamble else b"") + body + bytes((sum(body) & 0xFF, END))


def decode(raw: bytes) -> Frame:
    """Decode exactly one frame (optional `FE` preamble); raise `FrameError` naming the fault."""
    body = bytes(raw).lstrip(b"\xfe")
    size = len(body)
    if (
        size >= MIN_FRAME
        and body[0] == START
        and body[7] == START
        and size == MIN_FRAME + body[9]
        and body[-1] == END
        and body[-2] == sum(body[:-2]) & 0xFF
    ):
        address = _address_by_wire.get(body[1:7])
        if address is not None:
            return Frame(address, _CONTROLS[body[8]], body[10:-2].translate(_REMOVE_OFFSET))
        try:
            address = _text_address(body[1:7])
        except FrameError:
            pass  # not BCD: the reference path names it
        else:
            return Frame(address, _CONTROLS[body[8]], body[10:-2].translate(_REMOVE_OFFSET))
    return decode_reference(raw)


def find_frame(buffer: bytes | bytearray) -> tuple[Frame | None, int]:
    """Look for the first valid frame in a byte stream (line noise, collisions, preambles).

    Returns `(frame, consumed)`: with a frame, `consumed` is the index just past it; without
    one, the bytes before `consumed` are certainly not part of a frame and may be dropped, and
    the rest may still become a frame when more bytes arrive.
    """
    search = 0
    size = len(buffer)
    pending = -1  # first position that may still grow into a frame
    while True:
        pos = buffer.find(START, search)
        if pos < 0:
            return None, size if pending < 0 else pending
        if size < pos + 10:
            return None, pos if pending < 0 else pending
        if buffer[pos + 7] != START:
            search = pos + 1
            continue
        end = pos + MIN_FRAME + buffer[pos + 9]
        if size < end:
            # A stray 68 with a large L must not hide a complete frame behind it.
            pending = pos if pending < 0 else pending
            search = pos + 1
            continue
        if buffer[end - 1] == END and buffer[end - 2] == checksum(buffer[pos : end - 2]):
            try:
                return decode(bytes(buffer[pos:end])), end
            except FrameError:
                pass
        search = pos + 1
