"""Property tests: every frame type round-trips; random and mutated streams only ever raise
the codec's own error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import FrameError
from protocols.dlt645 import messages
from protocols.dlt645.frame import Control, Frame, decode, encode, find_frame

addresses = st.text(alphabet="0123456789", min_size=12, max_size=12)
functions = st.sampled_from([int(f) for f in messages.Function])
frames = st.builds(
    Frame,
    address=addresses,
    control=st.builds(Control, function=functions, reply=st.booleans(), abnormal=st.booleans(),
                      follow_up=st.booleans()),
    data=st.binary(max_size=200),
)


@settings(max_examples=300, deadline=None)
@given(frames, st.booleans())
def test_round_trip(frame: Frame, preamble: bool) -> None:
    assert decode(encode(frame, preamble)) == frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_frame_error(raw: bytes) -> None:
    try:
        decode(raw)
    except FrameError:
        pass
    find_frame(bytearray(raw))


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_mutated_frames_raise_only_frame_error(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(encode(frame, preamble=False))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode(bytes(raw))
    except FrameError:
        return
    # A mutation that still decodes must give a frame that encodes back to the same bytes.
    assert encode(decoded, preamble=False) == bytes(raw)


@settings(max_examples=200, deadline=None)
@given(frames, st.binary(max_size=40), st.binary(max_size=40))
def test_frame_found_between_garbage(frame: Frame, before: bytes, after: bytes) -> None:
    stream = bytearray(before.replace(b"\x68", b"\x00") + encode(frame) + after)
    found, _consumed = find_frame(stream)
    assert found == frame
