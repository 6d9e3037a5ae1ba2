"""The hand-written fast codec agrees with the `construct` reference on every input.

Valid frames must decode to equal `Frame`s and encode to equal bytes; corrupted or random
bytes must either decode equally or fail with the same `FrameError` (same fault, same text),
so the fast path never changes which fault a technician is told about.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.dlt645.frame import (
    Control,
    Frame,
    decode,
    decode_reference,
    encode,
    encode_reference,
    find_frame,
)
from protocols.dlt645.messages import Function
from protocols.errors import FrameError

FAST = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

pairs = st.one_of(st.integers(0, 99).map(lambda n: f"{n:02d}"), st.just("AA"))
addresses = st.lists(pairs, min_size=6, max_size=6).map("".join)
controls = st.builds(Control, st.integers(0, 31), st.booleans(), st.booleans(), st.booleans())
frames = st.builds(Frame, addresses, controls, st.binary(max_size=255))


def outcome(fn, raw: bytes) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    try:
        return "frame", fn(raw)
    except FrameError as exc:
        return exc.fault, str(exc)


@FAST
@given(frames, st.booleans())
def test_valid_frames_agree(frame: Frame, preamble: bool) -> None:
    wire = encode(frame, preamble)
    assert wire == encode_reference(frame, preamble)
    assert decode(wire) == decode_reference(wire) == frame


@FAST
@given(frames, st.data())
def test_corrupted_frames_fail_alike(frame: Frame, data: st.DataObject) -> None:
    wire = bytearray(encode(frame, data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "add", "drop"]))
        where = data.draw(st.integers(0, max(len(wire) - 1, 0)))
        if kind == "flip" and wire:
            wire[where] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and wire:
            wire[where] = data.draw(st.sampled_from([0x68, 0x16, 0xFE, 0xAA, 0x99, 0x00]))
        elif kind == "cut":
            del wire[where:]
        elif kind == "add":
            wire.insert(where, data.draw(st.integers(0, 255)))
        elif kind == "drop" and wire:
            del wire[where]
    raw = bytes(wire)
    assert outcome(decode, raw) == outcome(decode_reference, raw)


@FAST
@given(st.binary(max_size=40))
def test_random_bytes_fail_alike(raw: bytes) -> None:
    assert outcome(decode, raw) == outcome(decode_reference, raw)


@pytest.mark.parametrize("wire,fault", [
    ("68 01 00 00 00 00 00 68 91 00 63 16", "checksum"),  # valid would be 62
    ("68 01 00 00 00 00 00 68 91 00 62 17", "end byte"),
    ("68 01 00 00 00 00 00 68 91 01 62 16", "length"),
    ("69 01 00 00 00 00 00 68 91 00 62 16", "start byte"),
    ("68 01 00 00 00 00 00 69 91 00 62 16", "start byte"),
    ("68 0B 00 00 00 00 00 68 91 00 6C 16", "BCD"),
    ("FE FE", "length"),
])
def test_faults_are_named_as_before(wire: str, fault: str) -> None:
    assert decode(bytes.fromhex("68 01 00 00 00 00 00 68 91 00 62 16")).address == "000000000001"
    with pytest.raises(FrameError) as fast:
        decode(bytes.fromhex(wire))
    with pytest.raises(FrameError) as reference:
        decode_reference(bytes.fromhex(wire))
    assert fast.value.fault == reference.value.fault == fault
    assert str(fast.value) == str(reference.value)


def test_function_enums_and_unusual_values_take_the_same_bytes() -> None:
    frame = Frame("1", Control(Function.READ), b"\x00\x00\x01\x00")
    assert encode(frame) == encode_reference(frame)
    for bad in (Frame("12345", Control(0x11), bytes(256)), Frame("x", Control(0x11))):
        with pytest.raises(FrameError) as fast:
            encode(bad)
        with pytest.raises(FrameError) as reference:
            encode_reference(bad)
        assert str(fast.value) == str(reference.value)


@FAST
@given(st.binary(max_size=20), frames, st.binary(max_size=20))
def test_find_frame_still_finds_frames_in_noise(before: bytes, frame: Frame,
                                                after: bytes) -> None:
    wire = encode(frame)
    found, _consumed = find_frame(before.replace(b"\x68", b"\x00") + wire + after)
    assert found == frame
